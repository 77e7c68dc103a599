"""The delivery log line every delivery agent writes (Postfix log_adhoc.c).

NAME
    fulmar.smtp.delivery_log - format "QID: to=<...>, relay=..., status=..."

SYNOPSIS
    from fulmar.smtp.delivery_log import DeliveryTimes, format_delivery, format_tv
    times = DeliveryTimes(arrival=t0, active=t1, handoff=t2, conn_setup_done=t3)
    line = format_delivery("4Xk2Lm1Qz7z9vRs", recipient="a@b", orig_recipient="",
                           relay="mx.example.org[192.0.2.7]:25", times=times,
                           dsn="2.0.0", status="sent", reason="250 2.0.0 Ok",
                           conn_use=0, now=t4)
    log.info("%s", line)
    format_tv(0.31) -> "0.31"

DESCRIPTION
    The field order is Postfix's and is what pflogsumm and other log tools
    parse:  ``QID: to=<a>, [orig_to=<o>, ]relay=R, [conn_use=N, ]delay=D,
    delays=a/b/c/d, dsn=X.Y.Z, status=S (reason)``.

    orig_to is shown only when it is not empty and differs from the
    recipient (case-insensitively).  conn_use is shown when a connection
    is used for the second time or later (pass the use count, 1 for a
    fresh connection).

    The delays, computed as log_adhoc.c does:
        delay = done - arrival
        a = active - arrival            (before the active queue)
        b = handoff - active            (in the queue manager)
        c = conn_setup_done - handoff   (connection setup, DNS, HELO, TLS)
        d = done - conn_setup_done      (transmission)
    A missing time stamp (None) moves its share to the next stage as in
    Postfix: no conn_setup_done (no network client) gives c = 0 and
    d = done - handoff; no handoff gives b = done - active; no active gives
    a = done - arrival.  Negative differences (clock steps) are shown as 0.

    Numbers are formatted by format_tv(), a port of Postfix's format_tv.c
    with 2 significant digits and at most $delay_logging_resolution_limit
    (default 2) digits after the decimal point: 0.31, 1.2, 30, 0.02, 0.
"""

from __future__ import annotations

from dataclasses import dataclass

_MILLION = 1_000_000
_POW10 = (1, 10, 100, 1000, 10000, 100000, 1000000)
#: log_adhoc.c SIG_DIGS: significant digits of small delays.
SIG_DIGS = 2


@dataclass(slots=True)
class DeliveryTimes:
    """Time stamps (epoch seconds, float) of one message's delivery stages."""

    arrival: float
    active: float | None = None
    handoff: float | None = None
    conn_setup_done: float | None = None


def format_tv(seconds: float, sig_digs: int = SIG_DIGS, max_digs: int = 2) -> str:
    """Format a time difference as Postfix's format_tv() does."""
    if seconds <= 0:
        return "0"
    total = int(round(seconds * _MILLION))
    sec, usec = divmod(total, _MILLION)
    if not 0 <= max_digs <= 6 or not 1 <= sig_digs <= 6:
        raise ValueError("format_tv: bad digit counts")
    ures = _MILLION // _POW10[max_digs]
    wid = _POW10[sig_digs]
    # Adjust the resolution to suppress irrelevant digits.
    if ures < _MILLION:
        if sec > 0:
            n = 1
            while sec >= n and n <= wid // 10:
                n *= 10
            ures = (_MILLION // wid) * n
        else:
            while usec >= wid * ures:
                ures *= 10
    # Round up; leave trash below the resolution (it is not printed).
    if ures > 1:
        usec += ures // 2
        if usec >= _MILLION:
            sec += 1
            usec -= _MILLION
    out = [str(sec)]
    if usec >= ures:
        out.append(".")
        rem = usec
        n = _MILLION // 10
        while rem >= ures and n > 0:
            out.append("0123456789"[rem // n])
            rem %= n
            n //= 10
    return "".join(out)


def _delta(later: float, earlier: float) -> float:
    d = later - earlier
    return d if d > 0 else 0.0


def compute_delays(times: DeliveryTimes, now: float) -> tuple[float, float, float, float, float]:
    """(delay, a, b, c, d) as log_adhoc.c computes them."""
    delay = _delta(now, times.arrival)
    a = b = c = d = 0.0
    if times.active is not None:
        a = _delta(times.active, times.arrival)
        if times.handoff is not None:
            b = _delta(times.handoff, times.active)
            if times.conn_setup_done is not None:
                c = _delta(times.conn_setup_done, times.handoff)
                d = _delta(now, times.conn_setup_done)
            else:
                d = _delta(now, times.handoff)
        else:
            b = _delta(now, times.active)
    else:
        a = _delta(now, times.arrival)
    return delay, a, b, c, d


def format_delivery(
    queue_id: str,
    *,
    recipient: str,
    orig_recipient: str = "",
    relay: str,
    times: DeliveryTimes,
    dsn: str,
    status: str,
    reason: str,
    now: float,
    conn_use: int = 0,
    resolution: int = 2,
) -> str:
    """One delivery line, without the syslog prefix."""
    parts = [f"{queue_id}: to=<{recipient}>"]
    if orig_recipient and orig_recipient.lower() != recipient.lower():
        parts.append(f", orig_to=<{orig_recipient}>")
    parts.append(f", relay={relay}")
    if conn_use > 1:
        parts.append(f", conn_use={conn_use}")
    delay, a, b, c, d = compute_delays(times, now)
    fmt = format_tv
    parts.append(
        f", delay={fmt(delay, SIG_DIGS, resolution)}"
        f", delays={fmt(a, SIG_DIGS, resolution)}/{fmt(b, SIG_DIGS, resolution)}"
        f"/{fmt(c, SIG_DIGS, resolution)}/{fmt(d, SIG_DIGS, resolution)}"
    )
    parts.append(f", dsn={dsn}, status={status} ({reason})")
    return "".join(parts)
