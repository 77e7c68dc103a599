"""The skeleton every Fulmar daemon runs in.

NAME
    fulmar.daemon - argv, configuration, logging, sockets, signals, privileges

SYNOPSIS
    from fulmar import daemon
    async def serve(ctx: daemon.Context) -> None: ...  # returns when
                                                       # ctx.stopping is set
                                                       # and work is done
    if __name__ == "__main__":
        daemon.main("smtpd", serve)          # local: keep_root=True

DESCRIPTION
    master starts a daemon as

        python -I -m PACKAGE -c CONFIG_DIR -s SERVICE -t TYPE [-o name=value]... [-v]

    with its listening sockets inherited and named by FULMAR_LISTEN_FDS
    ("3,4"), and FULMAR_STATUS_FD naming a pipe.  main() then

    1. checks the Python version (fulmar.version.require_python);
    2. parses argv (-c config directory, -s master.cf service name, -t
       service type, -o overrides, -v verbose: each -v adds one level);
    3. loads the configuration and applies the -o overrides;
    4. sets up logging with tag $syslog_name/<process_name>;
    5. takes the inherited sockets (non-blocking, not inherited further)
       and the status descriptor, and removes both variables from the
       environment;
    6. when running as root, checks mail_owner (it must exist and must not
       be root) and switches to it (setgroups, setgid, setuid), unless
       keep_root=True (the local delivery agent switches per recipient);
    7. for a background daemon (background=True: qmgr, bounce and the
       delivery agents), lowers its CPU priority by $delivery_process_nice
       (nice(2), relative to master's, which smtpd and cleanup keep), so
       that on a busy machine the work a waiting SMTP client needs runs
       first and delivery fills the gaps (docs/performance.md, item 37);
    8. runs serve(ctx) in one event loop, uvloop's when it is importable.

    Context: cfg, service, process_name, service_type, listeners,
    queue_dir, stopping and reloading (asyncio.Event), daemon_timeout,
    private_path(name), public_path(name), service_path(name) and ready(), which writes b"R" to
    the status descriptor once, telling master the daemon is serving.

    Idle exit: master sets FULMAR_IDLE_EXIT=1 for a service it starts on
    demand (master/services.py is_on_demand).  Then serve() calls
    ctx.exit_when_idle(servers[, busy]) after creating its ipc Servers:
    once busy() has been false for `max_idle` seconds (without busy: no
    server has an open connection, Server.active; a daemon whose clients
    keep idle connections pooled -- qmgr's to the delivery agents and
    bounce, smtpd's to cleanup -- passes busy = "a request is in
    progress" and closes the idle connections when it stops, which those
    clients retry on a fresh connection), the daemon stops accepting
    (closes its listeners at once, in the same loop turn as the check, so
    a client that connects from then on waits in master's listen backlog
    for the next process) and sets ctx.stopping; serve returns as on
    SIGTERM and the process exits 0.  Idleness is sampled every
    max_idle / IDLE_CHECKS_PER_PERIOD, so the exit comes between max_idle
    and max_idle * (1 + 1/IDLE_CHECKS_PER_PERIOD) after the last
    connection ended.  Without the variable, exit_when_idle does nothing.

    Signals: SIGTERM (and SIGINT, for a foreground run) sets ctx.stopping;
    serve should stop accepting, finish what is in flight and return.  A
    second SIGTERM, or daemon_timeout seconds after the first, ends the
    process at once; that is safe because nothing is acknowledged before
    it is on disk.  SIGHUP sets ctx.reloading (serve clears it).

DIAGNOSTICS
    Usage errors, a bad configuration, unusable inherited descriptors and a
    bad mail_owner are `fatal:` lines and exit status 1.  An exception
    escaping serve, or one left unhandled in any task or callback, is a
    `panic:` line saying what and where, and exit status 1, so master
    restarts the daemon instead of it hanging half-alive.  serve returning
    normally is exit status 0.
"""

import asyncio
import getopt
import os
import pwd
import signal
import socket
import sys
import traceback

# Only modules that parse on any Python 3 are imported here, so that
# require_python() gets to say what is wrong; fulmar.config comes later.
from fulmar import log
from fulmar.version import require_python

LISTEN_FDS_ENV = "FULMAR_LISTEN_FDS"
STATUS_FD_ENV = "FULMAR_STATUS_FD"
IDLE_EXIT_ENV = "FULMAR_IDLE_EXIT"
READY = b"R"
# Idleness is sampled this many times per max_idle (see the docstring).
IDLE_CHECKS_PER_PERIOD = 4


class Options:
    """The parsed daemon command line."""

    def __init__(self):
        self.config_dir = None
        self.service = None
        self.service_type = None
        self.overrides = {}
        self.verbose = 0


