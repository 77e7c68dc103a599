"""RFC 5321 envelope addresses and ESMTP parameters, as Postfix's smtpd reads them.

NAME
    fulmar.smtp.address - parse MAIL FROM / RCPT TO arguments

SYNOPSIS
    from fulmar.smtp import address as A
    path, params = A.parse_path_arg(" <a@b> SIZE=10", strict=False, utf8_ok=True)
        path: Path(address="a@b", route="", null=False, quoted=False)
        params: [("SIZE", "10")]
    mp = A.parse_mail_params(params, dsn=True, smtputf8=True)  -> MailParams
    rp = A.parse_rcpt_params(params, dsn=True)                  -> RcptParams
    A.xtext_encode(s) / A.xtext_decode(s)
    A.split_address("u@d") -> ("u", "d")
    A.quote_local_part("a b") -> '"a b"'
    A.is_relay_trick(path_or_local) -> bool
    A.NOTIFY_NEVER / NOTIFY_SUCCESS / NOTIFY_DELAY / NOTIFY_FAILURE (Postfix dsn_mask.h bits)

DESCRIPTION
    parse_path_arg() takes the text after "MAIL FROM:" or "RCPT TO:".  The
    path is "<" [source-route ":"] mailbox ">" or "<>".  With strict=False
    (strict_rfc821_envelopes = no, Postfix's default) the angle brackets may
    be missing and white space may follow the colon, as Postfix allows.

    Path.address is the address in Postfix's internal form: the local part
    unquoted (`"a b"@x` becomes `a b@x`).  A source route (`@a,@b:u@d`) is
    stripped from the address, as Postfix does, but kept in Path.route so
    that relay control can refuse it: a routed address is never relayed.

    Non-ASCII characters are allowed only when utf8_ok (the caller passes
    the SMTPUTF8 state; the reply for a violation is the caller's).

FAILURE BEHAVIOUR
    Every parse error raises AddressError with `.reply`, the exact Postfix
    reply to send (501 5.1.7 / 501 5.1.3 / 501 5.5.4 ... / 555 5.5.4).
    Nothing here ever raises anything else for any input string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fulmar.smtp import reply as R

# Postfix src/global/dsn_mask.h
NOTIFY_NEVER = 1 << 0
NOTIFY_SUCCESS = 1 << 1
NOTIFY_DELAY = 1 << 2
NOTIFY_FAILURE = 1 << 3
_NOTIFY_NAMES = {"SUCCESS": NOTIFY_SUCCESS, "DELAY": NOTIFY_DELAY, "FAILURE": NOTIFY_FAILURE}

# RFC 3461 §4.4: ENVID is at most 100 characters (as xtext).
ENVID_MAX = 100
# RFC 3461 §4.2: the ORCPT value is at most 500 characters.
ORCPT_MAX = 500

_ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_DOT_ATOM_RE = re.compile(rf"^[{_ATEXT}]+(?:\.[{_ATEXT}]+)*$")
_DOT_ATOM_UTF8_RE = re.compile(rf"^(?:[{_ATEXT}]|[^\x00-\x7f])+(?:\.(?:[{_ATEXT}]|[^\x00-\x7f])+)*$")
_LDH_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
_ULDH_RE = re.compile(r"^(?:[A-Za-z0-9]|[^\x00-\x7f])(?:(?:[A-Za-z0-9-]|[^\x00-\x7f])*(?:[A-Za-z0-9]|[^\x00-\x7f]))?$")
_KEYWORD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_CTRL_RE = re.compile(r"[\x00-\x1f\x7f]")
# A label without strict_rfc821_envelopes: letters, digits, "-", "_", non-ASCII.
_LOOSE_LABEL_RE = re.compile(r"[A-Za-z0-9_\-\x80-\U0010ffff]+")


class AddressError(ValueError):
    """A MAIL/RCPT argument that does not parse; .reply is what to answer."""

    def __init__(self, reply: R.Reply, detail: str = ""):
        super().__init__(detail or str(reply))
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Path:
    address: str          # internal form, local part unquoted; "" for <>
    route: str = ""       # source route as given ("@a,@b"), stripped from address
    quoted: bool = False  # the local part was a quoted string

    @property
    def null(self) -> bool:
        return self.address == ""

    @property
    def local(self) -> str:
        return split_address(self.address)[0]

    @property
    def domain(self) -> str:
        return split_address(self.address)[1]


@dataclass(slots=True)
class MailParams:
    size: int | None = None
    body: str | None = None          # "7BIT" | "8BITMIME" | "BINARYMIME"
    smtputf8: bool = False
    ret: str | None = None           # "FULL" | "HDRS"
    envid: str | None = None         # xtext-decoded
    auth: str | None = None          # RFC 4954 AUTH=, kept for the SASL issue
    extra: list[tuple[str, str | None]] = field(default_factory=list)


@dataclass(slots=True)
class RcptParams:
    notify: int = 0                  # bit mask; 0 = not given
    orcpt: str = ""                  # "addr-type;decoded address", "" = not given
    extra: list[tuple[str, str | None]] = field(default_factory=list)


# --------------------------------------------------------------------------
# xtext (RFC 3461 §4)

def xtext_encode(text: str) -> str:
    out = []
    for b in text.encode("utf-8", "surrogateescape"):
        out.append(chr(b) if 33 <= b <= 126 and b not in (0x2B, 0x3D) else "+%02X" % b)
    return "".join(out)


def xtext_decode(text: str) -> str:
    """Decode xtext; raises ValueError on a bad "+XX" or a forbidden char."""
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        o = ord(ch)
        if ch == "+":
            hx = text[i + 1:i + 3]
            if len(hx) != 2 or not all(c in "0123456789ABCDEFabcdef" for c in hx):
                raise ValueError("bad xtext hexchar")
            out.append(int(hx, 16))
            i += 3
            continue
        if ch == "=" or not 33 <= o <= 126:
            raise ValueError("bad xtext character")
        out.append(o)
        i += 1
    return out.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------
# addresses

def split_address(addr: str) -> tuple[str, str]:
    """Split an internal-form address at its last "@": (local, domain)."""
    at = addr.rfind("@")
    if at < 0:
        return addr, ""
    return addr[:at], addr[at + 1:]


def quote_local_part(local: str) -> str:
    """External form of a local part: quoted when it is not a dot-atom."""
    if local == "" or _DOT_ATOM_UTF8_RE.match(local):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def external_form(addr: str) -> str:
    local, domain = split_address(addr)
    if "@" not in addr:
        return quote_local_part(addr)
    return f"{quote_local_part(local)}@{domain}"


def is_relay_trick(value: Path | str) -> bool:
    """True for the forms that route through a destination to somewhere else.

    `user%host@dest`, `host!user@dest`, `"user@host"@dest` and
    `@route:user@dest` (given as a Path) are never relayed: Postfix refuses
    them from untrusted clients (allow_untrusted_routing = no) or resolves
    them to a non-local destination.  A str argument is a local part.
    """
    if isinstance(value, Path):
        if value.route:
            return True
        local = value.local
    else:
        local = value
    return any(c in local for c in "%!@")


def _find_close(text: str, start: int) -> int:
    """Index of the ">" closing the "<" at start-1, honouring quotes; -1 if none."""
    i, n, inq = start, len(text), False
    while i < n:
        c = text[i]
        if inq:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                inq = False
        elif c == '"':
            inq = True
        elif c == ">":
            return i
        elif c == "<":
            return -1
        i += 1
    return -1


def _split_unquoted(text: str, sep: str) -> int:
    """Index of the last sep outside quotes, -1 if none; ValueError on bad quoting."""
    i, n, inq, last = 0, len(text), False, -1
    while i < n:
        c = text[i]
        if inq:
            if c == "\\":
                if i + 1 >= n:
                    raise ValueError("dangling backslash")
                i += 2
                continue
            if c == '"':
                inq = False
        elif c == '"':
            inq = True
        elif c == sep:
            last = i
        i += 1
    if inq:
        raise ValueError("unbalanced quote")
    return last


def _unquote(local: str, utf8_ok: bool) -> str:
    """Unquote a quoted-string local part (with its quotes)."""
    body = local[1:-1]
    out = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError("dangling backslash")
            c = body[i + 1]
            i += 2
        elif c == '"':
            raise ValueError("stray quote")
        else:
            i += 1
        o = ord(c)
        if o < 32 or o == 127 or (o > 127 and not utf8_ok):
            raise ValueError("bad quoted character")
        out.append(c)
    return "".join(out)


def _check_domain(domain: str, strict: bool, utf8_ok: bool) -> None:
    if domain.startswith("[") and domain.endswith("]"):
        lit = domain[1:-1]
        if not lit or any(c in lit for c in "[]\\") or _CTRL_RE.search(lit) or " " in lit:
            raise ValueError("bad address literal")
        return
    labels = domain.split(".")
    if labels and labels[-1] == "" and not strict:
        labels = labels[:-1]     # Postfix tolerates a trailing dot
    if not labels:
        raise ValueError("empty domain")
    rx = _ULDH_RE if utf8_ok else _LDH_RE
    for label in labels:
        if strict:
            if not rx.match(label):
                raise ValueError("bad domain label")
        elif _LOOSE_LABEL_RE.fullmatch(label) is None:
            # Postfix without strict_rfc821_envelopes lets "_" through; nothing else.
            raise ValueError("bad domain label")
        if not utf8_ok and not label.isascii():
            raise ValueError("non-ASCII domain")


def _parse_mailbox(text: str, *, strict: bool, utf8_ok: bool, allow_no_domain: bool) -> tuple[str, bool]:
    """Parse "local@domain" (or a bare local part); return (internal form, quoted)."""
    if not text or _CTRL_RE.search(text):
        raise ValueError("empty or control characters")
    if not utf8_ok and not text.isascii():
        raise ValueError("non-ASCII")
    at = _split_unquoted(text, "@")
    if at < 0:
        local, domain = text, None
    else:
        local, domain = text[:at], text[at + 1:]
    quoted = local.startswith('"')
    if quoted:
        if len(local) < 2 or not local.endswith('"'):
            raise ValueError("bad quoted local part")
        local_int = _unquote(local, utf8_ok)
    else:
        if not local:
            raise ValueError("empty local part")
        if strict or not (_DOT_ATOM_UTF8_RE.match(local)):
            if not _DOT_ATOM_UTF8_RE.match(local):
                # Non-strict mode (Postfix) lets odd dots through ("a..b", ".a"),
                # never white space, quotes, brackets, "@" or controls.
                if strict or any(c in local for c in ' "<>()[]\\,;:@'):
                    raise ValueError("bad local part")
        local_int = local
    if domain is None:
        if not allow_no_domain:
            raise ValueError("no domain")
        return local_int, quoted
    _check_domain(domain, strict, utf8_ok)
    return f"{local_int}@{domain}", quoted


def parse_path(text: str, *, strict: bool = False, utf8_ok: bool = False,
               allow_null: bool = True, allow_no_domain: bool = True) -> Path:
    """Parse the inside of a path (no angle brackets): [route ":"] mailbox, or ""."""
    if text == "":
        if not allow_null:
            raise ValueError("null path")
        return Path("")
    route = ""
    if text.startswith("@"):
        colon = text.find(":")
        if colon < 0:
            raise ValueError("source route without ':'")
        route = text[:colon]
        for hop in route.split(","):
            if not hop.startswith("@") or len(hop) < 2:
                raise ValueError("bad source route")
            _check_domain(hop[1:], strict, utf8_ok)
        text = text[colon + 1:]
        if not text:
            raise ValueError("route without mailbox")
    address, quoted = _parse_mailbox(text, strict=strict, utf8_ok=utf8_ok,
                                     allow_no_domain=allow_no_domain)
    return Path(address, route, quoted)


def parse_path_arg(arg: str, *, strict: bool = False, utf8_ok: bool = True,
                   is_sender: bool = True) -> tuple[Path, list[tuple[str, str | None]]]:
    """Parse "<path> params" (the text after "FROM:" / "TO:").

    Raises AddressError with Postfix's reply: 501 5.1.7 Bad sender address
    syntax / 501 5.1.3 Bad recipient address syntax; missing brackets under
    strict → the same; bad parameters → 501 5.5.4 / 555 5.5.4.
    """
    bad = R.BAD_SENDER_SYNTAX if is_sender else R.BAD_RCPT_SYNTAX
    s = arg.lstrip(" ")
    if s.startswith("<"):
        close = _find_close(s, 1)
        if close < 0:
            raise AddressError(bad, "unbalanced <")
        inner, rest = s[1:close], s[close + 1:]
        if rest and not rest.startswith(" "):
            raise AddressError(bad, "junk after >")
    else:
        if strict:
            raise AddressError(bad, "missing <>")
        # Postfix without strict_rfc821_envelopes: the first word is the address.
        end = _token_end(s)
        inner, rest = s[:end], s[end:]
        if not inner or ">" in inner or "<" in inner:
            raise AddressError(bad, "no address")
    try:
        path = parse_path(inner, strict=strict, utf8_ok=utf8_ok, allow_null=is_sender,
                          allow_no_domain=True)
    except ValueError as e:
        raise AddressError(bad, str(e)) from None
    return path, parse_params(rest)


def _token_end(s: str) -> int:
    i, n, inq = 0, len(s), False
    while i < n:
        c = s[i]
        if inq:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                inq = False
        elif c == '"':
            inq = True
        elif c == " ":
            return i
        i += 1
    return min(i, n)


def parse_params(text: str) -> list[tuple[str, str | None]]:
    """Split ESMTP parameters "KEY[=VALUE] ..." (RFC 5321 §4.1.2)."""
    out: list[tuple[str, str | None]] = []
    for word in text.split(" "):
        if not word:
            continue
        key, eq, value = word.partition("=")
        if not _KEYWORD_RE.match(key) or (eq and (value == "" or _CTRL_RE.search(value))):
            raise AddressError(R.unsupported_option(word), "bad parameter")
        out.append((key.upper(), value if eq else None))
    return out


def parse_mail_params(params: list[tuple[str, str | None]], *, dsn: bool = True,
                      smtputf8: bool = True, binarymime: bool = False) -> MailParams:
    """Interpret MAIL FROM parameters as Postfix does; raise AddressError."""
    mp = MailParams()
    for key, value in params:
        word = key if value is None else f"{key}={value}"
        if key == "SIZE" and value is not None:
            if not value.isascii() or not value.isdigit():
                raise AddressError(R.BAD_SIZE)
            mp.size = int(value)
        elif key == "BODY" and value is not None:
            v = value.upper()
            if v in ("7BIT", "8BITMIME") or (v == "BINARYMIME" and binarymime):
                mp.body = v
            else:
                raise AddressError(R.unsupported_option(word))
        elif key == "SMTPUTF8" and value is None and smtputf8:
            mp.smtputf8 = True
        elif key == "RET" and value is not None and dsn:
            v = value.upper()
            if v not in ("FULL", "HDRS") or mp.ret is not None:
                raise AddressError(R.BAD_RET)
            mp.ret = v
        elif key == "ENVID" and value is not None and dsn:
            if mp.envid is not None or len(value) > ENVID_MAX:
                raise AddressError(R.BAD_ENVID)
            try:
                envid = xtext_decode(value)
            except ValueError:
                raise AddressError(R.BAD_ENVID) from None
            if not envid.isascii() or not envid.isprintable():
                raise AddressError(R.BAD_ENVID)
            mp.envid = envid
        elif key == "AUTH" and value is not None:
            mp.auth = value
        else:
            if key in ("RET", "ENVID") and not dsn:
                raise AddressError(R.Reply(501, "5.7.1", "DSN support is disabled"))
            raise AddressError(R.unsupported_option(word))
    return mp


def parse_rcpt_params(params: list[tuple[str, str | None]], *, dsn: bool = True) -> RcptParams:
    rp = RcptParams()
    for key, value in params:
        word = key if value is None else f"{key}={value}"
        if key == "NOTIFY" and value is not None and dsn:
            if rp.notify:
                raise AddressError(R.BAD_NOTIFY)
            mask = 0
            for item in value.upper().split(","):
                if item == "NEVER":
                    mask |= NOTIFY_NEVER
                elif item in _NOTIFY_NAMES:
                    mask |= _NOTIFY_NAMES[item]
                else:
                    raise AddressError(R.BAD_NOTIFY)
            if mask & NOTIFY_NEVER and mask != NOTIFY_NEVER:
                raise AddressError(R.BAD_NOTIFY)
            rp.notify = mask
        elif key == "ORCPT" and value is not None and dsn:
            if rp.orcpt or len(value) > ORCPT_MAX:
                raise AddressError(R.BAD_ORCPT)
            atype, semi, xaddr = value.partition(";")
            if not semi or not atype or not _KEYWORD_RE.match(atype) or not xaddr:
                raise AddressError(R.BAD_ORCPT)
            try:
                addr = xtext_decode(xaddr)
            except ValueError:
                raise AddressError(R.BAD_ORCPT) from None
            if _CTRL_RE.search(addr):
                raise AddressError(R.BAD_ORCPT)
            rp.orcpt = f"{atype.lower()};{addr}"
        else:
            if key in ("NOTIFY", "ORCPT") and not dsn:
                raise AddressError(R.Reply(501, "5.7.1", "DSN support is disabled"))
            raise AddressError(R.unsupported_option(word))
    return rp
