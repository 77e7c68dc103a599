"""master.cf: the service table master runs.

NAME
    fulmar.config.mastercf - parse master.cf (master(5))

SYNOPSIS
    from fulmar.config.mastercf import parse_master_cf, parse_master_cf_text, Service
    services = parse_master_cf("/etc/postfix/master.cf")   # list[Service]

DESCRIPTION
    Logical lines as in main.cf: a line starting with white space continues
    the previous one, `#` lines and blank lines are skipped.  Each service is

        service type private unpriv chroot wakeup maxproc command [args...]

    type is inet, unix, unix-dgram, fifo or pass.  `-` means the default:
    private y, unpriv y, chroot n, wakeup 0, maxproc None (= the
    $default_process_limit of the day).  wakeup may end in `?` ("only when
    used") and is kept as text.  An inet service name is `[host:]port`,
    `[ipv6]:port` or `host:port`; a host of `*` or none means all of
    $inet_interfaces; a port name such as smtp, submission or submissions is
    resolved with getservbyname() and, failing that, a built-in table, so
    `port` is always a decimal string.

    Arguments: `-o name=value`, `-o name = value` given as
    `-o { name = value with spaces }`, and `-oname=value` become `overrides`;
    the other arguments stay in `args` in order.  A `{...}` argument is one
    token (braces removed when it follows -o; kept otherwise).

    Service.fields keeps the eight columns as written (for postconf -M/-F).

DIAGNOSTICS
    ConfigError("path:line: what"): bad field count, bad type, a y/n column
    that is neither, bad wakeup or maxproc, unknown port name, -o without
    name=value, unbalanced braces, a duplicate service name/type.
"""

from __future__ import annotations

from fulmar.config.maincf import ConfigError, logical_lines

SERVICE_TYPES = ("inet", "unix", "unix-dgram", "fifo", "pass")

# Used when /etc/services lacks a name (containers often ship without it).
FALLBACK_PORTS = {"smtp": 25, "submission": 587, "submissions": 465,
                  "smtps": 465, "lmtp": 24, "qmqp": 628}

# master(5) column names, as postconf -F prints them.
FIELD_NAMES = ("service", "type", "private", "unprivileged", "chroot",
               "wakeup", "process_limit", "command")


class Service:
    """One master.cf entry (a plain class: config.load() reads master.cf on
    every command start, and the dataclasses module costs ~7 ms to import)."""

    __slots__ = ("name", "type", "private", "unpriv", "chroot", "wakeup", "maxproc",
                 "command", "args", "overrides", "host", "port", "path", "lineno",
                 "fields", "argv")

    def __init__(self, name: str, type: str, private: bool, unpriv: bool, chroot: bool,
                 wakeup: str, maxproc: int | None, command: str, args: list[str],
                 overrides: dict[str, str], host: str | None, port: str | None,
                 path: str, lineno: int,
                 fields: tuple[str, ...] = (),            # the 8 columns as written
                 argv: list[str] | None = None) -> None:  # command + all args as written
        self.name, self.type, self.private, self.unpriv = name, type, private, unpriv
        self.chroot, self.wakeup, self.maxproc, self.command = chroot, wakeup, maxproc, command
        self.args, self.overrides, self.host, self.port = args, overrides, host, port
        self.path, self.lineno, self.fields = path, lineno, fields
        self.argv = [] if argv is None else argv

    def _values(self) -> tuple:
        return tuple(getattr(self, f) for f in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is Service and self._values() == other._values()

    __hash__ = None     # mutable, as the dataclass was

    def __repr__(self) -> str:
        return "Service(%s)" % ", ".join("%s=%r" % (f, getattr(self, f)) for f in self.__slots__)

    @property
    def key(self) -> str:
        return f"{self.name}/{self.type}"


def resolve_port(port: str, where: str) -> str:
    """A port number or service name → decimal port string."""
    if port.isascii() and port.isdigit():
        if not 0 < int(port) < 65536:
            raise ConfigError(f"{where}: bad port number: \"{port}\"")
        return str(int(port))
    import _socket      # not socket.py: every command start reads master.cf
    try:
        return str(_socket.getservbyname(port, "tcp"))
    except (OSError, ValueError, UnicodeError):
        pass
    if port in FALLBACK_PORTS:
        return str(FALLBACK_PORTS[port])
    raise ConfigError(f"{where}: unknown service: {port}/tcp")


def split_inet_name(name: str, where: str) -> tuple[str | None, str]:
    """`[host:]port` → (host or None, decimal port)."""
    host: str | None
    if name.startswith("["):
        end = name.find("]")
        if end < 0 or name[end + 1:end + 2] != ":":
            raise ConfigError(f"{where}: bad inet service name: \"{name}\"")
        host, port = name[1:end], name[end + 2:]
    elif ":" in name:
        host, port = name.rsplit(":", 1)
    else:
        host, port = None, name
    if host in ("", "*"):
        host = None
    if not port:
        raise ConfigError(f"{where}: missing port in inet service name: \"{name}\"")
    return host, resolve_port(port, where)


def tokenize(text: str, where: str) -> list[str]:
    """Split on white space; a `{...}` group is one token (braces kept)."""
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start, depth = i, 0
        while i < n and (depth or not text[i].isspace()):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}" and depth:
                depth -= 1
            i += 1
        if depth:
            raise ConfigError(f"{where}: unbalanced {{ in: \"{text[start:]}\"")
        tokens.append(text[start:i])
    return tokens