def parse_args(process_name, argv):
    """Parse the daemon argv (without argv[0]); fatal on a usage error."""
    usage = ("usage: %s [-c config_dir] [-s service] [-t type] "
             "[-o name=value]... [-v]" % process_name)
    try:
        opts, rest = getopt.getopt(argv, "c:s:t:o:v")
    except getopt.GetoptError as exc:
        log.fatal("%s; %s", exc, usage)
    if rest:
        log.fatal("unexpected argument: %s; %s", rest[0], usage)
    options = Options()
    for flag, value in opts:
        if flag == "-c":
            options.config_dir = value
        elif flag == "-s":
            options.service = value
        elif flag == "-t":
            options.service_type = value
        elif flag == "-o":
            name, eq, setting = value.partition("=")
            if not eq or not name.strip():
                log.fatal("bad -o option: %s (expected name=value)", value)
            options.overrides[name.strip()] = setting
        else:
            options.verbose += 1
    return options


class Context:
    """What a daemon's serve() gets; see the module docstring."""

    def __init__(self, cfg, *, service, process_name, service_type=None,
                 listeners=(), status_fd=None, idle_exit=False):
        self.cfg = cfg
        self.service = service
        self.process_name = process_name
        self.service_type = service_type
        self.listeners = list(listeners)
        self.queue_dir = cfg.get("queue_directory")
        self.daemon_timeout = cfg.get("daemon_timeout")
        self.stopping = asyncio.Event()
        self.reloading = asyncio.Event()
        self.prepared = None          # what main(prepare=...) returned
        self._status_fd = status_fd
        self.idle_exit = idle_exit
        self.idle_exited = False      # True once exit_when_idle stopped us

    def exit_when_idle(self, servers, busy=None, *, clock=None) -> None:
        """Stop after max_idle without connections (module docstring);
        a no-op unless master started this daemon on demand."""
        if not self.idle_exit:
            return
        import time
        loop = asyncio.get_running_loop()
        clock = clock or time.monotonic
        max_idle = float(self.cfg.get("max_idle"))
        period = max_idle / IDLE_CHECKS_PER_PERIOD
        servers = list(servers)
        if busy is None:
            def busy():
                return any(s.active for s in servers)
        state = {"since": clock()}

        def check():
            if self.stopping.is_set():
                return
            now = clock()
            if busy():
                state["since"] = now
            elif now - state["since"] >= max_idle:
                # Close first, in this loop turn: nothing accepted after
                # the decision; later clients wait in master's backlog.
                for server in servers:
                    server.close()
                self.idle_exited = True
                self.stopping.set()
                return
            loop.call_later(period, check)

        loop.call_later(period, check)

    def private_path(self, name: str) -> str:
        return os.path.join(self.queue_dir, "private", name)

    def public_path(self, name: str) -> str:
        return os.path.join(self.queue_dir, "public", name)

    def service_path(self, name: str) -> str:
        """The socket of a master.cf unix service, wherever its private
        column put it (Postfix ships cleanup and qmgr public, the delivery
        agents and bounce private); private/ wins when both exist."""
        path = self.private_path(name)
        if os.path.exists(path):
            return path
        return self.public_path(name)

    def ready(self) -> None:
        """Tell master (once) that the daemon is serving."""
        fd, self._status_fd = self._status_fd, None
        if fd is None:
            return
        try:
            os.write(fd, READY)
        except OSError as exc:
            log.warning("cannot report readiness to master: %s",
                        exc.strerror)
        # The descriptor stays open: master sees its end of file when this
        # process is gone.


def _inherited_fds(name):
    text = os.environ.pop(name, "").strip()
    if not text:
        return []
    try:
        fds = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        log.fatal("bad %s value: %s", name, text)
    return fds


def take_listeners():
    """The listening sockets master passed in FULMAR_LISTEN_FDS."""
    listeners = []
    for fd in _inherited_fds(LISTEN_FDS_ENV):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            log.fatal("inherited descriptor %d: %s", fd, exc.strerror)
        sock.setblocking(False)
        sock.set_inheritable(False)   # not for children (pipe commands)
        listeners.append(sock)
    return listeners


def take_status_fd():
    """The descriptor named by FULMAR_STATUS_FD, or None."""
    fds = _inherited_fds(STATUS_FD_ENV)
    if not fds:
        return None
    if len(fds) > 1:
        log.fatal("bad %s value: more than one descriptor", STATUS_FD_ENV)
    try:
        os.set_inheritable(fds[0], False)
    except OSError as exc:
        log.fatal("inherited status descriptor %d: %s", fds[0], exc.strerror)
    return fds[0]


