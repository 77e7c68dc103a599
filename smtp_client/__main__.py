"""Entry point: python -I -m smtp_client (master.cf commands smtp, lmtp).

The process name (log tag postfix/smtp or postfix/lmtp, and the parameter
prefix smtp_ or lmtp_) is the master.cf command of the service named by
"-s SERVICE", read from $config_dir/master.cf; "smtp" when that cannot be
told.
"""

import os
import sys


def command_name(argv: list[str]) -> str:
    """'lmtp' when the master.cf service in argv runs the lmtp command."""
    service = config_dir = None
    for i, arg in enumerate(argv[:-1]):
        if arg == "-s":
            service = argv[i + 1]
        elif arg == "-c":
            config_dir = argv[i + 1]
    if service == "lmtp":
        return "lmtp"
    if not service:
        return "smtp"
    config_dir = config_dir or os.environ.get("MAIL_CONFIG") or "/etc/postfix"
    try:
        from fulmar.config.mastercf import parse_master_cf
        for svc in parse_master_cf(os.path.join(config_dir, "master.cf")):
            if svc.name == service and svc.type == "unix":
                return "lmtp" if svc.command == "lmtp" else "smtp"
    except Exception:   # the daemon reports config errors itself
        pass
    return "smtp"


if __name__ == "__main__":
    from fulmar import daemon
    from smtp_client.deliver import serve

    daemon.main(command_name(sys.argv[1:]), serve, background=True)
