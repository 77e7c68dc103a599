"""Which program runs a master.cf service, how many of them, and with what argv.

Pure functions; the supervisor does the I/O.

master.cf's command column names a Postfix program (`smtpd`, `qmgr`, ...).
Fulmar implements each as a Python package started with
`sys.executable -I -m <package>`; COMMAND_PACKAGES is the map.  A command
that is not in the map, or whose package (or its `__main__`) is not
installed, is "not implemented": master logs that once per configuration
load and skips the service (no listener is bound for it, so clients see a
refusal rather than a hang).

Test hook (Fulmar only, not Postfix): the environment variable
FULMAR_EXTRA_COMMANDS, read by master alone, adds commands:
`name=module[,name=/abs/path/script.py]...`.  A value ending in `.py` is
run as a script (`python -I path`), anything else as a module.  The
integration tests use it to run a throwaway daemon; it is never needed in
production and is not passed to the daemons.

Worker count (documented in docs/master.md): a Fulmar worker serves many
connections at once, so Postfix's maxproc (a limit on single-connection
processes) becomes an upper bound on processes:

    limit   = maxproc, or default_process_limit when the column is "-"
    workers = default_worker_processes (0: one per two CPUs, at least one)
    count   = max(1, min(limit, workers))      (limit 0 means "no limit")

so `qmgr ... 1 qmgr` gets exactly one process and `smtp inet ... - smtpd`
one per two CPUs: the other half run cleanup, qmgr and the delivery
agents, and every worker of a service is woken by each new connection
(docs/performance.md: on 2 CPUs one smtpd beat two in every workload).

On demand (is_on_demand): a `unix` service whose wakeup column is 0 and
whose daemon implements idle exit (ON_DEMAND_COMMANDS: cleanup, bounce,
the delivery agents) is not started with master: master watches its
socket and starts one process when a client connects; the process exits
by itself after `max_idle` without connections.  qmgr and every service
with a wakeup time are always on, as in Postfix; so is smtpd (inet) and
any command not in the set (a daemon that never idles out).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Callable, Mapping

# master.cf command -> Python package (docs/internals.md "Package map").
COMMAND_PACKAGES: dict[str, str] = {
    "smtpd": "smtpd",
    "cleanup": "cleanup",
    "qmgr": "qmgr",
    "oqmgr": "qmgr",
    "smtp": "smtp_client",
    "lmtp": "smtp_client",
    "bounce": "bounce",
    "defer": "bounce",
    "trace": "bounce",
    "local": "local",
    "virtual": "local",
    "error": "local.error",
    "pickup": "cleanup.pickup",
}

# Postfix programs whose work Fulmar does inside other processes (address
# rewriting in cleanup/qmgr, TLS session caches in each daemon, connection
# caching in the smtp client, mailq reading the queue directly...). The
# stock master.cf lists them; master skips them without a warning.
BUILTIN_COMMANDS = frozenset({
    "tlsmgr", "trivial-rewrite", "verify", "flush", "proxymap", "showq",
    "anvil", "scache", "postlogd", "tlsproxy", "dnsblog", "postscreen",
})

# Commands whose Fulmar daemons exit after max_idle without connections
# (fulmar/daemon.py Context.exit_when_idle), so master may start them on
# demand.  qmgr/oqmgr and pickup are deliberately absent: always on.
ON_DEMAND_COMMANDS = frozenset({
    "cleanup", "bounce", "defer", "trace", "smtp", "lmtp", "local", "virtual", "error",
})
ON_DEMAND_TYPES = ("unix",)

EXTRA_COMMANDS_ENV = "FULMAR_EXTRA_COMMANDS"
SCRIPT_SUFFIX = ".py"

# The service types master can give a daemon.  "pass" needs descriptor
# passing, which Fulmar's IPC does not do (DESIGN.md "IPC").
SUPPORTED_TYPES = ("inet", "unix", "unix-dgram", "fifo")


@dataclass(frozen=True)
class Program:
    """How to start one master.cf command."""
    command: str
    module: str | None = None
    script: str | None = None

    def argv_prefix(self, python: str) -> list[str]:
        if self.script is not None:
            return [python, "-I", self.script]
        return [python, "-I", "-m", self.module]


def parse_extra_commands(text: str | None) -> dict[str, str]:
    """Parse FULMAR_EXTRA_COMMANDS; malformed items raise ValueError."""
    result: dict[str, str] = {}
    if not text:
        return result
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, target = item.partition("=")
        name, target = name.strip(), target.strip()
        if not sep or not name or not target:
            raise ValueError(f"{EXTRA_COMMANDS_ENV}: bad item {item!r}: expected name=module")
        result[name] = target
    return result


def resolve_program(command: str, extra: Mapping[str, str] | None = None) -> Program | None:
    """The Program for a master.cf command, or None when Fulmar has none."""
    target = (extra or {}).get(command)
    if target is not None:
        if target.endswith(SCRIPT_SUFFIX):
            return Program(command, script=target)
        return Program(command, module=target)
    module = COMMAND_PACKAGES.get(command)
    if module is None:
        return None
    return Program(command, module=module)


def is_runnable(program: Program,
                find_spec: Callable = importlib.util.find_spec,
                exists: Callable[[str], bool] = os.path.isfile) -> bool:
    """True when `python -m module` (or the script) would find something to run."""
    if program.script is not None:
        return exists(program.script)
    try:
        spec = find_spec(program.module)
        if spec is None:
            return False
        if spec.submodule_search_locations is not None:   # a package: needs __main__
            return find_spec(program.module + ".__main__") is not None
        return True
    except (ImportError, ValueError):
        return False


def worker_count(maxproc: int | None, default_process_limit: int,
                 worker_processes: int, cpu_count: int | None) -> int:
    """Processes to run for one service (see the module docstring)."""
    limit = default_process_limit if maxproc is None else maxproc
    workers = worker_processes if worker_processes > 0 else (cpu_count or 1) // 2
    if limit > 0:
        workers = min(workers, limit)
    return max(1, workers)


def is_solitary(maxproc: int | None) -> bool:
    """A service that must never run two processes at once, even briefly.

    maxproc 1 (qmgr, pickup) means "one process owns this job"; on reload
    the old one must exit before the new one starts.
    """
    return maxproc == 1


def is_on_demand(service_type: str, command: str, wakeup: str,
                 extra: Mapping[str, str] | None = None) -> bool:
    """True for a service master starts on the first connection (module docstring)."""
    if service_type not in ON_DEMAND_TYPES or command in (extra or {}):
        return False
    if command not in ON_DEMAND_COMMANDS:
        return False
    return wakeup.rstrip("?") in ("", "0", "-")


def daemon_argv(program: Program, python: str, config_dir: str, service_name: str,
                service_type: str, overrides: Mapping[str, str], args: list[str]) -> list[str]:
    """The argv for one daemon process (docs/internals.md "Starting a daemon")."""
    argv = program.argv_prefix(python)
    argv += ["-c", config_dir, "-s", service_name, "-t", service_type]
    for name, value in overrides.items():
        argv += ["-o", f"{name}={value}"]
    argv += list(args)
    return argv


def program_path(daemon_directory: str, command: str) -> str:
    """The name Postfix logs for a daemon: $daemon_directory/command."""
    return os.path.join(daemon_directory, command)


def unix_socket_path(queue_dir: str, service_name: str, private: bool) -> str:
    """$queue_directory/private/NAME, or public/NAME when master.cf says private=n."""
    return os.path.join(queue_dir, "private" if private else "public", service_name)


IMPORTED_ENV_DEFAULT = ("MAIL_CONFIG", "MAIL_DEBUG", "MAIL_LOGTAG", "TZ",
                        "XAUTHORITY", "DISPLAY", "LANG=C")


def daemon_environment(import_environment: list[str], environ: Mapping[str, str]) -> dict[str, str]:
    """Postfix's import_environment: `NAME` copies a variable, `NAME=value` sets it."""
    env: dict[str, str] = {}
    for item in import_environment:
        name, sep, value = item.partition("=")
        if sep:
            env[name] = value
        elif name in environ:
            env[name] = environ[name]
    return env
