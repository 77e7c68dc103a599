"""Queue IDs in Postfix's long form, and the queue hash directory of an ID.

A long queue ID (Postfix ``enable_long_queue_ids = yes``, mail_queue.h
``MQID_LG_*``) is the concatenation of

* the time in seconds, base 52, at least 6 characters (zero-padded, so that
  IDs of the same epoch width sort by time: 6 characters last until the year
  2594),
* the microseconds, base 52, exactly 4 characters,
* the separator ``z``,
* the inode number of the queue file, base 51 (so that it holds no ``z``).

The alphabet is Postfix's "safe" one (safe_ultostr.c): digits, then upper
case and lower case consonants, in ASCII order, so that string order equals
numeric order for digits of equal width::

    0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz

An ID is unique without locks: the inode belongs to exactly one open file at
a time, and the time is read while the file holds that inode, so two files
that share an inode in turn get different times (unless the clock steps back
into the same microsecond, which the committer in qfile.py catches).

Interface::

    new_queue_id(inode, t=None) -> str     # t: float seconds, default now
    from_parts(sec, usec, inode) -> str     # the same from integers
    parse(qid) -> (seconds, microseconds, inode)    # ValueError if not long form
    is_queue_id(s) -> bool                  # long or short Postfix form
    name_ok(s) -> bool                      # Postfix mail_queue_id_ok(): safe file name
    hash_path(qid, depth) -> str            # "A" or "A/B"...: the hashed sub-directory
    LONG_PATTERN, SHORT_PATTERN             # the regular expressions (fullmatch)

Short IDs (Postfix's default) are 5 upper-case hex digits of microseconds
then the inode in hex; Fulmar never makes them but accepts them from users
and old queues.  ``is_queue_id`` is meant for validating user input: it
rejects anything that could be a path (``/``, ``.``) or an option.
"""

from __future__ import annotations

import time

ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
_VALUE = {ch: i for i, ch in enumerate(ALPHABET)}

# mail_queue.h
LG_SEC_BASE = 52          # MQID_LG_SEC_BASE
LG_SEC_PAD = 6            # MQID_LG_SEC_PAD: minimum width
LG_USEC_BASE = 52         # MQID_LG_USEC_BASE
LG_USEC_PAD = 4           # MQID_LG_USEC_PAD: exact width
LG_TIME_PAD = LG_SEC_PAD + LG_USEC_PAD   # MQID_LG_TIME_PAD
LG_INUM_SEP = "z"         # MQID_LG_INUM_SEP
LG_INUM_BASE = 51         # MQID_LG_INUM_BASE
SH_USEC_PAD = 5           # MQID_SH_USEC_PAD: hex microseconds in short IDs

USEC_PER_SEC = 1_000_000
# Postfix mail_queue_id_ok() allows up to VALID_HOSTNAME_LEN characters.
MAX_NAME_LEN = 255
# Long enough for 64-bit times and inodes in either form, short enough that
# a user-supplied string cannot make us do silly work.
MAX_QUEUE_ID_LEN = 64

_SAFE = "0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z"      # the 52 symbols
_SAFE51 = "0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y"    # without 'z'
# Seconds (>= 6) and microseconds (4) are one run of safe characters that may
# itself contain 'z'; the separator is the last 'z' (Postfix uses strrchr).
LONG_PATTERN = (
    rf"(?P<sec>[{_SAFE}]{{{LG_SEC_PAD},}})(?P<usec>[{_SAFE}]{{{LG_USEC_PAD}}})"
    rf"{LG_INUM_SEP}(?P<inum>[{_SAFE51}]+)"
)
SHORT_PATTERN = rf"[0-9A-F]{{{SH_USEC_PAD + 1},}}"
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
# Compiled at first use: sendmail imports this module but matches no
# queue ID, and importing re costs it ~7 ms a message (docs/performance.md,
# item 51).
_long_re = _short_re = None


def _compile() -> None:
    global _long_re, _short_re
    import re
    _long_re, _short_re = re.compile(LONG_PATTERN), re.compile(SHORT_PATTERN)


def _encode(value: int, base: int, pad: int) -> str:
    if value < 0:
        raise ValueError("negative value in queue ID")
    digits = []
    while value:
        value, rem = divmod(value, base)
        digits.append(ALPHABET[rem])
    while len(digits) < pad:
        digits.append("0")
    return "".join(reversed(digits))


def _decode(text: str, base: int) -> int:
    value = 0
    for ch in text:
        digit = _VALUE.get(ch)
        if digit is None or digit >= base:
            raise ValueError(f"bad queue ID digit {ch!r}")
        value = value * base + digit
    return value


