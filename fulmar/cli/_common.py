"""Shared plumbing of the queue commands (sendmail, postqueue, postsuper, qshape).

NAME
    fulmar.cli._common -- option scanning, sysexits, config, qmgr requests

SYNOPSIS
    opts, args = getopt(prog, argv, "c:fi:jps:v", usage)   # Postfix getopt(3)
    cfg = load_config(prog, config_dir)                     # fatal on errors
    ok = qmgr_request(cfg, {"request": "flush"})            # True when done
    trigger(path, protocol)                                 # connect and close

DESCRIPTION
    getopt() behaves as glibc's getopt(3) that Postfix's commands use
    (options stop at the first non-option or `--`; `-abc` clusters;
    `-xVALUE` and `-x VALUE`; `x::` takes an attached argument only),
    and reports errors with glibc's texts
    (`prog: invalid option -- 'Z'`, `prog: option requires an argument --
    'd'`) followed by the command's own fatal usage line, as Postfix does.
    fatal(prog, status, text) prints `prog: fatal: text` and exits.
"""

from __future__ import annotations

import os
import pwd
import sys

# sysexits.h
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_OSERR = 71
EX_CANTCREAT = 73
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


# A daemon's hello as trigger() reads it: fulmar.ipc.frames' attribute
# frame (kind "A", 4-byte big-endian length, JSON), without importing it.
HELLO_KIND = ord("A")
HELLO_HEADER = 5
HELLO_MAX = 4096


class Fatal(SystemExit):
    """Raised by fatal(); carries the exit status."""


def run_main(run, argv: list[str] | None, **kw) -> int:
    """A command's main(): run(args) on sys.argv[1:] (or argv), or the
    status of the fatal() that ended it."""
    try:
        return run(sys.argv[1:] if argv is None else argv, **kw)
    except Fatal as exc:
        return exc.code


def fatal(prog: str, status: int, text: str):
    sys.stdout.flush()
    sys.stderr.write("%s: fatal: %s\n" % (prog, text))
    sys.stderr.flush()
    raise Fatal(status)


def warn(prog: str, text: str) -> None:
    sys.stderr.write("%s: warning: %s\n" % (prog, text))


class GetoptError(Exception):
    """str(): glibc's diagnostic without the program name."""


def getopt(argv: list[str], spec: str) -> tuple[list[tuple[str, str]], list[str]]:
    """POSIX getopt(3) ('+' mode): (options, remaining arguments)."""
    takes = {}          # option letter -> 0 none, 1 required, 2 optional ("x::")
    i = 0
    while i < len(spec):
        ch = spec[i]
        n = 0
        while i + 1 + n < len(spec) and spec[i + 1 + n] == ":" and n < 2:
            n += 1
        takes[ch] = n
        i += 1 + n
    opts: list[tuple[str, str]] = []
    k = 0
    while k < len(argv):
        a = argv[k]
        if a == "--":
            return opts, argv[k + 1:]
        if not a.startswith("-") or a == "-":
            break
        j = 1
        while j < len(a):
            ch = a[j]
            if ch not in takes or ch == ":":
                raise GetoptError("invalid option -- '%s'" % ch)
            if takes[ch] == 2:            # GNU optional argument: attached only
                opts.append(("-" + ch, a[j + 1:]))
                break
            if takes[ch]:
                if j + 1 < len(a):
                    opts.append(("-" + ch, a[j + 1:]))
                elif k + 1 < len(argv):
                    k += 1
                    opts.append(("-" + ch, argv[k]))
                else:
                    raise GetoptError("option requires an argument -- '%s'" % ch)
                break
            opts.append(("-" + ch, ""))
            j += 1
        k += 1
    return opts, argv[k:]


def load_config(prog: str, config_dir: str | None):
    from fulmar import config
    from fulmar.queue import layout
    try:
        cfg = config.load(config_dir)
    except config.ConfigError as exc:
        fatal(prog, 1, str(exc))
    except OSError as exc:
        fatal(prog, 1, "open %s: %s" % (config_dir or "main.cf", exc.strerror or exc))
    layout.configure(cfg)
    return cfg


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def user_listed(cfg, param: str, uid: int) -> bool:
    """authorized_*_users: names, static:anyone; root and mail_owner always."""
    if uid == 0:
        return True
    name = user_name(uid)
    if name == cfg.get("mail_owner"):
        return True
    for item in cfg.get(param):
        if item.lower() == "static:anyone" or item == name:
            return True
    return False


def qmgr_request(cfg, attrs: dict) -> bool:
    """Send one request to public/qmgr and wait for its reply; False if down."""
    # asyncio is imported here, not at module level: it costs 20-100 ms of
    # start-up, and sendmail (one process per message) never needs it.
    import asyncio
    from fulmar.ipc import channel

    async def run() -> bool:
        path = os.path.join(cfg.get("queue_directory"), "public", "qmgr")
        timeout = cfg.get("trigger_timeout")
        try:
            ch = await channel.connect(path, protocol="qmgr", timeout=timeout)
        except channel.ChannelError:
            return False
        try:
            req = dict(attrs, id=ch.next_id())
            await ch.send_attr(req)
            reply = await ch.recv(timeout=timeout)
            return reply is not None and reply.attrs.get("status") == "ok"
        except channel.ChannelError:
            return False
        finally:
            await ch.close()

    return asyncio.run(run())


def trigger(path: str, protocol: str, timeout: float) -> bool:
    """Wake a daemon: connect, read its hello, close. False when nobody listens.

    Blocking socket calls, no asyncio, fulmar.ipc.channel or even
    fulmar.ipc.frames: this is on sendmail's path, one process per
    message, where their import time dominated (frames pulls in json, re
    and collections: ~9 ms a call here, docs/performance.md item 51).
    Returns True when the hello is an attribute frame naming `protocol`;
    the wakeup carries no data, so the protocol version is not checked.
    """
    import _socket      # socket.py pulls in selectors & co.: 2 ms per sendmail
    # The hello is frames.encode_attr({"protocol": NAME, "version": N}):
    # compact JSON, so the pair appears with no white space; inside a
    # JSON string every '"' is escaped, so these bytes can only be the
    # pair itself (tests/unit/cli: checked against encode_attr's output).
    want = b'"protocol":"%s"' % protocol.encode("ascii")
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
            buf = b""
            need = HELLO_HEADER
            while len(buf) < need:
                data = sock.recv(HELLO_MAX)
                if not data:
                    return False
                buf += data
                if need == HELLO_HEADER and len(buf) >= HELLO_HEADER:
                    length = int.from_bytes(buf[1:HELLO_HEADER], "big")
                    if buf[0] != HELLO_KIND or length > HELLO_MAX:
                        return False
                    need = HELLO_HEADER + length
            return want in buf[HELLO_HEADER:need]
        finally:
            sock.close()
    except OSError:
        return False
