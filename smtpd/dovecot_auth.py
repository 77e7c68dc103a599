"""Dovecot's authentication protocol (client side), for smtpd_sasl_type = dovecot.

NAME
    smtpd.dovecot_auth - ask a Dovecot auth server whether a password is right

SYNOPSIS
    from smtpd.dovecot_auth import DovecotAuth, parse_handshake, auth_request, parse_reply
    auth = DovecotAuth("/var/spool/postfix/private/auth", timeout=5)
    result = await auth.authenticate(creds, client)    # smtpd.sasl.AuthResult
    await auth.close()

DESCRIPTION
    The protocol is Dovecot's "auth client" protocol version 1 (the one
    Postfix's xsasl_dovecot_server.c speaks): tab-separated lines.

        client: VERSION 1 1 / CPID <pid>
        server: VERSION 1 x / MECH <name> <flags>... / SPID / CUID / COOKIE / DONE
        client: AUTH <id> PLAIN service=smtp nologin lip=.. rip=.. lport=.. rport=.. [secured] resp=<base64>
        server: OK <id> user=<name> ... | FAIL <id> [reason=..] [temp] [user=..] | CONT <id> <base64>

    smtpd collects the user name and password itself (PLAIN or LOGIN on
    the SMTP side) and always asks Dovecot with PLAIN, so the password
    travels only over the local socket.  One connection per smtpd process
    is kept and reused; requests are numbered and may overlap.  The path
    is a unix socket, or inet:host:port.

FAILURE BEHAVIOUR
    A socket that cannot be reached, a bad handshake, a timeout or a lost
    connection give AuthResult(TEMP, "...") (454 to the client); the next
    request connects again.  "FAIL ... temp" is TEMP too.  A server that
    does not list PLAIN is a TEMP failure.
"""

from __future__ import annotations

import asyncio
import base64
import os

from smtpd.sasl import FAIL, OK, TEMP, AuthResult, ClientInfo, Credentials

PROTOCOL_MAJOR, PROTOCOL_MINOR = 1, 1
LINE_LIMIT = 65536


def _escape(value: str) -> str:
    """Dovecot's tab escaping for values (\\001 prefixes, str_tabescape)."""
    return (value.replace("\x01", "\x011").replace("\t", "\x01t")
            .replace("\n", "\x01n").replace("\r", "\x01r"))


