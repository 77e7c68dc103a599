"""RFC 5322 dates in Postfix's form.

NAME
    fulmar.maildate -- `mail_date()` as Postfix's mail_date.c (day of month space-padded, "%e")

SYNOPSIS
    mail_date(t) -> "Sun, 29 Nov 2026 06:14:14 +0000 (UTC)"

DESCRIPTION
    Local time with its numeric offset and, in parentheses, the zone
    abbreviation, exactly as Postfix writes Date: and Received: stamps.
    The last second formatted is kept: cleanup asks for the same second
    for every message's Received: header.
"""

from __future__ import annotations

import time

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


_last: tuple[int, str] = (-1, "")     # the last second formatted (most calls)


def mail_date(t: float | None = None) -> str:
    global _last
    sec = int(time.time() if t is None else t)
    last = _last
    if last[0] == sec:
        return last[1]
    text = _format(sec)
    _last = (sec, text)
    return text


def _format(sec: int) -> str:
    lt = time.localtime(sec)
    off = lt.tm_gmtoff or 0
    sign = "+" if off >= 0 else "-"
    off = abs(off) // 60
    return "%s, %2d %s %d %02d:%02d:%02d %s%02d%02d (%s)" % (
        _DAYS[lt.tm_wday], lt.tm_mday, _MONTHS[lt.tm_mon - 1], lt.tm_year,
        lt.tm_hour, lt.tm_min, lt.tm_sec, sign, off // 60, off % 60, lt.tm_zone or "UTC")
