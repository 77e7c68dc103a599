"""Entry point: `python -I -m local` (master.cf commands local and virtual).

The process name (log tag postfix/local or postfix/virtual, and the agent's
mode) is the master.cf command of the service named by "-s SERVICE", read
from $config_dir/master.cf; "local" when that cannot be told.
"""

import os
import sys


def command_name(argv: list[str]) -> str:
    """'virtual' when the master.cf service in argv runs the virtual command."""
    service = config_dir = None
    for i, arg in enumerate(argv[:-1]):
        if arg == "-s":
            service = argv[i + 1]
        elif arg == "-c":
            config_dir = argv[i + 1]
    if not service:
        return "local"
    config_dir = config_dir or os.environ.get("MAIL_CONFIG") or "/etc/postfix"
    try:
        from fulmar.config.mastercf import parse_master_cf
        for svc in parse_master_cf(os.path.join(config_dir, "master.cf")):
            if svc.name == service and svc.type == "unix":
                return "virtual" if svc.command == "virtual" else "local"
    except Exception:   # the daemon reports config errors itself
        pass
    return "virtual" if service == "virtual" else "local"


if __name__ == "__main__":
    from fulmar import daemon
    from local.deliver import serve

    daemon.main(command_name(sys.argv[1:]), serve, keep_root=True, background=True)
