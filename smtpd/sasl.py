"""SMTP AUTH for smtpd: PLAIN and LOGIN exchanges, backends, the failure brake.

NAME
    smtpd.sasl - RFC 4954 / RFC 4616 server side, sans-IO where it can be

SYNOPSIS
    from smtpd import sasl
    ex = sasl.ServerExchange("PLAIN", initial_response_or_None)
    step = ex.start()                 # Challenge(text) | Credentials(...) | Failed(reply)
    step = ex.respond(line)           # the client's next line (base64 or "*")
    mechs = sasl.allowed_mechanisms(["noplaintext", "noanonymous"])   # -> ("PLAIN", "LOGIN") or ()
    backend = sasl.open_backend(cfg)  # PasswordFile or smtpd.dovecot_auth.DovecotAuth
    result = await backend.authenticate(creds, client)   # AuthResult(status, reason)
    sasl.hash_password("secret") -> "$scrypt$ln=15,r=8,p=1$<salt>$<hash>"
    sasl.verify_password("secret", stored) -> bool
    brake = sasl.AuthBrake(limit, window); brake.allow(addr) / brake.note(addr)

DESCRIPTION
    Mechanisms: PLAIN (RFC 4616: [authzid] NUL authcid NUL passwd; an
    authzid other than the authcid is refused: no proxy authorization)
    and LOGIN (334 VXNlcm5hbWU6 "Username:", 334 UGFzc3dvcmQ6
    "Password:"; an initial response is the user name).  A response of
    "*" cancels (501 5.7.0 Authentication aborted); one that is not
    base64 gets 501 5.5.2 Cannot decode response.  Both are plaintext
    mechanisms: smtpd_sasl_security_options "noplaintext" (and
    "noactive"/"nodictionary"... do not exclude them) turns them off.

    Backends (smtpd_sasl_type):
      dovecot   Dovecot's auth protocol on smtpd_sasl_path (relative to
                $queue_directory, e.g. private/auth; or inet:host:port).
                See smtpd.dovecot_auth.
      fulmar    (also "cyrus", the Postfix default, so that an unchanged
                main.cf works) a built-in password file, smtpd_sasl_path:
                an absolute path, else $config_directory/sasl/<path>.passwd.
                Lines "user:hash" ("#" comments); hashes are scrypt
                ($scrypt$ln=..,r=..,p=..$salt$hash, the default of
                fulmar-passwd) or PBKDF2-SHA256 ($pbkdf2-sha256$rounds$salt$hash);
                salts and hashes are unpadded base64.  No plaintext or
                plaintext-equivalent secret is ever accepted.  The file is
                read again when its mtime changes; it must be readable by
                mail_owner (smtpd runs as mail_owner).  Verification runs
                in a worker thread: scrypt is deliberately slow.

    The brake: smtpd_client_auth_rate_limit AUTH commands per client per
    $anvil_rate_time_unit (0 = no limit), counted per smtpd process (Postfix
    counts in anvil(8)); over the limit AUTH gets
    450 4.7.1 Error: too many AUTH commands from ADDR and the password is
    not checked.  Failures also count as errors for the error sleep and
    smtpd_hard_error_limit, as in Postfix.

    Passwords are never logged, never put into an exception message and
    never part of a repr().

FAILURE BEHAVIOUR
    A backend that cannot be reached, or a password file that cannot be
    read, is a temporary failure (454 4.7.0 Temporary authentication
    failure: ...), never a rejection of the password.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import time
from collections import deque
from dataclasses import dataclass

from fulmar.smtp.reply import Reply

MECHANISMS = ("PLAIN", "LOGIN")
PLAINTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN"})
LOGIN_USERNAME = "VXNlcm5hbWU6"    # base64("Username:")
LOGIN_PASSWORD = "UGFzc3dvcmQ6"    # base64("Password:")

# Replies (Postfix's smtpd_sasl_proto.c / smtpd_sasl_glue.c; RFC 4954 §4, §6).
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_NOT_ENABLED = Reply(503, "5.5.1", "Error: authentication not enabled")
AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "Error: MAIL transaction in progress")
AUTH_ALREADY = Reply(503, "5.5.1", "Error: already authenticated")
AUTH_SYNTAX = Reply(501, "5.5.4", "Syntax: AUTH mechanism")
AUTH_ABORTED = Reply(501, "5.7.0", "Authentication aborted")
AUTH_CANNOT_DECODE = Reply(501, "5.5.2", "Cannot decode response")
AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication exchange line is too long")
AUTH_UNKNOWN_MECH = Reply(504, "5.5.4", "Unrecognized authentication type")
AUTH_TOO_WEAK = Reply(534, "5.7.9", "Authentication mechanism is too weak")
AUTH_NEED_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
MUST_STARTTLS = Reply(530, "5.7.0", "Must issue a STARTTLS command first")

# Built-in password hashes.  scrypt cost as RFC 7914 §2 / OWASP's password
# storage cheat sheet: N=2^15, r=8, p=1 (32 MiB, ~0.1 s).  PBKDF2 is
# accepted for files made elsewhere (OWASP: 600000 rounds of SHA-256).
SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P = 15, 8, 1
SCRYPT_MAXMEM = 1 << 26          # hashlib's default (32 MiB) is just too small for N=2^15, r=8
SALT_BYTES = 16
HASH_BYTES = 32
PBKDF2_MIN_ROUNDS = 10000        # refuse hashes weaker than this outright
# The brake forgets idle clients once it tracks this many (bounded memory).
BRAKE_MAX_CLIENTS = 1 << 18

OK, FAIL, TEMP = "ok", "fail", "temp"


def auth_failed(reason: str) -> Reply:
    return Reply(535, "5.7.8", f"Error: authentication failed: {reason}")


def auth_temporary(reason: str) -> Reply:
    return Reply(454, "4.7.0", f"Temporary authentication failure: {reason}")


def auth_rate_exceeded(addr: str) -> Reply:
    return Reply(450, "4.7.1", f"Error: too many AUTH commands from {addr}")


# ----------------------------------------------------------------------
# The exchange (sans-IO)

@dataclass(frozen=True)
class Challenge:
    text: str             # base64 text after "334 "


@dataclass(frozen=True)
class Failed:
    reply: Reply
    username: str = ""


class Credentials:
    """A completed exchange.  The password stays out of repr() and str()."""
    __slots__ = ("mechanism", "username", "password")

    def __init__(self, mechanism: str, username: str, password: str):
        self.mechanism, self.username, self.password = mechanism, username, password

    def __repr__(self) -> str:
        return f"Credentials(mechanism={self.mechanism!r}, username={self.username!r}, password=<hidden>)"

    __str__ = __repr__

    def __eq__(self, other) -> bool:
        return (isinstance(other, Credentials) and self.mechanism == other.mechanism
                and self.username == other.username
                and hmac.compare_digest(self.password.encode("utf-8", "surrogateescape"),
                                        other.password.encode("utf-8", "surrogateescape")))


def _b64decode(text: str) -> bytes | None:
    if text == "=":          # RFC 4954 §4: an empty initial response
        return b""
    try:
        return base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def _text(data: bytes) -> str | None:
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if ("\0" in s or "\r" in s or "\n" in s) else s


class ServerExchange:
    """One AUTH command's mechanism exchange."""

    def __init__(self, mechanism: str, initial: str | None):
        self.mechanism = mechanism.upper()
        self.initial = initial
        self._username = ""
        self._stage = 0

    def start(self):
        if self.initial is None:
            self._stage = 1
            return Challenge("" if self.mechanism == "PLAIN" else LOGIN_USERNAME)
        return self._step(self.initial)

    def respond(self, line: str):
        if line.strip() == "*":
            return Failed(AUTH_ABORTED, self._username)
        return self._step(line)

    def _step(self, line: str):
        data = _b64decode(line)
        if data is None:
            return Failed(AUTH_CANNOT_DECODE, self._username)
        if self.mechanism == "PLAIN":
            parts = data.split(b"\0")
            if len(parts) != 3:
                return Failed(auth_failed("authentication failure"))
            authz, user, pw = (_text(p) for p in parts)
            if user is None or pw is None or authz is None or not user:
                return Failed(auth_failed("authentication failure"))
            if authz and authz != user:
                return Failed(auth_failed("authentication failure"), user)
            return Credentials("PLAIN", user, pw)
        # LOGIN
        value = _text(data)
        if value is None:
            return Failed(AUTH_CANNOT_DECODE, self._username)
        if not self._username:
            if not value:
                return Failed(auth_failed("authentication failure"))
            self._username = value
            return Challenge(LOGIN_PASSWORD)
        return Credentials("LOGIN", self._username, value)


