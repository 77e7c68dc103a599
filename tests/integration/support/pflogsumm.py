"""Run Debian's pflogsumm on a maillog and read its grand totals.

    counts = summarize(maillog_path, syslog_name="postfix")
    counts.received, .delivered, .forwarded, .deferred, .deferrals, .bounced,
    .rejected, .reject_warnings, .held, .discarded
    counts.report  (pflogsumm's whole output, for failure messages)

The numbers are read from the "Grand Totals" block, whose lines look like
``    2   received`` / ``    1   deferred  (1  deferrals)`` /
``    1   rejected (33%)``.  A count pflogsumm does not print is 0.

Failure: FileNotFoundError when pflogsumm is not installed (``PFLOGSUMM`` is
None then; callers skip), RuntimeError with its output when it exits
non-zero.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

PFLOGSUMM = shutil.which("pflogsumm") or (
    "/usr/sbin/pflogsumm" if os.path.exists("/usr/sbin/pflogsumm") else None)
TIMEOUT = 60

# pflogsumm label -> our field; the value is the number that starts the line.
_LINES = {
    "received": re.compile(r"^\s*(\d+)\s+received\s*$"),
    "delivered": re.compile(r"^\s*(\d+)\s+delivered\s*$"),
    "forwarded": re.compile(r"^\s*(\d+)\s+forwarded\s*$"),
    "deferred": re.compile(r"^\s*(\d+)\s+deferred\s+\((\d+)\s+deferrals?\)\s*$"),
    "bounced": re.compile(r"^\s*(\d+)\s+bounced\s*$"),
    "rejected": re.compile(r"^\s*(\d+)\s+rejected\s+\(\d+%\)\s*$"),
    "reject_warnings": re.compile(r"^\s*(\d+)\s+reject warnings\s*$"),
    "held": re.compile(r"^\s*(\d+)\s+held\s*$"),
    "discarded": re.compile(r"^\s*(\d+)\s+discarded\s+\(\d+%\)\s*$"),
}


@dataclass
class Counts:
    received: int = 0
    delivered: int = 0
    forwarded: int = 0
    deferred: int = 0
    deferrals: int = 0
    bounced: int = 0
    rejected: int = 0
    reject_warnings: int = 0
    held: int = 0
    discarded: int = 0
    report: str = ""


def parse(report: str) -> Counts:
    c = Counts(report=report)
    for line in report.splitlines():
        for name, rx in _LINES.items():
            m = rx.match(line)
            if m:
                setattr(c, name, int(m.group(1)))
                if name == "deferred":
                    c.deferrals = int(m.group(2))
                break
        if "bytes received" in line:
            break          # end of the message counts; detail sections follow
    return c


def summarize(maillog: str | os.PathLike, syslog_name: str = "postfix") -> Counts:
    if PFLOGSUMM is None:
        raise FileNotFoundError("pflogsumm is not installed (apt-get install pflogsumm)")
    r = subprocess.run([PFLOGSUMM, f"--syslog-name={syslog_name}", "-e", os.fspath(maillog)],
                       capture_output=True, text=True, timeout=TIMEOUT)
    if r.returncode != 0:
        raise RuntimeError(f"pflogsumm exited {r.returncode}: {r.stdout}{r.stderr}")
    return parse(r.stdout)
