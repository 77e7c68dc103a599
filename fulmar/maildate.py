"""RFC 5322 dates in Postfix's form.

NAME
    fulmar.maildate -- `mail_date()` as Postfix's mail_date.c (day of month space-padded, "%e")

SYNOPSIS
    mail_date(t) -> "Sun, 29 Nov 2026 06:14:14 +0000 (UTC)"

DESCRIPTION
    Local time with its numeric offset and, in parentheses, the zone
    abbreviation, exactly as Postfix writes Date: and Received: stamps.
"""

from __future__ import annotations

import time

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def mail_date(t: float | None = None) -> str:
    lt = time.localtime(t)
    off = lt.tm_gmtoff or 0
    sign = "+" if off >= 0 else "-"
    off = abs(off) // 60
    return "%s, %2d %s %d %02d:%02d:%02d %s%02d%02d (%s)" % (
        _DAYS[lt.tm_wday], lt.tm_mday, _MONTHS[lt.tm_mon - 1], lt.tm_year,
        lt.tm_hour, lt.tm_min, lt.tm_sec, sign, off // 60, off % 60, lt.tm_zone or "UTC")
