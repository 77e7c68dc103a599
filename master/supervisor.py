"""master: owns the listening sockets and keeps the daemons running.

    m = Master(config_dir, detach=False)
    m.start()          # config, queue layout, lock, listeners; raises MasterFatal
    m.run() -> int     # event loop until stopped; 0

Start-up, in Postfix's order: read main.cf and master.cf (a bad file is
fatal, `path:line: what`), check mail_owner when root, create a missing
queue layout, take the lock on `$queue_directory/pid/master.pid` (a second
master fails with `fatal: open lock file ...: unable to set exclusive
lock: ...`) and write the PID, bind every listener, log `daemon started --
version V, configuration DIR`, start the workers of every always-on service.

On-demand services (master/services.py is_on_demand: cleanup, bounce, the
delivery agents, as Postfix's master does for its unix services) start with
no process: while such a service has no live worker, master watches its
listening socket(s) for readability; the first client's connect completes
into the listen backlog, master starts one worker (FULMAR_IDLE_EXIT=1 in
its environment) and stops watching.  The worker accepts, serves, and after
`max_idle` without connections closes its listener copy and exits 0
(fulmar/daemon.py); master does not restart it but watches again.  The
listening socket stays open in master throughout, so a client connecting
while a worker is exiting waits in the backlog and wakes master once the
worker is gone.  A crashed on-demand worker (killed, or a non-zero exit
after a healthy start) is logged and replaced at once, as an always-on one
is; the replacement idles out in turn.  With `-w` (used by
`postfix start`) master then points its stdio at /dev/null, so that the
caller's terminal or pipe is not held open by the daemons.

Readiness: when FULMAR_STATUS_FD is in master's environment (set by
`postfix start`), master writes b"R" on it once every always-on service
has all its workers ready or is throttled, or after STARTUP_READY_WAIT at
most.

Daemons: `python -I -m <package> -c DIR -s NAME -t TYPE [-o name=value]...
[args]` (docs/internals.md "Starting a daemon"), listeners inherited and
named in FULMAR_LISTEN_FDS, a fresh pipe in FULMAR_STATUS_FD, environment
limited to `import_environment`, cwd the queue directory.  How many per
service: master/services.py.  Exits: master/throttle.py -- a daemon that
dies is restarted, one that cannot start throttles its service for
`service_throttle_time` with Postfix's two warnings.

Signals:
* SIGHUP: reload.  Logs `reload -- version V, configuration DIR`, re-reads
  both files and binds any new listener *before* touching anything; on any
  error it logs it and keeps the running configuration.  Listeners whose
  address is unchanged stay open (the same socket), so the kernel keeps
  accepting connections throughout.  Each service gets a new generation of
  workers; the old generation gets SIGTERM (finish in-flight work, then
  exit) once the new one is ready, or after STARTUP_READY_WAIT; an
  on-demand service's old workers get it at once.  Solitary
  services (maxproc 1: qmgr, pickup) are swapped the other way round: the
  old process exits first.  Removed services are stopped, their listeners
  closed.
* SIGTERM, SIGINT: graceful stop.  Logs `terminating on signal N`, closes
  master's copies of the listeners, SIGTERMs every daemon, SIGKILLs any
  still alive after `service_stop_timeout`, then exits 0.
* SIGQUIT (`postfix abort`): SIGKILL every daemon and exit at once.
Every daemon that does not exit within `service_stop_timeout` of being
told to stop (stop or reload) is killed and logged.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from fulmar import config, log
from fulmar.config.mastercf import parse_master_cf
from fulmar.queue import layout
from fulmar.version import MAIL_VERSION

from master import listen, pidfile, privilege, services
from master.throttle import ExitKind, Throttle, classify_exit, describe_exit

LISTEN_FDS_ENV = "FULMAR_LISTEN_FDS"
STATUS_FD_ENV = "FULMAR_STATUS_FD"
IDLE_EXIT_ENV = "FULMAR_IDLE_EXIT"
READY_BYTE = b"R"
STATUS_READ_SIZE = 64
MASTER_CF = "master.cf"
MAIN_CF = "main.cf"
PROCESS_NAME = "master"

# How long master waits for a new generation of workers to report ready:
# before telling `postfix start` it is up, and before retiring the previous
# generation on reload even if the new one is not (yet) ready.  A healthy
# Python daemon is ready in well under a second; a slow one must not hold
# up start-up for ever.
STARTUP_READY_WAIT = 10.0

# Fulmar parameters master owns; they are declared in fulmar/config/params.py.
# XXX The fallbacks keep master working against a registry that lacks them.
PARAM_FALLBACKS = {
    "default_worker_processes": 0,       # 0: one per two CPUs
    "service_stop_timeout": 30,          # seconds
}


class MasterFatal(Exception):
    """str() is the text after `fatal: `; master exits 1."""


def _param(cfg, name):
    try:
        return cfg.get(name)
    except (LookupError, config.ConfigError):
        if name in PARAM_FALLBACKS:
            return PARAM_FALLBACKS[name]
        raise


def _as_list(value) -> list[str]:
    if isinstance(value, str):
        return [v for v in value.replace(",", " ").split() if v]
    return list(value)


@dataclass
class Settings:
    """The configuration values master itself uses."""
    config_dir: str
    queue_dir: str
    main_cf: str
    owner: tuple[int, int] | None      # (uid, gid) of mail_owner when root, else None
    setgid_gid: int | None
    default_process_limit: int
    worker_processes: int
    throttle_time: float
    stop_timeout: float
    daemon_directory: str
    env: dict[str, str]
    inet_interfaces: list[str]
    inet_protocols: list[str]

    @classmethod
    def from_config(cls, cfg, environ) -> "Settings":
        main_cf = os.path.join(cfg.config_dir, MAIN_CF)
        try:
            owner = privilege.queue_owner(str(cfg.get("mail_owner")), main_cf)
            group = privilege.setgid_gid(str(cfg.get("setgid_group")), main_cf)
        except privilege.PrivilegeError as e:
            raise MasterFatal(str(e)) from None
        try:
            imported = _as_list(cfg.get("import_environment"))
        except (LookupError, config.ConfigError):
            imported = list(services.IMPORTED_ENV_DEFAULT)
        return cls(
            config_dir=cfg.config_dir,
            queue_dir=str(cfg.get("queue_directory")),
            main_cf=main_cf,
            owner=owner, setgid_gid=group,
            default_process_limit=int(cfg.get("default_process_limit")),
            worker_processes=int(_param(cfg, "default_worker_processes")),
            throttle_time=float(cfg.get("service_throttle_time")),
            stop_timeout=float(_param(cfg, "service_stop_timeout")),
            daemon_directory=str(cfg.get("daemon_directory")),
            env=services.daemon_environment(imported, environ),
            inet_interfaces=_as_list(cfg.get("inet_interfaces")),
            inet_protocols=_as_list(cfg.get("inet_protocols")),
        )


@dataclass
class ServicePlan:
    """One master.cf service, resolved: what to run and where it listens."""
    key: tuple[str, str]
    name: str
    type: str
    argv: list[str]
    path: str                     # $daemon_directory/command, for log lines
    target: int
    solitary: bool
    backlog: int
    on_demand: bool
    listeners: list[tuple]        # ("inet", Endpoint) | ("unix", path, sock_type)


@dataclass(eq=False)
class ServiceRuntime:
    plan: ServicePlan
    sockets: list[socket.socket]
    generation: int
    throttle: Throttle
    timer: asyncio.TimerHandle | None = None
    watching: bool = False        # on demand: master polls the sockets


@dataclass(eq=False)
class Worker:
    proc: subprocess.Popen
    key: tuple[str, str]
    path: str
    generation: int
    started: float
    status_fd: int | None
    ready_at: float | None = None
    stopping: bool = False
    kill_timer: asyncio.TimerHandle | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid


class Master:
    def __init__(self, config_dir: str | None, detach: bool = False,
                 environ: dict[str, str] | None = None, python: str = sys.executable,
                 clock=time.monotonic) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.config_dir = config_dir
        self.detach = detach
        self.python = python
        self.clock = clock
        self.services: dict[tuple[str, str], ServiceRuntime] = {}
        self.workers: dict[int, Worker] = {}
        self.lock_fd: int | None = None
        self.stopping = False
        self.logging = False
        self.parent_status_fd = self._take_parent_status_fd()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.done: asyncio.Future | None = None
        self.startup_deadline = 0.0
        self.handover_timer: asyncio.TimerHandle | None = None
        try:
            self.extra = services.parse_extra_commands(self.environ.get(services.EXTRA_COMMANDS_ENV))
        except ValueError as e:
            raise MasterFatal(str(e)) from None

    def _take_parent_status_fd(self) -> int | None:
        value = self.environ.pop(STATUS_FD_ENV, None)
        os.environ.pop(STATUS_FD_ENV, None)
        if value is None or not value.isdigit():
            return None
        return int(value)

    # ---- configuration -------------------------------------------------

    def _load(self):
        """Read main.cf and master.cf; MasterFatal on any error."""
        try:
            cfg = config.load(self.config_dir)
            specs = parse_master_cf(os.path.join(cfg.config_dir, MASTER_CF))
        except config.ConfigError as e:
            raise MasterFatal(str(e)) from None
        except OSError as e:
            raise MasterFatal(f"{e.filename}: {e.strerror}") from None
        settings = Settings.from_config(cfg, self.environ)
        return cfg, specs, settings

    def _plan(self, specs, settings: Settings) -> list[ServicePlan]:
        plans: list[ServicePlan] = []
        seen: set[tuple[str, str]] = set()
        ipv6 = listen.ipv6_available()
        for spec in specs:
            key = (spec.name, spec.type)
            if key in seen:
                self._warn("%s: line %s: duplicate service name %s.%s, skipped",
                           getattr(spec, "path", MASTER_CF), getattr(spec, "lineno", "?"),
                           spec.name, spec.type)
                continue
            seen.add(key)
            if spec.type not in services.SUPPORTED_TYPES:
                self._warn("service %s: type %s is not supported, skipped", spec.name, spec.type)
                continue
            program = services.resolve_program(spec.command, self.extra)
            if program is None or not services.is_runnable(program):
                if spec.command not in services.BUILTIN_COMMANDS:
                    self._warn("service %s: command %s is not implemented, skipped",
                               spec.name, spec.command)
                continue
            try:
                listeners = self._listener_keys(spec, settings, ipv6)
            except (ValueError, OSError) as e:
                raise MasterFatal(f"service {spec.name}: {e}") from None
            if not listeners:
                self._warn("service %s: no address to listen on, skipped", spec.name)
                continue
            plans.append(ServicePlan(
                key=key, name=spec.name, type=spec.type,
                argv=services.daemon_argv(program, self.python, settings.config_dir, spec.name,
                                          spec.type, dict(spec.overrides), list(spec.args)),
                path=services.program_path(settings.daemon_directory, spec.command),
                target=services.worker_count(spec.maxproc, settings.default_process_limit,
                                             settings.worker_processes, os.cpu_count()),
                solitary=services.is_solitary(spec.maxproc),
                on_demand=services.is_on_demand(spec.type, spec.command,
                                                str(getattr(spec, "wakeup", "0")), self.extra),
                backlog=listen.listen_backlog(spec.maxproc, settings.default_process_limit),
                listeners=listeners))
        return plans

    def _listener_keys(self, spec, settings: Settings, ipv6: bool) -> list[tuple]:
        if spec.type == "inet":
            host, port = spec.host, spec.port
            if port is None:                      # tolerate a reader that does not split
                host, sep, port = spec.name.rpartition(":")
                host = host if sep else None
            if host == "*":
                host = None
            return [("inet", ep) for ep in listen.inet_endpoints(
                host, str(port), settings.inet_interfaces, settings.inet_protocols, ipv6)]
        path = services.unix_socket_path(settings.queue_dir, spec.name, spec.private)
        kind = socket.SOCK_DGRAM if spec.type == "unix-dgram" else socket.SOCK_STREAM
        return [("unix", path, kind)]

    def _open_listeners(self, plans: list[ServicePlan], pool: dict[tuple, socket.socket]):
        """Sockets for every plan, reusing pool's; all-or-nothing (MasterFatal)."""
        fresh: list[tuple[tuple, socket.socket]] = []
        result: dict[tuple[str, str], list[socket.socket]] = {}
        try:
            for plan in plans:
                socks = []
                for key in plan.listeners:
                    sock = pool.get(key)
                    if sock is None:
                        sock = self._bind(key, plan.backlog)
                        fresh.append((key, sock))
                    elif key[0] == "inet" or key[2] == socket.SOCK_STREAM:
                        sock.listen(plan.backlog)
                    socks.append(sock)
                result[plan.key] = socks
        except OSError as e:
            for _key, sock in fresh:
                sock.close()
            raise MasterFatal(self._bind_error(e)) from None
        return result

    @staticmethod
    def _bind(key: tuple, backlog: int) -> socket.socket:
        try:
            if key[0] == "inet":
                return listen.bind_inet(key[1], backlog)
            return listen.bind_unix(key[1], backlog, key[2])
        except OSError as e:
            e.listener = key
            raise

    @staticmethod
    def _bind_error(e: OSError) -> str:
        key = getattr(e, "listener", None)
        reason = e.strerror or str(e)
        if key is None:
            return reason
        if key[0] == "inet":
            return f"bind {key[1].host} port {key[1].port}: {reason}"
        return f"bind {key[1]}: {reason}"

    # ---- start-up --------------------------------------------------------

    def start(self) -> None:
        cfg, specs, settings = self._load()
        log.setup(cfg, PROCESS_NAME)
        self.logging = True
        try:
            layout.configure(cfg)
            if settings.owner is None:
                layout.create(settings.queue_dir)
            else:
                layout.create(settings.queue_dir, *settings.owner, settings.setgid_gid)
            os.makedirs(os.path.dirname(pidfile.pid_path(settings.queue_dir)), exist_ok=True)
            os.chdir(settings.queue_dir)
        except OSError as e:
            raise MasterFatal(f"queue directory {settings.queue_dir}: {e.strerror or e}") from None
        try:
            self.lock_fd = pidfile.acquire(pidfile.pid_path(settings.queue_dir))
        except pidfile.Locked as e:
            raise MasterFatal(str(e)) from None
        except OSError as e:
            raise MasterFatal(f"open lock file {pidfile.pid_path(settings.queue_dir)}: "
                              f"{e.strerror}") from None
        pidfile.write_pid(self.lock_fd, os.getpid())
        self.settings = settings
        plans = self._plan(specs, settings)
        sockets = self._open_listeners(plans, {})
        self.services = {p.key: ServiceRuntime(p, sockets[p.key], 1, Throttle(self.clock))
                         for p in plans}
        log.info("daemon started -- version %s, configuration %s", MAIL_VERSION,
                 settings.config_dir)
        self._warn_unimplemented(cfg, specs)
        if self.detach:
            self._detach_stdio()

    @staticmethod
    def _detach_stdio() -> None:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)

    def run(self) -> int:
        try:
            asyncio.run(self._serve())
        finally:
            self.release()
        return 0

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.done = self.loop.create_future()
        self.loop.add_signal_handler(signal.SIGCHLD, self._reap)
        self.loop.add_signal_handler(signal.SIGHUP, self._reload)
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, self._stop, signum)
        self.loop.add_signal_handler(signal.SIGQUIT, self._abort, signal.SIGQUIT)
        self.startup_deadline = self.clock() + STARTUP_READY_WAIT
        if self.parent_status_fd is not None:
            self.loop.call_later(STARTUP_READY_WAIT, self._report_ready, True)
        for rt in self.services.values():
            self._reconcile(rt)
        self._report_ready()
        self._reap()              # a child that died before the handler was installed
        await self.done

    def _report_ready(self, force: bool = False) -> None:
        if self.parent_status_fd is None:
            return
        if not force:
            for rt in self.services.values():
                if rt.throttle.active() or rt.plan.on_demand:
                    continue
                ready = [w for w in self._current(rt) if w.ready_at is not None]
                if len(ready) < rt.plan.target:
                    return
        try:
            os.write(self.parent_status_fd, READY_BYTE)
        except OSError:
            pass                  # the waiting `postfix start` is gone: nothing to tell
        os.close(self.parent_status_fd)
        self.parent_status_fd = None

    # ---- workers ---------------------------------------------------------

    def _current(self, rt: ServiceRuntime) -> list[Worker]:
        return [w for w in self.workers.values()
                if w.key == rt.plan.key and w.generation == rt.generation and not w.stopping]

    def _reconcile(self, rt: ServiceRuntime) -> None:
        if self.stopping or self.services.get(rt.plan.key) is not rt:
            return
        if rt.throttle.active():
            if rt.timer is None:
                rt.timer = self.loop.call_later(rt.throttle.remaining(), self._unthrottle, rt)
            return
        if rt.plan.solitary and any(w.key == rt.plan.key and w.generation != rt.generation
                                    for w in self.workers.values()):
            return                # the previous generation's process is still finishing
        if rt.plan.on_demand:
            if self._current(rt):
                self._unwatch(rt)
            else:
                self._watch(rt)
            return
        for _ in range(rt.plan.target - len(self._current(rt))):
            if not self._spawn(rt):
                break

    def _watch(self, rt: ServiceRuntime) -> None:
        """Start one worker when a client connects (on-demand services)."""
        if rt.watching:
            return
        rt.watching = True
        for sock in rt.sockets:
            self.loop.add_reader(sock.fileno(), self._on_demand, rt)

    def _unwatch(self, rt: ServiceRuntime) -> None:
        if not rt.watching:
            return
        rt.watching = False
        for sock in rt.sockets:
            if sock.fileno() >= 0:
                self.loop.remove_reader(sock.fileno())

    def _on_demand(self, rt: ServiceRuntime) -> None:
        # The connection stays in the backlog for the worker to accept.
        self._unwatch(rt)
        if self.stopping or self.services.get(rt.plan.key) is not rt:
            return
        if not self._current(rt):
            self._spawn(rt)
        self._reconcile(rt)

    def _unthrottle(self, rt: ServiceRuntime) -> None:
        rt.timer = None
        rt.throttle.clear()
        self._reconcile(rt)

    def _spawn(self, rt: ServiceRuntime) -> bool:
        fds = [s.fileno() for s in rt.sockets]
        read_fd, write_fd = os.pipe()
        env = dict(self.settings.env)
        env[LISTEN_FDS_ENV] = ",".join(str(fd) for fd in fds)
        env[STATUS_FD_ENV] = str(write_fd)
        if rt.plan.on_demand:
            env[IDLE_EXIT_ENV] = "1"
        try:
            proc = subprocess.Popen(rt.plan.argv, pass_fds=(*fds, write_fd), env=env,
                                    stdin=subprocess.DEVNULL, close_fds=True,
                                    cwd=self.settings.queue_dir)
        except OSError as e:
            os.close(read_fd)
            log.warning("%s: cannot start: %s -- throttling", rt.plan.path, e.strerror or e)
            rt.throttle.throttle(self.settings.throttle_time)
            self._reconcile(rt)
            return False
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        worker = Worker(proc, rt.plan.key, rt.plan.path, rt.generation, self.clock(), read_fd)
        self.workers[proc.pid] = worker
        self.loop.add_reader(read_fd, self._on_status, worker)
        return True

    def _on_status(self, worker: Worker) -> None:
        self._read_status(worker)
        if worker.ready_at is not None:
            self._on_ready(worker)

    def _read_status(self, worker: Worker) -> None:
        while worker.status_fd is not None:
            try:
                data = os.read(worker.status_fd, STATUS_READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close_status(worker)
                return
            if READY_BYTE in data and worker.ready_at is None:
                worker.ready_at = self.clock()

    def _close_status(self, worker: Worker) -> None:
        if worker.status_fd is not None:
            self.loop.remove_reader(worker.status_fd)
            os.close(worker.status_fd)
            worker.status_fd = None

    def _on_ready(self, worker: Worker) -> None:
        rt = self.services.get(worker.key)
        if rt is not None and worker.generation == rt.generation:
            ready = [w for w in self._current(rt) if w.ready_at is not None]
            if len(ready) >= rt.plan.target:
                self._retire_old(rt.plan.key, rt.generation)
        self._report_ready()

    def _retire_old(self, key, generation) -> None:
        for w in list(self.workers.values()):
            if w.key == key and w.generation < generation:
                self._retire(w)

    def _retire(self, worker: Worker) -> None:
        if worker.stopping:
            return
        worker.stopping = True
        try:
            worker.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        worker.kill_timer = self.loop.call_later(self.settings.stop_timeout, self._kill, worker)

    def _kill(self, worker: Worker) -> None:
        worker.kill_timer = None
        if worker.pid in self.workers and worker.proc.returncode is None:
            log.warning("process %s pid %d did not terminate in %d seconds -- killing",
                        worker.path, worker.pid, self.settings.stop_timeout)
            try:
                worker.proc.kill()
            except ProcessLookupError:
                pass

    def _reap(self) -> None:
        for worker in list(self.workers.values()):
            returncode = worker.proc.poll()
            if returncode is not None:
                self._exited(worker, returncode)
        if self.stopping and not self.workers:
            self._finish()

    def _exited(self, worker: Worker, returncode: int) -> None:
        del self.workers[worker.pid]
        self._read_status(worker)          # a ready byte written just before dying
        self._close_status(worker)
        if worker.kill_timer is not None:
            worker.kill_timer.cancel()
        ready_for = None if worker.ready_at is None else self.clock() - worker.ready_at
        kind = classify_exit(returncode, worker.stopping, ready_for)
        if kind is not ExitKind.RETIRED and returncode != 0:
            log.warning("process %s pid %d %s", worker.path, worker.pid, describe_exit(returncode))
        rt = self.services.get(worker.key)
        if rt is None or self.stopping:
            return
        if kind is ExitKind.BAD_STARTUP and worker.generation == rt.generation \
                and not rt.throttle.active():
            log.warning("%s: bad command startup -- throttling", worker.path)
            rt.throttle.throttle(self.settings.throttle_time)
        if kind is ExitKind.CRASHED and rt.plan.on_demand and worker.generation == rt.generation \
                and not self._current(rt) and not rt.throttle.active():
            # A crash, unlike an idle exit, is replaced at once, as for
            # always-on services: its clients are about to reconnect.
            self._unwatch(rt)
            self._spawn(rt)
        self._reconcile(rt)
        self._report_ready()

    # ---- signals ---------------------------------------------------------

    def _reload(self) -> None:
        if self.stopping:
            return
        log.info("reload -- version %s, configuration %s", MAIL_VERSION, self.settings.config_dir)
        pool = {key: sock for rt in self.services.values()
                for key, sock in zip(rt.plan.listeners, rt.sockets)}
        try:
            cfg, specs, settings = self._load()
            if settings.queue_dir != self.settings.queue_dir:
                raise MasterFatal("parameter queue_directory: cannot be changed by a reload")
            plans = self._plan(specs, settings)
            sockets = self._open_listeners(plans, pool)
        except MasterFatal as e:
            log.error("%s -- keeping the current configuration", e)
            return
        log.setup(cfg, PROCESS_NAME)
        self._warn_unimplemented(cfg, specs)
        self.settings = settings
        for rt in self.services.values():
            self._unwatch(rt)
        kept = {id(s) for socks in sockets.values() for s in socks}
        paths = {key[1] for plan in plans for key in plan.listeners if key[0] == "unix"}
        for key, sock in pool.items():
            if id(sock) not in kept:
                sock.close()
                if key[0] == "unix" and key[1] not in paths:
                    self._unlink(key[1])
        old = self.services
        for rt in old.values():
            if rt.timer is not None:
                rt.timer.cancel()
        self.services = {}
        for plan in plans:
            prev = old.get(plan.key)
            generation = prev.generation + 1 if prev is not None else 1
            self.services[plan.key] = ServiceRuntime(plan, sockets[plan.key], generation,
                                                     Throttle(self.clock))
        for worker in list(self.workers.values()):
            rt = self.services.get(worker.key)
            # On-demand services: the new generation starts with the next
            # client, so nothing would ever be "ready" to hand over to.
            if rt is None or rt.plan.solitary or rt.plan.on_demand:
                self._retire(worker)
        for rt in self.services.values():
            self._reconcile(rt)
        if self.handover_timer is not None:
            self.handover_timer.cancel()
        self.handover_timer = self.loop.call_later(STARTUP_READY_WAIT, self._retire_all_old)

    def _retire_all_old(self) -> None:
        self.handover_timer = None
        for rt in self.services.values():
            self._retire_old(rt.plan.key, rt.generation)

    @staticmethod
    def _unlink(path: str) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass

    def _stop(self, signum: int) -> None:
        if self.stopping:
            return
        log.info("terminating on signal %d", signum)
        self.stopping = True
        self._close_all_listeners()
        for worker in list(self.workers.values()):
            self._retire(worker)
        self._reap()

    def _abort(self, signum: int) -> None:
        log.info("terminating on signal %d", signum)
        self.stopping = True
        self._close_all_listeners()
        for worker in list(self.workers.values()):
            try:
                worker.proc.kill()
            except ProcessLookupError:
                pass
        for worker in list(self.workers.values()):
            try:
                worker.proc.wait(timeout=self.settings.stop_timeout)
            except subprocess.TimeoutExpired:
                pass
        self._finish()

    def _close_all_listeners(self) -> None:
        # Master's copies only: the daemons close theirs as they stop, and
        # the kernel refuses new connections once the last copy is gone.
        for rt in self.services.values():
            self._unwatch(rt)
            if rt.timer is not None:
                rt.timer.cancel()
                rt.timer = None
            for sock in rt.sockets:
                sock.close()
        if self.handover_timer is not None:
            self.handover_timer.cancel()
            self.handover_timer = None

    def _finish(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def release(self) -> None:
        if self.parent_status_fd is not None:
            os.close(self.parent_status_fd)
            self.parent_status_fd = None
        if self.lock_fd is not None:
            os.close(self.lock_fd)       # drops the lock: `postfix status` says "not running"
            self.lock_fd = None

    # ---- logging -----------------------------------------------------------

    def _warn_unimplemented(self, cfg, specs) -> None:
        """Settings Fulmar accepts and ignores (params.NOT_IMPLEMENTED): an
        admin who moved a main.cf with header_checks or a milter must hear
        that they do nothing, once per start or reload."""
        for text in config.unimplemented(cfg, specs):
            self._warn("%s", text)

    def _warn(self, fmt: str, *args) -> None:
        if self.logging:
            log.warning(fmt, *args)
        else:
            sys.stderr.write("postfix/master: warning: " + (fmt % args) + "\n")


__all__ = ["Master", "MasterFatal", "STARTUP_READY_WAIT", "LISTEN_FDS_ENV", "STATUS_FD_ENV"]