def _yes_no(value: str, default: bool, column: str, where: str) -> bool:
    if value == "-":
        return default
    if value in ("y", "n"):
        return value == "y"
    raise ConfigError(f"{where}: bad {column} field: \"{value}\"")


def _wakeup_ok(text: str) -> bool:
    """`N` or `N?` (Postfix's wakeup field); by hand, not with re: every
    command start reads master.cf, and importing re costs ~7 ms."""
    digits = text[:-1] if text.endswith("?") else text
    return digits.isascii() and digits.isdigit()


def _override(text: str, where: str) -> tuple[str, str]:
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    name, eq, value = text.partition("=")
    name = name.strip()
    if not eq or not name:
        raise ConfigError(f"{where}: bad -o option: \"{text.strip()}\" (need name=value)")
    return name, value.strip()


def parse_line(text: str, path: str, lineno: int) -> Service:
    """One logical master.cf line → Service."""
    where = f"{path}:{lineno}"
    tokens = tokenize(text, where)
    if len(tokens) < 8:
        raise ConfigError(f"{where}: bad field count: \"{text}\"")
    name, stype, private, unpriv, chroot, wakeup, maxproc = tokens[:7]
    if stype not in SERVICE_TYPES:
        raise ConfigError(f"{where}: bad transport type: {stype}")
    if wakeup == "-":
        wakeup = "0"
    elif not _wakeup_ok(wakeup):
        raise ConfigError(f"{where}: bad wakeup time: \"{wakeup}\"")
    if maxproc == "-":
        nproc: int | None = None
    elif maxproc.isascii() and maxproc.isdigit():
        nproc = int(maxproc)
    else:
        raise ConfigError(f"{where}: bad process count: \"{maxproc}\"")
    host = port = None
    if stype == "inet":
        host, port = split_inet_name(name, where)
    command, rest = tokens[7], tokens[8:]
    args: list[str] = []
    overrides: dict[str, str] = {}
    i = 0
    while i < len(rest):
        tok = rest[i]
        if tok == "-o":
            if i + 1 >= len(rest):
                raise ConfigError(f"{where}: -o without name=value")
            key, value = _override(rest[i + 1], where)
            overrides[key] = value
            i += 2
            continue
        if tok.startswith("-o") and "=" in tok:
            key, value = _override(tok[2:], where)
            overrides[key] = value
        else:
            args.append(tok)
        i += 1
    return Service(name=name, type=stype,
                   private=_yes_no(private, True, "private", where),
                   unpriv=_yes_no(unpriv, True, "unprivileged", where),
                   chroot=_yes_no(chroot, False, "chroot", where),
                   wakeup=wakeup, maxproc=nproc, command=command, args=args,
                   overrides=overrides, host=host, port=port, path=path,
                   lineno=lineno, fields=tuple(tokens[:8]), argv=tokens[7:])


def parse_master_cf_text(text: str, path: str = "master.cf") -> list[Service]:
    services: list[Service] = []
    seen: dict[str, int] = {}
    for ll in logical_lines(text.splitlines(), path):
        svc = parse_line(ll.text, path, ll.first + 1)
        if svc.key in seen:
            raise ConfigError(f"{path}:{ll.first + 1}: duplicate service name: "
                              f"\"{svc.key}\" (first at line {seen[svc.key]})")
        seen[svc.key] = ll.first + 1
        services.append(svc)
    return services


def parse_master_cf(path: str) -> list[Service]:
    """Parse a master.cf file; ConfigError when it cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"open {path}: {e.strerror}") from None
    return parse_master_cf_text(data.decode("utf-8", "surrogateescape"), path)