def _unescape(value: str) -> str:
    out, i = [], 0
    table = {"1": "\x01", "t": "\t", "n": "\n", "r": "\r", "0": "\0"}
    while i < len(value):
        c = value[i]
        if c == "\x01" and i + 1 < len(value):
            out.append(table.get(value[i + 1], value[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_handshake(lines: list[str]) -> set[str]:
    """Server handshake lines (up to DONE) -> mechanism names; ValueError if bad."""
    mechs: set[str] = set()
    if not lines or not lines[0].startswith("VERSION\t"):
        raise ValueError("no VERSION line")
    fields = lines[0].split("\t")
    if len(fields) < 2 or fields[1] != str(PROTOCOL_MAJOR):
        raise ValueError(f"unsupported protocol version {fields[1:2]}")
    for line in lines[1:]:
        f = line.split("\t")
        if f[0] == "MECH" and len(f) > 1:
            mechs.add(f[1].upper())
    return mechs


def auth_request(req_id: int, creds: Credentials, client: ClientInfo, service: str) -> bytes:
    resp = base64.b64encode(b"\0" + creds.username.encode("utf-8") + b"\0"
                            + creds.password.encode("utf-8", "surrogateescape")).decode("ascii")
    fields = ["AUTH", str(req_id), "PLAIN", f"service={_escape(service)}", "nologin"]
    if client.local_addr:
        fields.append(f"lip={client.local_addr}")
    if client.addr:
        fields.append(f"rip={client.addr}")
    if client.local_port:
        fields.append(f"lport={client.local_port}")
    if client.port:
        fields.append(f"rport={client.port}")
    if client.tls:
        fields.append("secured")
    fields.append(f"resp={resp}")
    return ("\t".join(fields) + "\n").encode("utf-8", "surrogateescape")


def parse_reply(line: str) -> tuple[str, int, dict[str, str]]:
    """"OK\\t1\\tuser=alice" -> ("OK", 1, {"user": "alice"}); ValueError if bad."""
    f = line.split("\t")
    if len(f) < 2 or f[0] not in ("OK", "FAIL", "CONT"):
        raise ValueError(f"unexpected reply: {line[:40]!r}")
    params: dict[str, str] = {}
    for item in f[2:]:
        k, eq, v = item.partition("=")
        params[k] = _unescape(v) if eq else ""
    return f[0], int(f[1]), params


class DovecotAuth:
    name = "dovecot"

    def __init__(self, path: str, timeout: float, service: str = "smtp"):
        self.path = path
        self.timeout = timeout
        self.service = service
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._mechs: set[str] = set()
        self._lock = asyncio.Lock()
        self._waiting: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._reader_task: asyncio.Task | None = None

    def mechanisms(self) -> tuple[str, ...]:
        from smtpd.sasl import MECHANISMS
        return MECHANISMS

    async def _connect(self) -> None:
        if self.path.startswith("inet:"):
            host, _, port = self.path[5:].rpartition(":")
            reader, writer = await asyncio.open_connection(host.strip("[]"), int(port), limit=LINE_LIMIT)
        else:
            reader, writer = await asyncio.open_unix_connection(self.path, limit=LINE_LIMIT)
        try:
            writer.write(f"VERSION\t{PROTOCOL_MAJOR}\t{PROTOCOL_MINOR}\nCPID\t{os.getpid()}\n".encode())
            lines = []
            while True:
                raw = await reader.readline()
                if not raw:
                    raise ConnectionError("connection closed during handshake")
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if line == "DONE":
                    break
                lines.append(line)
            mechs = parse_handshake(lines)
        except BaseException:
            writer.close()
            raise
        self._reader, self._writer, self._mechs = reader, writer, mechs
        self._reader_task = asyncio.get_running_loop().create_task(self._read_replies(reader))

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        error: Exception = ConnectionError("connection closed by the auth server")
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    break
                try:
                    kind, req_id, params = parse_reply(raw.decode("utf-8", "replace").rstrip("\n"))
                except ValueError:
                    continue
                fut = self._waiting.pop(req_id, None)
                if fut is not None and not fut.done():
                    fut.set_result((kind, params))
        except (OSError, ConnectionError, asyncio.LimitOverrunError, ValueError) as e:
            error = e
        finally:
            self._drop()
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(error)
            self._waiting.clear()

    def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def authenticate(self, creds: Credentials, client: ClientInfo) -> AuthResult:
        try:
            async with asyncio.timeout(self.timeout):
                async with self._lock:
                    if self._writer is None or self._writer.is_closing():
                        await self._connect()
                if "PLAIN" not in self._mechs:
                    return AuthResult(TEMP, "the Dovecot auth server does not offer PLAIN")
                self._next_id += 1
                req_id = self._next_id
                fut = asyncio.get_running_loop().create_future()
                self._waiting[req_id] = fut
                self._writer.write(auth_request(req_id, creds, client, self.service))
                kind, params = await fut
        except (OSError, ConnectionError, TimeoutError, ValueError) as e:
            self._drop()
            why = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
            return AuthResult(TEMP, f"cannot connect to the Dovecot auth server: {why}")
        if kind == "OK":
            return AuthResult(OK, username=params.get("user") or creds.username)
        if kind == "CONT":        # PLAIN needs no continuation: a confused server
            return AuthResult(TEMP, "unexpected continuation from the Dovecot auth server")
        reason = params.get("reason") or "authentication failure"
        return AuthResult(TEMP if "temp" in params else FAIL, reason)

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        self._drop()