def new_queue_id(inode: int, t: float | None = None) -> str:
    """Return the long queue ID for a file with this inode, made at time t.

    Without t the current time is read at nanosecond resolution (a float
    would lose microseconds around the current epoch).
    """
    if t is None:
        sec, usec = divmod(time.time_ns() // 1000, USEC_PER_SEC)
    else:
        sec, usec = split_time(t)
    return from_parts(sec, usec, inode)


def split_time(t: float) -> tuple[int, int]:
    """(seconds, microseconds) of a float time, rounded to the microsecond."""
    sec = int(t)
    usec = int(round((t - sec) * USEC_PER_SEC))
    if usec >= USEC_PER_SEC:
        sec, usec = sec + 1, usec - USEC_PER_SEC
    return sec, usec


def from_parts(sec: int, usec: int, inode: int) -> str:
    """The long queue ID of (seconds, microseconds, inode)."""
    if not 0 <= usec < USEC_PER_SEC:
        raise ValueError("microseconds out of range")
    return (
        _encode(sec, LG_SEC_BASE, LG_SEC_PAD)
        + _encode(usec, LG_USEC_BASE, LG_USEC_PAD)
        + LG_INUM_SEP
        + _encode(inode, LG_INUM_BASE, 1)
    )


def parse(qid: str) -> tuple[int, int, int]:
    """Split a long queue ID into (seconds, microseconds, inode).

    Raises ValueError for anything else, including short IDs and
    microsecond fields of 1,000,000 or more.
    """
    if len(qid) > MAX_QUEUE_ID_LEN:
        raise ValueError("queue ID too long")
    if _long_re is None:
        _compile()
    m = _long_re.fullmatch(qid)
    if m is None:
        raise ValueError(f"not a long queue ID: {qid!r}")
    usec = _decode(m["usec"], LG_USEC_BASE)
    if usec >= USEC_PER_SEC:
        raise ValueError(f"bad microseconds in queue ID: {qid!r}")
    return (
        _decode(m["sec"], LG_SEC_BASE),
        usec,
        _decode(m["inum"], LG_INUM_BASE),
    )


def is_long(qid: str) -> bool:
    """parse() would accept qid.  Its regex admits only digits of each
    field's base, so the microseconds' range is all that is left to
    check (smtpd and qmgr check a queue ID per message: decoding all
    three fields cost ~5 us)."""
    if len(qid) > MAX_QUEUE_ID_LEN:
        return False
    if _long_re is None:
        _compile()
    m = _long_re.fullmatch(qid)
    return m is not None and _decode(m["usec"], LG_USEC_BASE) < USEC_PER_SEC


def is_queue_id(s: str) -> bool:
    """True for a long or short Postfix queue ID (user input validation)."""
    if not isinstance(s, str) or len(s) > MAX_QUEUE_ID_LEN:
        return False
    if _short_re is None:
        _compile()
    return _short_re.fullmatch(s) is not None or is_long(s)


def name_ok(s: str) -> bool:
    """Postfix mail_queue_id_ok(): letters, digits and '_' only.

    Safe as a file name in a queue directory; used where Postfix accepts
    any such name (postcat -q, postsuper -d) and then fails on open.
    """
    return (
        isinstance(s, str)
        and 0 < len(s) <= MAX_NAME_LEN
        and _NAME_CHARS.issuperset(s)
    )


def hash_path(qid: str, depth: int) -> str:
    """The hashed sub-directory of qid, as Postfix mail_queue_dir().

    Long IDs hash on their microseconds written as Postfix's short form does
    (5 upper-case hex digits), short IDs on their own first characters (which
    are the same hex microseconds). One character per level; a missing
    character becomes '_' (dir_forest.c). Returns "" for depth 0.
    """
    key = qid
    sep = qid.rfind(LG_INUM_SEP)
    if sep >= LG_TIME_PAD:
        # MQID_FIND_LG_INUM_SEPARATOR + MQID_LG_GET_HEX_USEC
        try:
            usec = _decode(qid[sep - LG_USEC_PAD:sep], LG_USEC_BASE)
        except ValueError:
            usec = None
        if usec is not None:
            key = "%0*X" % (SH_USEC_PAD, usec)
    parts = [key[i] if i < len(key) else "_" for i in range(depth)]
    return "/".join(parts)


def time_of(qid: str) -> float:
    """The creation time encoded in a long queue ID (seconds, float)."""
    sec, usec, _ = parse(qid)
    return sec + usec / USEC_PER_SEC
