"""Postfix-format logging for daemons and commands.

NAME
    fulmar.log - log lines exactly as Postfix writes them

SYNOPSIS
    from fulmar import log
    log.setup(cfg, "smtpd", service_name="submission")   # daemons
    log.cli_setup("postconf")                             # commands
    log.info("%s: client=%s", queue_id, client)
    log.warning("%s: lost connection", peer)
    log.error(...); log.fatal(...); log.panic(...)
    log.debug(...)                 # only when set_verbose(n > 0), like -v

DESCRIPTION
    A line is

        TAG[PID]: [severity: ]MESSAGE

    with TAG = $syslog_name/<process_name> (so `-o syslog_name=postfix/
    submission` gives `postfix/submission/smtpd`) and severity prefixes
    "warning: ", "error: ", "fatal: ", "panic: " (none for info).  Arguments
    are printf-style and formatted only when the line is emitted.  Control
    characters in the message become "?" (Postfix's printable()), so a
    peer's text can never forge a second line.

    Where it goes, chosen by setup():

    * stream=...            the stream, as `TAG[PID]: ...` (tests);
    * maillog_file = PATH   PATH opened O_APPEND, one write() per line,
                            `Mmm dd hh:mm:ss HOST TAG[PID]: ...`, HOST being
                            $myhostname; /dev/stdout and /dev/stderr use the
                            process's own descriptors;
    * otherwise             syslog through the /dev/log datagram socket,
                            RFC 3164: `<PRI>Mmm dd hh:mm:ss TAG[PID]: ...`,
                            PRI from $syslog_facility and the severity
                            (info, warning, err, crit for fatal and panic,
                            as Postfix's msg_syslog);
    * no /dev/log           stderr, in the maillog_file format.

    cli_setup(progname) makes the line `progname: [severity: ]MESSAGE` on
    stderr, which is what Postfix's commands print (`postconf: fatal: ...`).
    Before any setup, lines go to stderr as `fulmar: ...`.

    The hot path is one function call, one %-format, one cached timestamp
    and one write: the logging module is not used.

DIAGNOSTICS
    fatal() and panic() log, then raise SystemExit(1) (fatal: environment
    or configuration; panic: a Fulmar bug).  An unknown syslog_facility or
    a maillog_file that cannot be opened is fatal, reported on stderr.  A
    failing syslog send is retried once on a new socket, then the line goes
    to stderr.  A bad format string never raises: the line is logged with
    the raw format and arguments.
"""

import os
import socket
import sys
import time

INFO, WARNING, ERROR, FATAL, PANIC = range(5)

_PREFIX = ("", "warning: ", "error: ", "fatal: ", "panic: ")
# syslog(3) severities for each level, as Postfix's msg_syslog.c.
_SYSLOG_SEVERITY = (6, 4, 3, 2, 2)

SYSLOG_PATH = "/dev/log"
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5,
    "lpr": 6, "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19,
    "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# C0 controls, DEL and C1 controls become "?", as Postfix's printable().
_UNPRINTABLE = {c: "?" for c in (*range(0x20), *range(0x7f, 0xa0))}

_stamp_second = -1
_stamp_text = ""


