"""Helpers shared by the mail-path integration tests.

    text = make_message(token, sender, rcpts, body=b"...")  # headers + body, CRLF
    qid = submit(addr, sender, rcpts, data, ...)      # one SMTP transaction with smtplib;
                                                      # the queue ID from "queued as QID"
    parsed = parse_dsn(message_bytes)                 # email.message.Message tree
    fields = dsn_fields(parsed)                       # (per-message dict, [per-recipient dict])
    daemon_pids(inst, "qmgr")                         # PIDs of master's children running
                                                      # `python -m qmgr` (by /proc, not pkill)
    tokens(sink)                                      # X-Test-Token of every sink message

Nothing here sleeps blindly: waits poll the maillog or the sink with a
deadline and fail with what was seen.
"""
from __future__ import annotations

import email
import email.policy
import os
import re
import smtplib
import time

QUEUED_RE = re.compile(rb"queued as ([0-9A-Za-z]+)")
TOKEN_RE = re.compile(rb"^X-Test-Token: (\S+)\r?$", re.M)


def make_message(token: str, sender: str, rcpts: list[str], body: bytes = b"",
                 subject: str = "test") -> bytes:
    head = (f"From: <{sender}>\r\nTo: {', '.join(f'<{r}>' for r in rcpts)}\r\n"
            f"Subject: {subject} {token}\r\nMessage-ID: <{token}@client.test>\r\n"
            f"X-Test-Token: {token}\r\n\r\n").encode()
    return head + (body or f"body of {token}\r\n".encode())


def submit(addr: tuple[str, int], sender: str, rcpts: list[str], data: bytes, *,
           mail_options: tuple[str, ...] = (), rcpt_options: tuple[str, ...] = (),
           source_address: tuple[str, int] | None = None, timeout: float = 30) -> str:
    """One message over SMTP; returns the queue ID of the 250 reply."""
    with smtplib.SMTP(*addr, timeout=timeout, source_address=source_address) as c:
        return send_on(c, sender, rcpts, data, mail_options=mail_options,
                       rcpt_options=rcpt_options)


def send_on(c: smtplib.SMTP, sender: str, rcpts: list[str], data: bytes, *,
            mail_options=(), rcpt_options=()) -> str:
    c.ehlo_or_helo_if_needed()
    code, resp = c.mail(sender, list(mail_options))
    assert code == 250, (code, resp)
    for r in rcpts:
        code, resp = c.rcpt(r, list(rcpt_options))
        assert code == 250, (r, code, resp)
    code, resp = c.data(data)
    assert code == 250, (code, resp)
    m = QUEUED_RE.search(resp)
    assert m, resp
    return m.group(1).decode()


def parse(data: bytes) -> email.message.Message:
    return email.message_from_bytes(data, policy=email.policy.compat32)


def dsn_fields(msg: email.message.Message) -> tuple[dict, list[dict]]:
    """The message/delivery-status part as (per-message fields, per-recipient fields)."""
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    status = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    assert len(status) == 1, [p.get_content_type() for p in parts]
    blocks = status[0].get_payload()
    # compat32 parses message/delivery-status into a list of header blocks.
    fields = [{k.lower(): " ".join(str(v).split()) for k, v in b.items()} for b in blocks]
    return fields[0], fields[1:]


def children(pid: int) -> set[int]:
    """PIDs whose parent is pid (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def daemon_pids(inst, package: str, service: str | None = None) -> list[int]:
    """Master's children started as `python -I -m <package>` (optionally `-s service`)."""
    master = inst.master_pid()
    assert master, "no master.pid"
    found = []
    for pid in children(master):
        argv = _cmdline(pid)
        if "-m" in argv and argv[argv.index("-m") + 1:argv.index("-m") + 2] == [package]:
            if service is None or ("-s" in argv and argv[argv.index("-s") + 1] == service):
                found.append(pid)
    return sorted(found)


def wait_pids(inst, package: str, service: str | None = None, *, exclude=(),
              timeout: float = 20) -> list[int]:
    """Wait until master runs a process of that package other than `exclude`."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in daemon_pids(inst, package, service) if p not in exclude]
        if pids:
            return pids
        if time.monotonic() > deadline:
            raise AssertionError(f"no {package} process (other than {list(exclude)}) "
                                 f"after {timeout}s")
        time.sleep(0.05)


def tokens(sink) -> list[str]:
    out = []
    for m in list(sink.messages):
        t = TOKEN_RE.search(m.data)
        if t:
            out.append(t.group(1).decode())
    return out


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