def drop_privileges(cfg, keep_root=False):
    """As root: check mail_owner; become it unless keep_root."""
    if os.geteuid() != 0:
        return
    main_cf = getattr(cfg, "main_cf_path", None) or os.path.join(
        str(getattr(cfg, "config_dir", "") or ""), "main.cf")
    where = "file %s: parameter mail_owner" % main_cf
    owner = cfg.get("mail_owner")
    try:
        if not owner:
            raise KeyError(owner)
        entry = pwd.getpwnam(owner)
    except KeyError:
        log.fatal("%s: unknown user name value: %s", where, owner)
    if entry.pw_uid == 0:
        log.fatal("%s: user %s has privileged user ID", where, owner)
    if keep_root:
        return
    try:
        os.setgroups([entry.pw_gid])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except OSError as exc:
        log.fatal("cannot switch to user %s: %s", owner, exc.strerror)


def lower_priority(cfg) -> None:
    """nice(2) by $delivery_process_nice, before any thread exists (Linux
    applies it per thread; threads started later inherit it)."""
    step = cfg.get("delivery_process_nice")     # an int, 0..19 (checked at load)
    if step <= 0:
        return
    try:
        os.nice(step)
    except OSError as exc:
        log.warning("cannot lower the process priority by %d: %s", step, exc.strerror)


def _where(exc):
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    return "; ".join("%s:%d in %s" % ("/".join(f.filename.split("/")[-2:]),
                                      f.lineno, f.name) for f in frames)


def _exit_now(status):
    """End the process without waiting for anything (forced stop)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


async def _run(ctx, serve):
    loop = asyncio.get_running_loop()

    def on_loop_error(loop, context):
        exc = context.get("exception")
        if exc is None or not ("future" in context or "handle" in context):
            # Transport-level trouble (one connection): not fatal.
            log.error("%s%s", context.get("message", "event loop error"),
                      ": %s" % exc if exc is not None else "")
            return
        # A task or callback died with nobody to see it: our bug.  Exit
        # so that master restarts us, rather than serve half the work.
        # This may run from a garbage-collected task's __del__, where a
        # SystemExit would be ignored: exit directly, as Postfix's panic
        # aborts.
        try:
            log.panic("unhandled %s: %s (%s)", type(exc).__name__, exc,
                      _where(exc))
        except SystemExit:
            pass
        _exit_now(1)

    def on_grace_expired():
        log.warning("stopping: work still in progress after %d seconds",
                    ctx.daemon_timeout)
        _exit_now(1)

    def on_terminate():
        if ctx.stopping.is_set():
            _exit_now(0)
        ctx.stopping.set()
        loop.call_later(ctx.daemon_timeout, on_grace_expired)

    loop.set_exception_handler(on_loop_error)
    loop.add_signal_handler(signal.SIGTERM, on_terminate)
    loop.add_signal_handler(signal.SIGINT, on_terminate)
    loop.add_signal_handler(signal.SIGHUP, ctx.reloading.set)
    await serve(ctx)


def main(process_name: str, serve, *, keep_root: bool = False,
         argv=None, prepare=None, background: bool = False) -> None:
    """Run serve(ctx) as the daemon process_name; never returns.

    prepare(cfg), when given, runs before the switch to mail_owner (as
    Postfix's daemons read their TLS keys as root); its result is
    ctx.prepared.  background=True: see lower_priority()."""
    require_python()
    from fulmar import config

    log.setup(None, process_name)
    options = parse_args(process_name,
                         sys.argv[1:] if argv is None else list(argv))
    try:
        cfg = config.load(options.config_dir)
        # $service_name is the master.cf service this process runs, as in
        # Postfix (`-o syslog_name=postfix/$service_name` in master.cf).
        overrides = dict(options.overrides)
        if options.service:
            overrides.setdefault("service_name", options.service)
        if overrides:
            cfg = cfg.with_overrides(overrides)
    except config.ConfigError as exc:
        log.fatal("%s", exc)
    log.setup(cfg, process_name, service_name=options.service)
    log.set_verbose(options.verbose)

    listeners = take_listeners()
    status_fd = take_status_fd()
    idle_exit = os.environ.pop(IDLE_EXIT_ENV, "") == "1"
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    # uvloop is imported before the switch to mail_owner: the interpreter's
    # own files may not be readable by mail_owner (a Python under /root).
    prepared = prepare(cfg) if prepare is not None else None
    drop_privileges(cfg, keep_root)
    if background:
        lower_priority(cfg)

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            ctx = Context(cfg, service=options.service or process_name,
                          process_name=process_name,
                          service_type=options.service_type,
                          listeners=listeners, status_fd=status_fd,
                          idle_exit=idle_exit)
            ctx.prepared = prepared
            runner.run(_run(ctx, serve))
    except SystemExit:
        raise
    except BaseException as exc:
        log.panic("%s: unexpected %s: %s (%s)", process_name,
                  type(exc).__name__, exc, _where(exc))
    sys.exit(0)