def timestamp(now: float | None = None) -> str:
    """Return `Mmm dd hh:mm:ss` (day space-padded) in local time."""
    global _stamp_second, _stamp_text
    second = int(time.time() if now is None else now)
    if second != _stamp_second:
        t = time.localtime(second)
        _stamp_text = "%s %2d %02d:%02d:%02d" % (
            _MONTHS[t.tm_mon - 1], t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
        _stamp_second = second
    return _stamp_text


def _printable(text):
    return text if text.isprintable() else text.translate(_UNPRINTABLE)


def _encode(line):
    return line.encode("utf-8", "backslashreplace")


class _StreamSink:
    """`TAG[PID]: ` lines (or `TAG: ` for commands) on a text stream."""

    def __init__(self, stream, label):
        self.stream = stream     # None: whatever sys.stderr is at the time
        self.label = label

    def emit(self, level, message):
        stream = self.stream or sys.stderr
        try:
            stream.write("%s: %s%s\n" % (self.label, _PREFIX[level], message))
            stream.flush()
        except (OSError, ValueError):
            pass                 # nowhere left to complain to

    def close(self):
        pass


class _FileSink:
    """maillog_file lines: one O_APPEND write() each."""

    def __init__(self, fd, host, label, owns_fd):
        self.fd = fd
        self.prefix = " %s %s: " % (host, label)
        self.owns_fd = owns_fd

    def emit(self, level, message):
        line = "%s%s%s%s\n" % (timestamp(), self.prefix, _PREFIX[level],
                               message)
        try:
            os.write(self.fd, _encode(line))
        except OSError:
            pass

    def close(self):
        if self.owns_fd:
            os.close(self.fd)


class _SyslogSink:
    """RFC 3164 datagrams to /dev/log."""

    def __init__(self, path, facility, label, fallback):
        self.path = path
        self.facility = facility
        self.label = label
        self.fallback = fallback
        self.sock = self._connect()

    def _connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.set_inheritable(False)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        return sock

    def emit(self, level, message):
        data = _encode("<%d>%s %s: %s%s" % (
            self.facility * 8 + _SYSLOG_SEVERITY[level], timestamp(),
            self.label, _PREFIX[level], message))
        try:
            self.sock.send(data)
            return
        except OSError:
            pass
        # syslogd restarted (ECONNREFUSED) or the socket went away.
        try:
            self.sock.close()
            self.sock = self._connect()
            self.sock.send(data)
        except OSError:
            self.fallback.emit(level, message)

    def close(self):
        self.sock.close()


_sink = _StreamSink(None, "fulmar")
_verbose = 0
tag = "fulmar"
service_name = None


def _param(cfg, name, default):
    if cfg is None:
        return default
    try:
        value = cfg.get(name)
    except (KeyError, LookupError):
        return default
    return default if value is None else value


def _remember_service(name):
    global service_name
    service_name = name


def _install(sink, new_tag):
    global _sink, tag
    old, _sink, tag = _sink, sink, new_tag
    if old is not sink:
        old.close()


def setup(cfg, process_name: str, *, service_name: str | None = None,
          stream=None) -> None:
    """Direct log lines as cfg (a Config, or None for defaults) says."""
    _remember_service(service_name)
    syslog_name = _param(cfg, "syslog_name", "postfix")
    new_tag = "%s/%s" % (syslog_name, process_name)
    label = "%s[%d]" % (new_tag, os.getpid())
    if stream is not None:
        _install(_StreamSink(stream, label), new_tag)
        return
    host = _param(cfg, "myhostname", "") or socket.gethostname()
    stderr_sink = _FileSink(2, host, label, owns_fd=False)
    maillog_file = _param(cfg, "maillog_file", "")
    if maillog_file:
        if maillog_file in ("/dev/stdout", "/dev/stderr"):
            fd, owns = (1 if maillog_file == "/dev/stdout" else 2), False
        else:
            try:
                fd = os.open(maillog_file,
                             os.O_WRONLY | os.O_APPEND | os.O_CREAT
                             | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                _install(stderr_sink, new_tag)
                fatal("open maillog_file %s: %s", maillog_file, exc.strerror)
            owns = True
        _install(_FileSink(fd, host, label, owns), new_tag)
        return
    facility_name = _param(cfg, "syslog_facility", "mail")
    facility = FACILITIES.get(facility_name.lower())
    if facility is None:
        _install(stderr_sink, new_tag)
        fatal("unknown syslog facility: %s", facility_name)
    try:
        sink = _SyslogSink(SYSLOG_PATH, facility, label, stderr_sink)
    except OSError:
        sink = stderr_sink
    _install(sink, new_tag)


def cli_setup(progname: str, stream=None) -> None:
    """Log as a command does: `progname: [severity: ]message` on stderr."""
    _install(_StreamSink(stream, progname), progname)


def set_verbose(level: int) -> None:
    """Emit debug() lines when level > 0 (Postfix's -v)."""
    global _verbose
    _verbose = level


def verbose() -> int:
    return _verbose


def _format(fmt, args):
    if not args:
        return _printable(fmt)
    try:
        return _printable(fmt % args)
    except (TypeError, ValueError, KeyError):
        return _printable("%s %r" % (fmt, args))


def debug(fmt: str, *args) -> None:
    if _verbose:
        _sink.emit(INFO, _format(fmt, args))


def info(fmt: str, *args) -> None:
    _sink.emit(INFO, _format(fmt, args))


def warning(fmt: str, *args) -> None:
    _sink.emit(WARNING, _format(fmt, args))


def error(fmt: str, *args) -> None:
    _sink.emit(ERROR, _format(fmt, args))


def fatal(fmt: str, *args):
    """Log, then exit 1: the environment or configuration is wrong."""
    _sink.emit(FATAL, _format(fmt, args))
    raise SystemExit(1)


def panic(fmt: str, *args):
    """Log, then exit 1: Fulmar itself is wrong."""
    _sink.emit(PANIC, _format(fmt, args))
    raise SystemExit(1)
