"""qshape -- print the domain and age distribution of the mail queue (Postfix qshape(1)).

SYNOPSIS
    qshape [-s] [-p] [-m min_subdomains] [-l] [-b bucket_count] [-t bucket_time]
           [-w terminal_width] [-c config_directory] [queue_name ...]

DESCRIPTION
    As Postfix's qshape.pl: for each recipient domain (sender domain with
    -s) the number of recipients per message age bucket, most loaded
    domains first. Default queues: incoming and active. Buckets are
    [0, t), [t, 2t), [2t, 4t), ... minutes (t = bucket_time, 5), or
    linear with -l; the last one is open-ended (`1280+` with the defaults);
    column T is the total. -p adds parent domains (`.example.com`) that have
    at least min_subdomains (5) subdomains shown. Interactive batch mode
    (-N/-n) is not provided: the output is always the final summary.

    Queue files are read with fulmar.queue (envelopes only), one at a time.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections import defaultdict

from fulmar.cli import _common as C
from fulmar.version import require_python

PROG = "qshape"
OPTSPEC = "lhc:psw:b:t:m:n:N:"
DEFAULT_QUEUES = ("incoming", "active")
BUCKETS = 10            # qshape $bnum
WIDTH = 80              # $width
DOMAIN_MIN_WIDTH = 18   # $dwidth
TICK = 5                # minutes per first bucket
MIN_SUB = 5


def usage() -> str:
    return ("Usage: qshape [ -s ] [ -p ] [ -m <min_subdomains> ] [ -l ]\n"
            "\t[ -b <bucket_count> ] [ -t <bucket_time> ] [ -w <terminal_width> ]\n"
            "\t[ -N <batch_msg_count> ] [ -n <batch_top_domains> ]\n"
            "\t[ -c <config_directory> ] [ <queue_name> ... ]\n")


def bucket(age_seconds: float, tick: int, bnum: int, linear: bool) -> int:
    m = age_seconds / (60 * tick)
    if m < 1:
        return 1
    b = int(m + 1) if linear else 2 + int(math.log(m) / math.log(2))
    return b if b < bnum else bnum


def domain_of(address: str) -> str:
    a = address.lower() or "mailer-daemon"
    if a == "mailer-daemon":
        a = "MAILER-DAEMON"
    a = re.sub(r".*@", "", a)
    a = re.sub(r"\.\.", ".", a)
    m = re.match(r"^\.?(.+?)\.?$", a)
    return m.group(1) if m else a


class Shape:
    def __init__(self, bnum=BUCKETS, tick=TICK, linear=False, parents=False,
                 senders=False, min_sub=MIN_SUB, width=WIDTH) -> None:
        self.bnum, self.tick, self.linear = bnum, tick, linear
        self.parents, self.senders, self.min_sub, self.width = parents, senders, min_sub, width
        self.q: dict[str, list[int]] = defaultdict(lambda: [0] * (bnum + 1))
        self.sub: dict[str, int] = defaultdict(int)

    def add(self, arrival: float, sender: str, recipients: list[str], now: float) -> None:
        b = bucket(now - arrival, self.tick, self.bnum, self.linear)
        for addr in ([sender] if self.senders else recipients):
            total = self.q["TOTAL"]
            total[0] += 1
            total[b] += 1
            d = domain_of(addr)
            new = False
            while True:
                old = self.q[d][0] + 1 > 1
                self.q[d][0] += 1
                self.q[d][b] += 1
                if new:
                    self.sub[d] += 1
                new = not old
                if not self.parents:
                    break
                m = re.match(r"^(?:\.)?[^.]+\.(.*\.)", d)
                if not m:
                    break
                d = "." + d[m.start(1):]

    def render(self) -> str:
        heads: list[str] = []
        widths: list[int] = []
        dw = self.width
        t: int | str = 0
        total = self.q["TOTAL"]
        for i in range(self.bnum + 1):
            l = len(str(total[i]))
            h = "T" if i == 0 else str(t)
            if len(h) >= l:
                l = len(h)
            l = l + 1 if l > 2 else 3
            heads.append(h)
            widths.append(l)
            dw -= l
            if i + 1 < self.bnum:
                t = t + (t if (t and not self.linear) else self.tick)
            else:
                t = "%s+" % t
        dw = max(dw, DOMAIN_MIN_WIDTH)

        def line(d: str, counts) -> str:
            if len(d) > dw:
                d = (".+" + d[len(d) - dw + 2:]) if d.startswith(".") else "+" + d[len(d) - dw + 1:]
            else:
                d = " " * (dw - len(d)) + d
            return d + "".join("%*s" % (w, c) for w, c in zip(widths, counts)) + "\n"

        out = [line("", heads)]
        keys = sorted(self.q, key=lambda k: (-self.q[k][0], len(k), k))
        for d in keys:
            if d.startswith(".") and self.sub[d] < self.min_sub:
                continue
            out.append(line(d, self.q[d]))
        return "".join(out)


def run(argv: list[str], out=None) -> int:
    out = out or sys.stdout
    try:
        opts, rest = C.getopt(argv, OPTSPEC)
    except C.GetoptError as exc:
        sys.stderr.write("%s: %s\n%s" % (PROG, exc, usage()))
        return 255
    o = dict((k[1], v) for k, v in opts)
    if "h" in o:
        sys.stderr.write(usage())
        return 255

    def num(key, default, minimum=1):
        try:
            v = int(o[key]) if key in o else default
        except ValueError:
            return default
        return v if v >= minimum else default

    shape = Shape(bnum=num("b", BUCKETS), tick=num("t", TICK), linear="l" in o,
                  parents="p" in o, senders="s" in o, min_sub=num("m", MIN_SUB),
                  width=max(num("w", WIDTH), WIDTH))
    cfg = C.load_config(PROG, o.get("c"))
    queue_dir = cfg.get("queue_directory")
    from fulmar.queue import qfile
    now = time.time()
    for q in rest or DEFAULT_QUEUES:
        qname = os.path.basename(q.rstrip("/")) if q.startswith("/") else q
        try:
            files = list(qfile.scan(queue_dir, qname))
        except (FileNotFoundError, ValueError) as exc:
            sys.stderr.write("%s: %s: %s\n" % (PROG, q, exc))
            continue
        for _qid, path in files:
            try:
                env = qfile.read_envelope(path)
            except (OSError, qfile.CorruptQueueFile):
                continue
            shape.add(env.arrival_time, env.sender, [r.address for r in env.pending], now)
    out.write(shape.render())
    return 0


def main(argv: list[str] | None = None) -> int:
    require_python()
    return C.run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