def allowed_mechanisms(security_options, available=MECHANISMS) -> tuple[str, ...]:
    """The mechanisms smtpd_sasl_(tls_)security_options permit."""
    opts = {str(o).strip().lower() for o in security_options or ()}
    out = []
    for m in available:
        if m in PLAINTEXT_MECHANISMS and "noplaintext" in opts:
            continue
        out.append(m)
    return tuple(out)


# ----------------------------------------------------------------------
# Password hashes

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, *, log_n: int = SCRYPT_LOG_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = os.urandom(SALT_BYTES)
    dk = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << log_n, r=r, p=p,
                        maxmem=SCRYPT_MAXMEM, dklen=HASH_BYTES)
    return f"$scrypt$ln={log_n},r={r},p={p}${_b64(salt)}${_b64(dk)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of a password against a stored hash; False on any malformed hash."""
    try:
        parts = stored.split("$")
        pw = password.encode("utf-8", "surrogateescape")
        if len(parts) == 5 and parts[0] == "" and parts[1] == "scrypt":
            params = dict(kv.split("=", 1) for kv in parts[2].split(","))
            log_n, r, p = int(params["ln"]), int(params["r"]), int(params["p"])
            if not (1 <= log_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
                return False
            salt, want = _unb64(parts[3]), _unb64(parts[4])
            got = hashlib.scrypt(pw, salt=salt, n=1 << log_n, r=r, p=p,
                                 maxmem=max(SCRYPT_MAXMEM, 256 * r * (1 << log_n)), dklen=len(want))
            return hmac.compare_digest(got, want)
        if len(parts) == 5 and parts[0] == "" and parts[1] == "pbkdf2-sha256":
            rounds = int(parts[2])
            if rounds < PBKDF2_MIN_ROUNDS:
                return False
            salt, want = _unb64(parts[3]), _unb64(parts[4])
            got = hashlib.pbkdf2_hmac("sha256", pw, salt, rounds, dklen=len(want))
            return hmac.compare_digest(got, want)
    except (ValueError, KeyError, binascii.Error, MemoryError):
        return False
    return False


def parse_password_file(text: str) -> dict[str, str]:
    """"user:hash" lines -> {user: hash}; blank and "#" lines skipped."""
    out = {}
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#") or ":" not in s:
            continue
        user, _, h = s.partition(":")
        out[user] = h.strip()
    return out


# ----------------------------------------------------------------------
# Backends

@dataclass(frozen=True)
class AuthResult:
    status: str            # OK | FAIL | TEMP
    reason: str = ""       # for the reply and the log; never secret
    username: str = ""     # the canonical name (Dovecot may rewrite it)


@dataclass
class ClientInfo:
    addr: str
    port: int = 0
    local_addr: str = ""
    local_port: int = 0
    tls: bool = False
    service: str = "smtp"


class PasswordFile:
    """The built-in backend (see the module docstring)."""

    name = "fulmar"

    def __init__(self, path: str):
        self.path = path
        self._mtime: float | None = None
        self._users: dict[str, str] = {}

    def mechanisms(self) -> tuple[str, ...]:
        return MECHANISMS

    def _load(self) -> dict[str, str]:
        st = os.stat(self.path)
        if st.st_mtime != self._mtime:
            with open(self.path, encoding="utf-8") as f:
                self._users = parse_password_file(f.read())
            self._mtime = st.st_mtime
        return self._users

    async def authenticate(self, creds: Credentials, client: ClientInfo) -> AuthResult:
        try:
            users = self._load()
        except OSError as e:
            return AuthResult(TEMP, f"cannot read password file: {e.strerror or e}")
        stored = users.get(creds.username)
        if stored is None:
            # Spend the same time as for a real user: no user enumeration by timing.
            await asyncio.to_thread(verify_password, creds.password, _DUMMY_HASH)
            return AuthResult(FAIL, "authentication failure")
        ok = await asyncio.to_thread(verify_password, creds.password, stored)
        return AuthResult(OK, username=creds.username) if ok else AuthResult(FAIL, "authentication failure")

    async def close(self) -> None:
        pass


_DUMMY_HASH = "$scrypt$ln=15,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


def password_file_path(cfg) -> str:
    path = str(cfg.get("smtpd_sasl_path") or "smtpd")
    if os.path.isabs(path):
        return path
    return os.path.join(str(cfg.get("config_directory")), "sasl", path + ".passwd")


def open_backend(cfg):
    """The backend smtpd_sasl_type names; ValueError for an unknown type."""
    kind = str(cfg.get("smtpd_sasl_type") or "cyrus").lower()
    if kind == "dovecot":
        from smtpd.dovecot_auth import DovecotAuth
        path = str(cfg.get("smtpd_sasl_path") or "")
        if not path.startswith("inet:") and not os.path.isabs(path):
            path = os.path.join(str(cfg.get("queue_directory")), path)
        return DovecotAuth(path, timeout=float(cfg.get("ipc_timeout")))
    if kind in ("cyrus", "fulmar"):
        return PasswordFile(password_file_path(cfg))
    raise ValueError(f"unsupported SASL server implementation: {kind}")


# ----------------------------------------------------------------------
# The brake

class AuthBrake:
    """AUTH commands per client address per window, in this process."""

    def __init__(self, limit: int, window: float, clock=time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._seen: dict[str, deque] = {}

    def allow(self, addr: str) -> bool:
        """Count one AUTH from addr; False when it is over the limit."""
        if not self.limit:
            return True
        now = self.clock()
        q = self._seen.setdefault(addr, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) >= self.limit:
            return False
        q.append(now)
        if len(self._seen) > BRAKE_MAX_CLIENTS:
            for k in [k for k, v in self._seen.items() if not v or v[-1] <= now - self.window]:
                del self._seen[k]
        return True
