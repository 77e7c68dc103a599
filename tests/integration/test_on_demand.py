"""Services started on demand and retired when idle (master/supervisor.py).

A real Fulmar: at rest only master's always-on daemons run (smtpd, qmgr,
pickup); the first message starts cleanup and smtp, is delivered; a
daemon idle for max_idle exits cleanly (no warning from master) and the
next connection starts a new one.
"""
from __future__ import annotations

import re

from support.mail import children, daemon_pids, make_message, submit, tokens, wait_until
from support.mail import _cmdline

TIMEOUT = 30
MAX_IDLE = 2            # seconds; the parameter's minimum is 1s
FAST = {"default_worker_processes": "1", "max_idle": f"{MAX_IDLE}s"}
ALWAYS_ON = {"smtpd", "qmgr", "cleanup.pickup"}


def _packages(inst) -> list[str]:
    found = []
    for pid in children(inst.master_pid()):
        argv = _cmdline(pid)
        if "-m" in argv:
            found.append(argv[argv.index("-m") + 1])
    return sorted(found)


def _send(inst, sink, token: str, count: int) -> None:
    data = make_message(token, "sender@a.test", ["rcpt@nomx.test"])
    submit(inst.smtp_addr, "sender@a.test", ["rcpt@nomx.test"], data)
    wait_until(lambda: token in tokens(sink), TIMEOUT, f"{token} at the sink")
    assert len(sink.messages) == count


def test_idle_instance_starts_services_on_demand(dns_server, alloc, smtp_sink, fulmar_instance):
    host = dns_server.hosts["nomx.test"]
    port = alloc.port(host)
    sink = smtp_sink(host=host, port=port)
    inst = fulmar_instance("a", main_cf={"smtp_tcp_port": str(port), **FAST})
    assert set(_packages(inst)) == ALWAYS_ON, _packages(inst)

    _send(inst, sink, "ondemand1", 1)
    (smtp,) = daemon_pids(inst, "smtp_client", "smtp")
    assert daemon_pids(inst, "cleanup")

    # Idle for max_idle: smtp (and later cleanup, once smtpd's pooled
    # channel to it has idled out too) exits by itself.
    wait_until(lambda: not daemon_pids(inst, "smtp_client"), 5 * MAX_IDLE + TIMEOUT,
               "smtp to exit when idle")
    wait_until(lambda: set(_packages(inst)) == ALWAYS_ON, 5 * MAX_IDLE + TIMEOUT,
               "only the always-on daemons")

    # The next message starts them again and is delivered.
    _send(inst, sink, "ondemand2", 2)
    (again,) = daemon_pids(inst, "smtp_client", "smtp")
    assert again != smtp
    log = inst.log_text()
    # idle exits are not crashes: no `process ... exit status`, no throttling
    assert not re.search(r"postfix/master\[\d+\]: warning: (process|.*throttling)", log), log
    assert not re.search(r"(panic|fatal):", log), log
    inst.wait_log(r"postfix/qmgr\[\d+\]: \w+: removed$", count=2)
