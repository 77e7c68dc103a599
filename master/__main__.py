"""`python -I -m master [-c DIR] [-D] [-v] [-w]`: run the Fulmar master.

Runs in the foreground until SIGTERM/SIGINT (graceful stop) or SIGQUIT
(abort); SIGHUP reloads.  -c names the configuration directory (default
$MAIL_CONFIG, else /etc/postfix); -w is for `postfix start`: after the
listeners are bound, detach stdin/stdout/stderr so the caller is free.
-D and -v are accepted for Postfix compatibility and change nothing yet.
Errors before logging is set up go to stderr as `postfix/master: fatal: ...`;
every fatal error exits 1.
"""

import sys

from fulmar.version import require_python

require_python()

import argparse  # noqa: E402

FATAL_EXIT = 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="master", add_help=False)
    parser.add_argument("-c", dest="config_dir", default=None)
    parser.add_argument("-D", dest="debug", action="store_true")
    parser.add_argument("-v", dest="verbose", action="count", default=0)
    parser.add_argument("-w", dest="detach", action="store_true")
    args = parser.parse_args(argv)

    from fulmar import log
    from master.supervisor import Master, MasterFatal

    log.set_verbose(args.verbose)
    master = None
    try:
        master = Master(args.config_dir, detach=args.detach)
        master.start()
    except MasterFatal as e:
        sys.stderr.write(f"postfix/master: fatal: {e}\n")
        sys.stderr.flush()
        if master is not None and master.logging:
            try:
                log.fatal("%s", str(e))
            except SystemExit:
                pass
        if master is not None:
            master.release()
        return FATAL_EXIT
    return master.run()


if __name__ == "__main__":
    sys.exit(main())
