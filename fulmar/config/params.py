"""The parameter registry: every main.cf parameter Fulmar knows, declared once.

NAME
    fulmar.config.params - parameter declarations (postconf(5) for Fulmar)

SYNOPSIS
    from fulmar.config.params import PARAMS, Param, transport_param_spec
    p = PARAMS["message_size_limit"]   # Param(name, kind, default, owner, help, ...)

DESCRIPTION
    Each Param has a name (Postfix's), a kind, a default text, the daemon
    that owns it, one line of help, optional bounds and, for time values,
    the unit a bare number takes.  Kinds and their Python values:

        str   str                   int   int (decimal)
        bool  bool ("yes"/"no")     time  int seconds: N[smhdw]
        size  int bytes (decimal)   list  list[str] split on commas and
                                          white space ({...} kept whole)

    A default is main.cf text: it may reference other parameters ($name,
    ${name?{a}:{b}}, and Postfix's ${{$compatibility_level} <level {2} ? ...}
    forms), exactly as Postfix's built-in defaults do; the defaults are
    Postfix 3.9's.  A few defaults are computed from the host (myhostname,
    mydomain, mynetworks, config_directory, process_id, process_name): such a
    Param has `compute`, a function of the Config that returns the text.

    Parameters Fulmar has and Postfix does not are marked fulmar=True and say
    so in their help.  Parameters that Postfix has and Fulmar does not use are
    still registered (compat=True, kind str) so that an existing main.cf
    loads without "unknown parameter" warnings and `postconf -d` lists them.

    Per-transport parameters (`<transport>_destination_concurrency_limit`,
    `slow_destination_rate_delay`, ...) are not all listed: any name
    `<prefix>_<suffix>` with a suffix in TRANSPORT_SUFFIXES is accepted and
    takes the kind of its fallback parameter (see transport_param_spec and
    Config.transport_param).

DEVIATIONS
    enable_long_queue_ids defaults to yes: Fulmar only makes long queue IDs.
    alias_maps defaults to hash:/etc/aliases (no nis:).
"""

from __future__ import annotations

import os
import sys

# Commands import this module once per run (sendmail: once per message):
# the modules only some computed defaults need (socket, ipaddress, ...)
# are imported inside those functions, and typing and dataclasses not at
# all; `python -X importtime` shows what each costs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress
    from typing import Any, Callable

from fulmar.version import MAIL_NAME, MAIL_VERSION

KINDS = ("str", "int", "bool", "time", "size", "list")

# Seconds per time unit, as in Postfix's conv_time().
TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class Param:
    """One main.cf parameter (read-only by convention)."""

    __slots__ = ("name", "kind", "default", "owner", "help", "min", "max", "unit",
                 "choices", "compute", "fulmar", "compat")

    def __init__(self, name: str, kind: str, default: str, owner: str, help: str,
                 min: int | None = None, max: int | None = None,
                 unit: str = "s",                         # time: unit of a bare number
                 choices: tuple[str, ...] | None = None,  # str: the allowed values
                 compute: Callable[[Any], str] | None = None,  # computed default
                 fulmar: bool = False,                    # Fulmar-only parameter
                 compat: bool = False) -> None:           # Postfix's, not used by Fulmar
        self.name, self.kind, self.default, self.owner, self.help = name, kind, default, owner, help
        self.min, self.max, self.unit, self.choices = min, max, unit, choices
        self.compute, self.fulmar, self.compat = compute, fulmar, compat

    def _key(self) -> tuple:
        return tuple(getattr(self, f) for f in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is Param and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "Param(%s)" % ", ".join("%s=%r" % (f, getattr(self, f)) for f in self.__slots__)


# ---------------------------------------------------------------------------
# Computed defaults (Postfix's mail_params.c check_myhostname() & co.)

def _default_myhostname(cfg: Any) -> str:
    import socket
    name = socket.gethostname()
    if "." not in name:
        # Postfix appends $mydomain (when set) or "localdomain".
        domain = cfg.get("mydomain") if cfg.is_set("mydomain") else "localdomain"
        name = f"{name}.{domain}"
    return name


def _default_mydomain(cfg: Any) -> str:
    _, dot, rest = cfg.get("myhostname").partition(".")
    return rest if dot and rest else "localdomain"


def _default_config_directory(cfg: Any) -> str:
    return cfg.config_dir


def _default_process_id(cfg: Any) -> str:
    return str(os.getpid())


def _default_process_name(cfg: Any) -> str:
    return os.path.basename(sys.argv[0] or "fulmar") or "fulmar"


_SIOCGIFCONF = 0x8912      # Linux <linux/sockios.h>
_SIOCGIFNETMASK = 0x891B
_IFREQ_SIZE = 40           # struct ifreq on 64-bit Linux
_MAX_INTERFACES = 128      # SIOCGIFCONF buffer size, in ifreqs


def interface_networks() -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The host's interface addresses with their prefixes (Linux only).

    Returns [] when they cannot be found; callers then fall back to
    loopback.  IPv4 comes from SIOCGIFCONF/SIOCGIFNETMASK, IPv6 from
    /proc/net/if_inet6.
    """
    import array
    import fcntl
    import ipaddress
    import socket
    import struct
    found: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            buf = array.array("B", bytes(_IFREQ_SIZE * _MAX_INTERFACES))
            ptr, _ = buf.buffer_info()
            ifc = struct.pack("iL", len(buf), ptr)
            used = struct.unpack("iL", fcntl.ioctl(s.fileno(), _SIOCGIFCONF, ifc))[0]
            data = buf.tobytes()[:used]
            for off in range(0, used, _IFREQ_SIZE):
                ifname = data[off:off + 16]
                ip = socket.inet_ntoa(data[off + 20:off + 24])
                try:
                    res = fcntl.ioctl(s.fileno(), _SIOCGIFNETMASK,
                                      ifname + bytes(_IFREQ_SIZE - 16))
                    mask = socket.inet_ntoa(res[20:24])
                except OSError:
                    mask = "255.255.255.255"
                found.append(ipaddress.IPv4Interface(f"{ip}/{mask}"))
    except (OSError, ValueError, struct.error):
        pass
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                hexaddr, plen = fields[0], int(fields[2], 16)
                text = ":".join(hexaddr[i:i + 4] for i in range(0, 32, 4))
                found.append(ipaddress.IPv6Interface(f"{text}/{plen}"))
    except (OSError, ValueError):
        pass
    return found


# When the host's addresses cannot be found, mynetworks is loopback only.
FALLBACK_MYNETWORKS = "127.0.0.0/8 [::1]/128"


def _fmt_net(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    if net.version == 6:
        return f"[{net.network_address}]/{net.prefixlen}"
    return str(net)


def _default_mynetworks(cfg: Any) -> str:
    """mynetworks from mynetworks_style, as Postfix's own_inet_networks()."""
    import ipaddress
    style = cfg.get("mynetworks_style").strip().lower()
    ifaces = interface_networks()
    if not ifaces:
        return FALLBACK_MYNETWORKS
    nets: list[str] = []
    for iface in ifaces:
        if style == "host":
            net = ipaddress.ip_network(iface.ip)
        elif style == "class" and iface.version == 4:
            first = int(iface.ip) >> 24
            plen = 8 if first < 128 else 16 if first < 192 else 24
            net = ipaddress.ip_network(f"{iface.ip}/{plen}", strict=False)
        else:  # subnet (and "class" for IPv6, as Postfix)
            net = iface.network
        text = _fmt_net(net)
        if iface.ip.is_loopback and iface.version == 4 and style == "host":
            text = "127.0.0.0/8"   # Postfix lists all of loopback
        if text not in nets:
            nets.append(text)
    return " ".join(nets)


# A compact way to declare: P(name, kind, default, owner, help, **extras).
P = Param

# Postfix's compatibility-level conditionals, written as in postconf -d.
def _compat(level: str, before: str, after: str) -> str:
    return f"${{{{$compatibility_level}} <level {{{level}}} ? {{{before}}} : {{{after}}}}}"


_DECLARED: list[Param] = [
    # --- identity, paths, ownership -------------------------------------
    P("compatibility_level", "str", "0", "global", "Postfix compatibility level: backward-compatible defaults below this level (stock main.cf sets 3.9)"),
    P("mail_name", "str", MAIL_NAME, "global", "mail system name in $smtpd_banner and bounces"),
    P("mail_version", "str", MAIL_VERSION, "global", "version of this mail system"),
    P("myhostname", "str", "", "global", "internet hostname of this mail system (default: the host's name, .localdomain appended if unqualified)", compute=_default_myhostname),
    P("mydomain", "str", "", "global", "internet domain of this mail system (default: $myhostname minus its first label)", compute=_default_mydomain),
    P("myorigin", "str", "$myhostname", "cleanup", "domain appended to unqualified addresses in locally posted mail"),
    P("mydestination", "list", "$myhostname, localhost.$mydomain, localhost", "trivial-rewrite", "domains delivered by $local_transport"),
    P("mynetworks", "list", "", "smtpd", "trusted client networks (default: computed from $mynetworks_style)", compute=_default_mynetworks),
    P("mynetworks_style", "str", _compat("2", "subnet", "host"), "smtpd", "how to compute $mynetworks: host, subnet or class", choices=("host", "subnet", "class")),
    P("config_directory", "str", "/etc/postfix", "global", "directory with main.cf and master.cf (default: -c DIR, $MAIL_CONFIG or /etc/postfix)", compute=_default_config_directory),
    P("queue_directory", "str", "/var/spool/postfix", "global", "top of the mail queue"),
    P("data_directory", "str", "/var/lib/postfix", "global", "directory for Fulmar's own writable data (caches, locks)"),
    P("mail_owner", "str", "postfix", "master", "UNIX account that owns the queue and runs the daemons"),
    P("setgid_group", "str", "postdrop", "sendmail", "group that owns maildrop/ and the public/ sockets"),
    P("default_privs", "str", "nobody", "local", "rights of deliveries to external files and commands when no recipient owns them"),
    P("process_id", "str", "", "global", "process ID of the running process (read-only)", compute=_default_process_id),
    P("process_name", "str", "", "global", "process name of the running process (read-only)", compute=_default_process_name),
    P("service_name", "str", "", "master", "master.cf service name of the running daemon (set by master; used in -o syslog_name=postfix/$service_name)"),
    P("multi_instance_name", "str", "", "global", "name of this instance for postmulti and $syslog_name"),
    P("multi_instance_enable", "bool", "no", "global", "allow postmulti to start this instance"),
    P("stress", "str", "", "master", "set to yes by master when a service runs out of processes (read-only)"),
    P("command_directory", "str", "/usr/sbin", "global", "where the administrative commands are installed"),
    P("daemon_directory", "str", "/usr/lib/postfix/sbin", "global", "where Postfix daemon programs live (unused by Fulmar, kept for scripts)"),
    P("sendmail_path", "str", "/usr/sbin/sendmail", "global", "path of the sendmail command"),
    P("mailq_path", "str", "/usr/bin/mailq", "global", "path of the mailq command"),
    P("newaliases_path", "str", "/usr/bin/newaliases", "global", "path of the newaliases command"),
    P("process_id_directory", "str", "pid", "master", "directory under $queue_directory with master.pid"),
    P("inet_interfaces", "list", "all", "master", "network interfaces to receive mail on: all, loopback-only or addresses"),
    P("inet_protocols", "list", "all", "master", "IP protocols to use: all, ipv4, ipv6"),
    P("proxy_interfaces", "list", "", "smtpd", "addresses on which mail arrives through a proxy or NAT"),
    P("default_worker_processes", "int", "0", "master", "Fulmar only: processes per service (each serves many connections), at most maxproc; 0 means one per two CPUs (at least one)", min=0, fulmar=True),
    P("delivery_process_nice", "int", "10", "global", "Fulmar only: how much lower the CPU priority (nice) of qmgr, bounce and the delivery agents is than smtpd's and cleanup's, so that a busy machine answers SMTP clients first; 0 runs them all alike", min=0, max=19, fulmar=True),
    P("service_stop_timeout", "time", "30s", "master", "Fulmar only: how long postfix stop waits for in-flight work before daemons are killed", min=1, fulmar=True),
    P("parent_domain_matches_subdomains", "list", "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,qmqpd_authorized_clients,relay_domains,smtpd_access_maps", "trivial-rewrite", "features where example.com also matches sub.example.com"),
    P("default_database_type", "str", "hash", "postmap", "table type for postmap/postalias when none is given (all hash-like types use Fulmar's own indexed format)"),
    P("non_bdb_migration_level", "str", "", "postmap", "Postfix 3.11 Berkeley DB migration knob (accepted; Fulmar never uses Berkeley DB)"),
    P("dns_server_addresses", "list", "", "smtp", "Fulmar only: DNS servers to query as ip[:port] (e.g. 127.0.0.1:5300); empty means /etc/resolv.conf", fulmar=True),
    # --- logging ------------------------------------------------------------
    P("syslog_name", "str", "${multi_instance_name?{$multi_instance_name}:{postfix}}", "global", "program name prefix in log records"),
    P("syslog_facility", "str", "mail", "global", "syslog facility of log records"),
    P("maillog_file", "str", "", "postlogd", "log to this file instead of syslog (/dev/stdout works)"),
    P("maillog_file_prefixes", "list", "/var, /dev/stdout", "postlogd", "allowed path prefixes of $maillog_file"),
    P("smtpd_client_port_logging", "bool", "no", "smtpd", "log the client port after the client address"),
    P("delay_logging_resolution_limit", "int", "2", "global", "digits after the decimal point in delay= and delays= log fields", min=0, max=6),
    P("debug_peer_level", "int", "2", "global", "verbose logging level for $debug_peer_list", min=1),
    P("debug_peer_list", "list", "", "global", "clients and servers to log verbosely"),
    P("notify_classes", "list", "resource, software", "global", "problem classes reported to the postmaster"),
    P("smtp_log_tls_feature_status", "bool", "no", "smtp", "add tls= to delivery log lines (Postfix 3.11)"),
    # --- master -------------------------------------------------------------
    P("default_process_limit", "int", "100", "master", "default maxproc of master.cf services", min=1),
    P("service_throttle_time", "time", "60s", "master", "how long master waits before restarting a service that fails at once", min=1),
    P("daemon_timeout", "time", "18000s", "master", "how long a daemon may work on one request before it is stopped", min=1),
    P("ipc_timeout", "time", "3600s", "global", "time limit for internal IPC reads and writes", min=1),
    P("ipc_idle", "time", "5s", "global", "idle time after which a client closes an internal IPC channel", min=1),
    P("max_idle", "time", "100s", "master", "how long an idle daemon waits before exiting", min=1),
    P("max_use", "int", "100", "master", "requests a daemon serves before exiting (Fulmar's long-lived workers ignore this)", min=1),
    P("trigger_timeout", "time", "10s", "global", "time limit for sending a trigger to a daemon", min=1),
    P("fork_attempts", "int", "5", "master", "attempts to start a process", min=1),
    P("fork_delay", "time", "1s", "master", "delay between attempts to start a process", min=1),
    P("in_flow_delay", "time", "1s", "cleanup", "delay per message when mail arrives faster than it leaves", min=0),
    P("queue_minfree", "size", "0", "smtpd", "free bytes in the queue file system needed to accept mail", min=0),
    # --- smtpd --------------------------------------------------------------
    P("smtpd_banner", "str", "$myhostname ESMTP $mail_name", "smtpd", "text after the 220 code of the greeting"),
    P("smtpd_timeout", "time", "${stress?{10}:{300}}s", "smtpd", "time limit for a client to send a command or data, and for smtpd to send a reply", min=1),
    P("smtpd_starttls_timeout", "time", "${stress?{10}:{300}}s", "smtpd", "time limit for the TLS handshake after STARTTLS", min=1),
    P("smtpd_hard_error_limit", "int", "${stress?{1}:{20}}", "smtpd", "errors after which smtpd disconnects", min=1),
    P("smtpd_soft_error_limit", "int", "10", "smtpd", "errors after which smtpd delays each reply by $smtpd_error_sleep_time", min=0),
    P("smtpd_error_sleep_time", "time", "1s", "smtpd", "delay before an error reply once $smtpd_soft_error_limit is reached", min=0),
    P("smtpd_junk_command_limit", "int", "${stress?{1}:{100}}", "smtpd", "NOOP, VRFY, ETRN and RSET commands allowed before they count as errors", min=1),
    P("smtpd_recipient_limit", "int", "1000", "smtpd", "recipients accepted per message", min=1),
    P("smtpd_recipient_overshoot_limit", "int", "1000", "smtpd", "recipients over the limit that count as errors", min=1),
    P("smtpd_history_flush_threshold", "int", "100", "smtpd", "session history lines kept for the postmaster notice", min=1),
    P("smtpd_client_connection_count_limit", "int", "50", "anvil", "simultaneous connections per client (0 = no limit)", min=0),
    P("smtpd_client_connection_rate_limit", "int", "0", "anvil", "connections per client per $anvil_rate_time_unit (0 = no limit)", min=0),
    P("smtpd_client_message_rate_limit", "int", "0", "anvil", "messages per client per $anvil_rate_time_unit (0 = no limit)", min=0),
    P("smtpd_client_recipient_rate_limit", "int", "0", "anvil", "recipients per client per $anvil_rate_time_unit (0 = no limit)", min=0),
    P("smtpd_client_new_tls_session_rate_limit", "int", "0", "anvil", "new TLS sessions per client per $anvil_rate_time_unit (0 = no limit)", min=0),
    P("smtpd_client_auth_rate_limit", "int", "0", "anvil", "AUTH commands per client per $anvil_rate_time_unit (0 = no limit)", min=0),
    P("smtpd_client_event_limit_exceptions", "list", "${smtpd_client_connection_limit_exceptions:$mynetworks}", "anvil", "clients exempt from the smtpd_client_*_limit checks"),
    P("anvil_rate_time_unit", "time", "60s", "anvil", "time unit of the smtpd_client_*_rate_limit parameters", min=1),
    P("smtpd_forbid_bare_newline", "str", "normalize", "smtpd", "bare LF (and bare CR) in SMTP input: normalize, yes/reject (reply 550), or no", choices=("normalize", "yes", "reject", "no")),
    P("smtpd_forbid_bare_newline_exclusions", "list", "$mynetworks", "smtpd", "clients exempt from $smtpd_forbid_bare_newline"),
    P("smtpd_forbid_bare_newline_reject_code", "int", "550", "smtpd", "reply code when $smtpd_forbid_bare_newline rejects", min=400, max=599),
    P("smtpd_forbid_unauth_pipelining", "bool", "yes", "smtpd", "disconnect clients that pipeline commands where RFC 2920 does not allow it"),
    P("smtpd_forbidden_commands", "list", "CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}", "smtpd", "commands that make smtpd disconnect at once"),
    P("smtpd_discard_ehlo_keywords", "list", "", "smtpd", "EHLO keywords smtpd does not announce"),
    P("smtpd_helo_required", "bool", "no", "smtpd", "require HELO or EHLO before MAIL FROM"),
    P("disable_vrfy_command", "bool", "no", "smtpd", "refuse the VRFY command"),
    P("smtpd_delay_reject", "bool", "yes", "smtpd", "wait until RCPT TO before evaluating client, HELO and sender restrictions"),
    P("smtpd_client_restrictions", "list", "", "smtpd", "restrictions applied when a client connects"),
    P("smtpd_helo_restrictions", "list", "", "smtpd", "restrictions applied to HELO/EHLO"),
    P("smtpd_sender_restrictions", "list", "", "smtpd", "restrictions applied to MAIL FROM"),
    P("smtpd_relay_restrictions", "list", _compat("1", "", "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination"), "smtpd", "relay control restrictions applied at RCPT TO before $smtpd_recipient_restrictions"),
    P("smtpd_recipient_restrictions", "list", "", "smtpd", "restrictions applied at RCPT TO"),
    P("smtpd_data_restrictions", "list", "", "smtpd", "restrictions applied to DATA"),
    P("smtpd_end_of_data_restrictions", "list", "", "smtpd", "restrictions applied at the end of message content"),
    P("smtpd_etrn_restrictions", "list", "", "smtpd", "restrictions applied to ETRN"),
    P("smtpd_restriction_classes", "list", "", "smtpd", "names of user-defined restriction lists"),
    P("smtpd_reject_unlisted_recipient", "bool", "yes", "smtpd", "reject recipients that no table lists"),
    P("smtpd_reject_unlisted_sender", "bool", "no", "smtpd", "reject senders that no table lists"),
    P("smtpd_null_access_lookup_key", "str", "<>", "smtpd", "access table key for the null sender"),
    P("smtpd_reject_footer", "str", "", "smtpd", "text appended to reject replies"),
    P("smtpd_log_access_permit_actions", "list", "", "smtpd", "access actions that log a permit line"),
    P("smtpd_peername_lookup", "bool", "yes", "smtpd", "look up the client hostname"),
    P("smtpd_policy_service_timeout", "time", "100s", "smtpd", "time limit for a policy service request", min=1),
    P("smtpd_policy_service_max_idle", "time", "300s", "smtpd", "idle time after which a policy service connection closes", min=1),
    P("smtpd_policy_service_max_ttl", "time", "1000s", "smtpd", "lifetime of a policy service connection", min=1),
    P("smtpd_milters", "list", "", "smtpd", "Milter applications for mail from smtpd"),
    P("non_smtpd_milters", "list", "", "cleanup", "Milter applications for mail not from smtpd"),
    P("milter_default_action", "str", "tempfail", "smtpd", "what to do when a Milter fails: accept, reject, tempfail, quarantine, shutdown", choices=("accept", "reject", "tempfail", "quarantine", "shutdown")),
    P("milter_protocol", "str", "6", "smtpd", "Milter protocol version"),
    P("milter_macro_daemon_name", "str", "$myhostname", "smtpd", "the {daemon_name} Milter macro"),
    P("milter_connect_timeout", "time", "30s", "smtpd", "time limit for connecting to a Milter", min=1),
    P("milter_command_timeout", "time", "30s", "smtpd", "time limit for a Milter command", min=1),
    P("milter_content_timeout", "time", "300s", "smtpd", "time limit for sending content to a Milter", min=1),
    P("strict_rfc821_envelopes", "bool", "no", "smtpd", "require <> around MAIL FROM and RCPT TO addresses"),
    P("smtputf8_enable", "bool", _compat("1", "no", "yes"), "smtpd", "offer and use SMTPUTF8"),
    P("smtpd_command_filter", "str", "", "smtpd", "table that rewrites SMTP commands"),
    P("smtpd_proxy_filter", "str", "", "smtpd", "before-queue content filter"),
    P("smtpd_authorized_xclient_hosts", "list", "", "smtpd", "clients allowed to use XCLIENT"),
    P("smtpd_upstream_proxy_protocol", "str", "", "smtpd", "proxy protocol in front of smtpd (haproxy)"),
    P("smtpd_hostname", "str", "", "smtpd", "not used"),
    P("reject_code", "int", "554", "smtpd", "reply code of the reject restriction", min=400, max=599),
    P("defer_code", "int", "450", "smtpd", "reply code of the defer restriction", min=400, max=599),
    P("relay_domains_reject_code", "int", "554", "smtpd", "reply code of reject_unauth_destination", min=400, max=599),
    P("access_map_reject_code", "int", "554", "smtpd", "reply code of an access table REJECT", min=400, max=599),
    P("access_map_defer_code", "int", "450", "smtpd", "reply code of an access table DEFER", min=400, max=599),
    P("plaintext_reject_code", "int", "450", "smtpd", "reply code when TLS is required and missing", min=400, max=599),
    P("non_fqdn_reject_code", "int", "504", "smtpd", "reply code of reject_non_fqdn_*", min=400, max=599),
    P("unknown_address_reject_code", "int", "450", "smtpd", "reply code of reject_unknown_*_domain", min=400, max=599),
    P("unknown_hostname_reject_code", "int", "450", "smtpd", "reply code of reject_unknown_helo_hostname", min=400, max=599),
    P("unknown_local_recipient_reject_code", "int", "550", "smtpd", "reply code for an unknown local recipient", min=400, max=599),
    P("unknown_relay_recipient_reject_code", "int", "550", "smtpd", "reply code for an unknown relay recipient", min=400, max=599),
    P("unknown_virtual_alias_reject_code", "int", "550", "smtpd", "reply code for an unknown virtual alias", min=400, max=599),
    P("unknown_virtual_mailbox_reject_code", "int", "550", "smtpd", "reply code for an unknown virtual mailbox", min=400, max=599),
    P("unverified_recipient_reject_code", "int", "450", "smtpd", "reply code of reject_unverified_recipient", min=400, max=599),
    P("maps_rbl_reject_code", "int", "554", "smtpd", "reply code of an RBL reject", min=400, max=599),
    # --- SASL (server) --------------------------------------------------------
    P("smtpd_sasl_auth_enable", "bool", "no", "smtpd", "offer SMTP AUTH"),
    P("smtpd_sasl_type", "str", "cyrus", "smtpd", "SASL backend: dovecot, or fulmar's built-in password file (cyrus is taken as the built-in one)"),
    P("smtpd_sasl_path", "str", "smtpd", "smtpd", "SASL backend socket or configuration name"),
    P("smtpd_sasl_service", "str", "smtp", "smtpd", "SASL service name"),
    P("smtpd_sasl_local_domain", "str", "", "smtpd", "SASL realm"),
    P("smtpd_sasl_security_options", "list", "noanonymous", "smtpd", "SASL mechanism restrictions without TLS"),
    P("smtpd_sasl_tls_security_options", "list", "$smtpd_sasl_security_options", "smtpd", "SASL mechanism restrictions with TLS"),
    P("smtpd_sasl_authenticated_header", "bool", "no", "cleanup", "record the SASL user name in the Received: header"),
    P("smtpd_sasl_exceptions_networks", "list", "", "smtpd", "clients to which AUTH is not offered"),
    P("smtpd_sender_login_maps", "list", "", "smtpd", "tables of sender address to SASL login names"),
    P("smtpd_tls_auth_only", "bool", "no", "smtpd", "offer AUTH only after STARTTLS"),
    # --- TLS (server) ------------------------------------------------------------
    P("smtpd_tls_security_level", "str", "", "smtpd", "server TLS: empty/none, may or encrypt", choices=("", "none", "may", "encrypt")),
    P("smtpd_tls_wrappermode", "bool", "no", "smtpd", "implicit TLS from the first byte (submissions, port 465)"),
    P("smtpd_tls_cert_file", "str", "", "smtpd", "server certificate file (PEM)"),
    P("smtpd_tls_key_file", "str", "$smtpd_tls_cert_file", "smtpd", "server private key file (PEM)"),
    P("smtpd_tls_eccert_file", "str", "", "smtpd", "server ECDSA certificate file"),
    P("smtpd_tls_eckey_file", "str", "$smtpd_tls_eccert_file", "smtpd", "server ECDSA private key file"),
    P("smtpd_tls_chain_files", "list", "", "smtpd", "files each holding a key and its certificate chain (RSA and ECDSA together)"),
    P("smtpd_tls_CAfile", "str", "", "smtpd", "CA certificates for client certificates"),
    P("smtpd_tls_CApath", "str", "", "smtpd", "CA certificate directory for client certificates"),
    P("smtpd_tls_protocols", "str", ">=TLSv1", "smtpd", "TLS protocols with opportunistic TLS"),
    P("smtpd_tls_mandatory_protocols", "str", ">=TLSv1", "smtpd", "TLS protocols with mandatory TLS"),
    P("smtpd_tls_ciphers", "str", "medium", "smtpd", "cipher grade with opportunistic TLS"),
    P("smtpd_tls_mandatory_ciphers", "str", "medium", "smtpd", "cipher grade with mandatory TLS"),
    P("smtpd_tls_loglevel", "int", "0", "smtpd", "TLS logging level (0-4)", min=0, max=4),
    P("smtpd_tls_received_header", "bool", "no", "cleanup", "record TLS protocol and cipher in the Received: header"),
    P("smtpd_tls_ask_ccert", "bool", "no", "smtpd", "ask for a client certificate"),
    P("smtpd_tls_req_ccert", "bool", "no", "smtpd", "require a client certificate"),
    P("smtpd_tls_session_cache_database", "str", "", "smtpd", "TLS session cache (Fulmar keeps its cache in memory and ignores this)"),
    P("smtpd_tls_session_cache_timeout", "time", "3600s", "smtpd", "lifetime of a cached TLS session", min=0),
    P("tls_server_sni_maps", "list", "", "smtpd", "tables of SNI name to key and certificate chain files"),
    P("tls_high_cipherlist", "str", "aNULL:-aNULL:HIGH:@STRENGTH", "tls", "OpenSSL cipher list of the high grade"),
    P("tls_medium_cipherlist", "str", "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH", "tls", "OpenSSL cipher list of the medium grade"),
    P("tls_random_source", "str", "dev:/dev/urandom", "tls", "entropy source (Python's ssl uses the OS source)"),
    # --- cleanup ------------------------------------------------------------------
    P("message_size_limit", "size", "10240000", "cleanup", "maximal size of a message in bytes (0 = no limit)", min=0),
    P("header_size_limit", "size", "102400", "cleanup", "maximal size of one message header in bytes", min=1),
    P("line_length_limit", "size", "2048", "smtpd", "maximal length of an SMTP or message line before it is split", min=1),
    P("hopcount_limit", "int", "50", "cleanup", "maximal number of Received: headers", min=1),
    P("header_address_token_limit", "int", "10240", "cleanup", "maximal number of address tokens in a header", min=1),
    P("duplicate_filter_limit", "int", "1000", "cleanup", "recipients remembered to drop duplicates", min=0),
    P("always_add_missing_headers", "bool", "no", "cleanup", "add missing From:, To:, Date:, Message-ID: to all mail, not only local submissions"),
    P("enable_long_queue_ids", "bool", "yes", "cleanup", "long queue IDs (Fulmar deviation: always long; default yes)"),
    P("enable_original_recipient", "bool", "yes", "cleanup", "record the original recipient address"),
    P("undisclosed_recipients_header", "str", "", "cleanup", "header added when there is no recipient header"),
    P("header_checks", "list", "", "cleanup", "tables of patterns checked against headers"),
    P("mime_header_checks", "list", "$header_checks", "cleanup", "tables of patterns checked against MIME headers"),
    P("nested_header_checks", "list", "$header_checks", "cleanup", "tables of patterns checked against attached message headers"),
    P("body_checks", "list", "", "cleanup", "tables of patterns checked against body lines"),
    P("message_strip_characters", "str", "", "cleanup", "characters removed from message content"),
    P("message_reject_characters", "str", "", "cleanup", "characters that make cleanup reject a message"),
    P("receive_override_options", "list", "", "cleanup", "disable some cleanup features for this service"),
    P("content_filter", "str", "", "cleanup", "after-queue content filter transport:nexthop"),
    P("canonical_maps", "list", "", "cleanup", "address mapping for sender and recipient addresses"),
    P("sender_canonical_maps", "list", "", "cleanup", "address mapping for sender addresses"),
    P("recipient_canonical_maps", "list", "", "cleanup", "address mapping for recipient addresses"),
    P("masquerade_domains", "list", "", "cleanup", "domains whose subdomains are stripped from addresses"),
    P("masquerade_exceptions", "list", "", "cleanup", "user names never masqueraded"),
    P("canonical_classes", "list", "envelope_sender, envelope_recipient, header_sender, header_recipient", "cleanup", "address classes canonical_maps applies to"),
    P("sender_canonical_classes", "list", "envelope_sender, header_sender", "cleanup", "address classes sender_canonical_maps applies to"),
    P("recipient_canonical_classes", "list", "envelope_recipient, header_recipient", "cleanup", "address classes recipient_canonical_maps applies to"),
    P("masquerade_classes", "list", "envelope_sender, header_sender, header_recipient", "cleanup", "address classes subject to masquerading"),
    P("virtual_alias_maps", "list", "$virtual_maps", "cleanup", "tables of virtual alias addresses"),
    P("virtual_maps", "list", "", "cleanup", "old name of virtual_alias_maps"),
    P("virtual_alias_domains", "list", "$virtual_alias_maps", "trivial-rewrite", "virtual alias domains"),
    P("virtual_alias_expansion_limit", "int", "1000", "cleanup", "maximal number of addresses a virtual alias expands to", min=1),
    P("virtual_alias_recursion_limit", "int", "1000", "cleanup", "maximal nesting depth of virtual alias expansion", min=1),
    P("propagate_unmatched_extensions", "list", "canonical, virtual", "cleanup", "where an address extension is kept after a table lookup"),
    P("local_header_rewrite_clients", "list", "permit_inet_interfaces", "cleanup", "clients whose header addresses are rewritten to standard form"),
    P("remote_header_rewrite_domain", "str", "", "cleanup", "domain appended to incomplete addresses in remote mail"),
    # --- address resolution (trivial-rewrite) -----------------------------------------
    P("append_at_myorigin", "bool", "yes", "trivial-rewrite", "append @$myorigin to bare local names"),
    P("append_dot_mydomain", "bool", _compat("1", "yes", "no"), "trivial-rewrite", "append .$mydomain to user@host"),
    P("allow_percent_hack", "bool", "yes", "trivial-rewrite", "rewrite user%domain to user@domain"),
    P("swap_bangpath", "bool", "yes", "trivial-rewrite", "rewrite site!user to user@site"),
    P("resolve_dequoted_address", "bool", "yes", "trivial-rewrite", "resolve the address after removing quotes"),
    P("allow_untrusted_routing", "bool", "no", "smtpd", "forward mail with sender-specified routing from untrusted clients"),
    P("recipient_delimiter", "str", "", "trivial-rewrite", "separators between user names and address extensions"),
    P("relayhost", "str", "", "trivial-rewrite", "next-hop destination for non-local mail ([host]:port or host)"),
    P("relay_domains", "list", _compat("2", "$mydestination", ""), "trivial-rewrite", "domains this system relays mail to"),
    P("relay_recipient_maps", "list", "", "smtpd", "valid recipients in $relay_domains"),
    P("relocated_maps", "list", "", "trivial-rewrite", "tables of users that have moved"),
    P("transport_maps", "list", "", "trivial-rewrite", "tables of recipient to transport:nexthop"),
    P("default_transport", "str", "smtp", "trivial-rewrite", "transport for mail without a more specific one"),
    P("relay_transport", "str", "relay", "trivial-rewrite", "transport for mail to $relay_domains"),
    P("local_transport", "str", "local:$myhostname", "trivial-rewrite", "transport for mail to $mydestination"),
    P("virtual_transport", "str", "virtual", "trivial-rewrite", "transport for mail to $virtual_mailbox_domains"),
    P("fallback_transport", "str", "", "local", "transport for local users that the local agent does not find"),
    P("sender_dependent_relayhost_maps", "list", "", "trivial-rewrite", "tables of sender to relayhost"),
    P("sender_dependent_default_transport_maps", "list", "", "trivial-rewrite", "tables of sender to default transport"),
    P("empty_address_recipient", "str", "MAILER-DAEMON", "trivial-rewrite", "recipient for mail addressed to <>"),
    P("local_recipient_maps", "list", "proxy:unix:passwd.byname $alias_maps", "smtpd", "tables of known local recipients (empty: any)"),
    # --- qmgr and scheduling ----------------------------------------------------------
    P("qmgr_message_active_limit", "int", "20000", "qmgr", "maximal number of messages in active/", min=1),
    P("qmgr_message_recipient_limit", "int", "20000", "qmgr", "maximal number of in-memory recipients", min=1),
    P("queue_run_delay", "time", "300s", "qmgr", "how often qmgr scans the deferred queue", min=1),
    P("minimal_backoff_time", "time", "300s", "qmgr", "minimal retry interval of a deferred message", min=1),
    P("maximal_backoff_time", "time", "4000s", "qmgr", "maximal retry interval of a deferred message", min=1),
    P("maximal_queue_lifetime", "time", "5d", "qmgr", "time after which undeliverable mail is returned", min=0, unit="d"),
    P("bounce_queue_lifetime", "time", "5d", "qmgr", "time after which an undeliverable bounce is dropped", min=0, unit="d"),
    P("delay_warning_time", "time", "0h", "qmgr", "time after which the sender gets a delay warning (0 = none)", min=0, unit="h"),
    P("transport_retry_time", "time", "60s", "qmgr", "retry interval of a transport that failed", min=1),
    P("hash_queue_names", "list", "deferred, defer", "global", "queues with hashed sub-directories"),
    P("hash_queue_depth", "int", "1", "global", "levels of hashed queue sub-directories", min=1, max=16),
    P("default_destination_concurrency_limit", "int", "20", "qmgr", "parallel deliveries per destination", min=1),
    P("initial_destination_concurrency", "int", "5", "qmgr", "initial parallel deliveries per destination", min=1),
    P("default_destination_recipient_limit", "int", "50", "qmgr", "recipients per delivery", min=1),
    P("default_destination_rate_delay", "time", "0s", "qmgr", "delay between deliveries to one destination (non-zero: concurrency 1)", min=0),
    P("default_transport_rate_delay", "time", "0s", "qmgr", "delay between deliveries by one transport", min=0),
    P("default_destination_concurrency_failed_cohort_limit", "int", "1", "qmgr", "failed cohorts before a destination is throttled", min=0),
    P("default_destination_concurrency_positive_feedback", "str", "1", "qmgr", "concurrency increment per success (1 or 1/concurrency)"),
    P("default_destination_concurrency_negative_feedback", "str", "1", "qmgr", "concurrency decrement per failure (1 or 1/concurrency)"),
    P("destination_concurrency_feedback_debug", "bool", "no", "qmgr", "log concurrency feedback"),
    P("default_recipient_limit", "int", "20000", "qmgr", "in-memory recipients per transport", min=1),
    P("default_extra_recipient_limit", "int", "1000", "qmgr", "extra in-memory recipients per transport", min=1),
    P("default_recipient_refill_limit", "int", "100", "qmgr", "recipients read per refill", min=1),
    P("default_recipient_refill_delay", "time", "5s", "qmgr", "delay between refills", min=1),
    P("default_delivery_slot_cost", "int", "5", "qmgr", "preemption: cost of a delivery slot", min=0),
    P("default_delivery_slot_loan", "int", "3", "qmgr", "preemption: slots loaned", min=0),
    P("default_delivery_slot_discount", "int", "50", "qmgr", "preemption: slot discount (percent)", min=0, max=100),
    P("default_minimum_delivery_slots", "int", "3", "qmgr", "preemption: minimum slots", min=0),
    P("default_delivery_status_filter", "list", "", "qmgr", "tables that rewrite delivery status"),
    P("smtp_destination_concurrency_limit", "int", "$default_destination_concurrency_limit", "qmgr", "parallel deliveries per destination by smtp", min=1),
    P("smtp_destination_recipient_limit", "int", "$default_destination_recipient_limit", "qmgr", "recipients per delivery by smtp", min=1),
    P("relay_destination_concurrency_limit", "int", "$default_destination_concurrency_limit", "qmgr", "parallel deliveries per destination by relay", min=1),
    P("relay_destination_recipient_limit", "int", "$default_destination_recipient_limit", "qmgr", "recipients per delivery by relay", min=1),
    P("lmtp_destination_concurrency_limit", "int", "$default_destination_concurrency_limit", "qmgr", "parallel deliveries per destination by lmtp", min=1),
    P("lmtp_destination_recipient_limit", "int", "$default_destination_recipient_limit", "qmgr", "recipients per delivery by lmtp", min=1),
    P("local_destination_concurrency_limit", "int", "2", "qmgr", "parallel deliveries per local recipient", min=1),
    P("local_destination_recipient_limit", "int", "1", "qmgr", "recipients per local delivery", min=1),
    P("virtual_destination_concurrency_limit", "int", "$default_destination_concurrency_limit", "qmgr", "parallel deliveries by virtual", min=1),
    P("virtual_destination_recipient_limit", "int", "$default_destination_recipient_limit", "qmgr", "recipients per virtual delivery", min=1),
    P("soft_bounce", "bool", "no", "global", "turn permanent delivery errors into temporary ones (testing)"),
    P("fast_flush_domains", "list", "$relay_domains", "flush", "destinations with a fast-flush log for ETRN"),
    # --- bounce -------------------------------------------------------------------
    P("bounce_size_limit", "size", "50000", "bounce", "original message bytes returned in a DSN", min=1),
    P("bounce_notice_recipient", "str", "postmaster", "bounce", "recipient of bounce notices to the postmaster"),
    P("2bounce_notice_recipient", "str", "postmaster", "bounce", "recipient of undeliverable bounces"),
    P("delay_notice_recipient", "str", "postmaster", "bounce", "recipient of delay notices to the postmaster"),
    P("error_notice_recipient", "str", "postmaster", "bounce", "recipient of resource and software error notices"),
    P("double_bounce_sender", "str", "double-bounce", "bounce", "sender of postmaster notices (mail to it is dropped)"),
    P("bounce_template_file", "str", "", "bounce", "file with DSN text templates"),
    P("dsn_filter", "str", "", "global", "table that rewrites delivery status"),
    # --- smtp client -----------------------------------------------------------------
    P("smtp_tcp_port", "str", "smtp", "smtp", "default server port (name or number)"),
    P("smtp_connect_timeout", "time", "30s", "smtp", "time limit for a TCP connection (0 = the system's)", min=0),
    P("smtp_helo_timeout", "time", "300s", "smtp", "time limit for the greeting and the EHLO reply", min=1),
    P("smtp_mail_timeout", "time", "300s", "smtp", "time limit for the MAIL FROM reply", min=1),
    P("smtp_rcpt_timeout", "time", "300s", "smtp", "time limit for the RCPT TO reply", min=1),
    P("smtp_data_init_timeout", "time", "120s", "smtp", "time limit for the DATA reply", min=1),
    P("smtp_data_xfer_timeout", "time", "180s", "smtp", "time limit for sending message content", min=1),
    P("smtp_data_done_timeout", "time", "600s", "smtp", "time limit for the reply to end of data", min=1),
    P("smtp_quit_timeout", "time", "300s", "smtp", "time limit for the QUIT reply", min=1),
    P("smtp_rset_timeout", "time", "20s", "smtp", "time limit for the RSET reply", min=1),
    P("smtp_starttls_timeout", "time", "300s", "smtp", "time limit for the TLS handshake", min=1),
    P("smtp_helo_name", "str", "$myhostname", "smtp", "hostname sent in EHLO/HELO"),
    P("smtp_connection_cache_time_limit", "time", "2s", "smtp", "how long an idle connection is kept for reuse", min=0),
    P("smtp_connection_reuse_count_limit", "int", "0", "smtp", "maximal number of deliveries over one connection (0 = no limit)", min=0),
    P("smtp_connection_reuse_time_limit", "time", "300s", "smtp", "maximal age of a connection that is reused", min=1),
    P("smtp_randomize_addresses", "bool", "yes", "smtp", "shuffle the addresses of equal-preference hosts"),
    P("smtp_bind_address", "str", "", "smtp", "local IPv4 address for outgoing connections"),
    P("smtp_bind_address6", "str", "", "smtp", "local IPv6 address for outgoing connections"),
    P("smtp_mx_address_limit", "int", "5", "smtp", "maximal number of MX addresses tried (0 = no limit)", min=0),
    P("smtp_mx_session_limit", "int", "2", "smtp", "maximal number of SMTP sessions per delivery (0 = no limit)", min=0),
    P("smtp_fallback_relay", "list", "$fallback_relay", "smtp", "relays for mail that cannot be delivered"),
    P("fallback_relay", "list", "", "smtp", "old name of smtp_fallback_relay"),
    P("smtp_line_length_limit", "int", "998", "smtp", "maximal length of a content line sent (longer ones are folded; 0 = no limit)", min=0),
    P("smtp_skip_5xx_greeting", "bool", "yes", "smtp", "try the next host after a 5xx greeting"),
    P("smtp_always_send_ehlo", "bool", "yes", "smtp", "send EHLO even without ESMTP in the greeting"),
    P("smtp_never_send_ehlo", "bool", "no", "smtp", "send HELO only"),
    P("smtp_host_lookup", "list", "dns", "smtp", "how to find server addresses: dns, native"),
    P("smtp_dns_support_level", "str", "", "smtp", "DNS features: enabled, disabled, dnssec", choices=("", "enabled", "disabled", "dnssec")),
    P("smtp_address_preference", "str", "any", "smtp", "address family preference: ipv4, ipv6, any", choices=("any", "ipv4", "ipv6")),
    P("disable_dns_lookups", "bool", "no", "smtp", "old switch: no DNS for smtp"),
    P("smtp_generic_maps", "list", "", "smtp", "address mapping for outgoing mail"),
    P("smtp_send_xforward_command", "bool", "no", "smtp", "send XFORWARD when the server offers it"),
    P("smtp_sasl_auth_enable", "bool", "no", "smtp", "use SMTP AUTH with servers that offer it"),
    P("smtp_sasl_password_maps", "list", "", "smtp", "tables of nexthop or sender to username:password"),
    P("smtp_sasl_security_options", "list", "noplaintext, noanonymous", "smtp", "SASL mechanism restrictions without TLS"),
    P("smtp_sasl_tls_security_options", "list", "$smtp_sasl_security_options", "smtp", "SASL mechanism restrictions with TLS"),
    P("smtp_sasl_mechanism_filter", "list", "", "smtp", "SASL mechanisms the client may use"),
    P("smtp_sasl_type", "str", "cyrus", "smtp", "client SASL implementation (Fulmar: built-in PLAIN/LOGIN)"),
    P("smtp_sasl_path", "str", "", "smtp", "client SASL configuration"),
    P("smtp_tls_security_level", "str", _compat("3.11", "", "may"), "smtp", "client TLS: none, may, encrypt, verify, secure (dane: later)", choices=("", "none", "may", "encrypt", "verify", "secure", "dane", "dane-only", "fingerprint")),
    P("smtp_tls_policy_maps", "list", "", "smtp", "tables of per-destination TLS policy"),
    P("smtp_tls_CAfile", "str", "", "smtp", "CA certificates for server verification"),
    P("smtp_tls_CApath", "str", "", "smtp", "CA certificate directory for server verification"),
    P("smtp_tls_cert_file", "str", "", "smtp", "client certificate file"),
    P("smtp_tls_key_file", "str", "$smtp_tls_cert_file", "smtp", "client private key file"),
    P("smtp_tls_chain_files", "list", "", "smtp", "client key and certificate chain files"),
    P("smtp_tls_protocols", "str", ">=TLSv1", "smtp", "TLS protocols with opportunistic TLS"),
    P("smtp_tls_mandatory_protocols", "str", ">=TLSv1", "smtp", "TLS protocols with mandatory TLS"),
    P("smtp_tls_ciphers", "str", "medium", "smtp", "cipher grade with opportunistic TLS"),
    P("smtp_tls_mandatory_ciphers", "str", "medium", "smtp", "cipher grade with mandatory TLS"),
    P("smtp_tls_verify_cert_match", "list", "hostname", "smtp", "name checks at the verify level"),
    P("smtp_tls_secure_cert_match", "list", "nexthop, dot-nexthop", "smtp", "name checks at the secure level"),
    P("smtp_tls_servername", "str", "", "smtp", "SNI name sent: empty, hostname, nexthop or a name"),
    P("smtp_tls_loglevel", "int", "0", "smtp", "TLS logging level (0-4)", min=0, max=4),
    P("smtp_tls_note_starttls_offer", "bool", "no", "smtp", "log servers that offer STARTTLS when TLS is not on"),
    P("smtp_tls_wrappermode", "bool", "no", "smtp", "implicit TLS (port 465 servers)"),
    P("smtp_tls_session_cache_database", "str", "", "smtp", "TLS session cache (Fulmar keeps its cache in memory and ignores this)"),
    P("smtp_tls_session_cache_timeout", "time", "3600s", "smtp", "lifetime of a cached TLS session", min=0),
    # --- lmtp -----------------------------------------------------------------------
    P("lmtp_tcp_port", "str", "24", "lmtp", "default LMTP server port"),
    P("lmtp_connect_timeout", "time", "0s", "lmtp", "time limit for an LMTP connection (0 = the system's)", min=0),
    P("lmtp_lhlo_timeout", "time", "300s", "lmtp", "time limit for the LHLO reply", min=1),
    P("lmtp_lhlo_name", "str", "$myhostname", "lmtp", "hostname sent in LHLO"),
    P("lmtp_sasl_auth_enable", "bool", "no", "lmtp", "use AUTH with LMTP servers"),
    P("lmtp_tls_security_level", "str", "", "lmtp", "LMTP client TLS level", choices=("", "none", "may", "encrypt", "verify", "secure", "dane", "dane-only", "fingerprint")),
    # --- local and virtual delivery ---------------------------------------------------
    P("alias_maps", "list", "hash:/etc/aliases", "local", "alias tables of the local agent (Fulmar: no nis: in the default)"),
    P("alias_database", "list", "hash:/etc/aliases", "newaliases", "alias files built by newaliases"),
    P("forward_path", "list", "$home/.forward${recipient_delimiter}${extension}, $home/.forward", "local", ".forward files the local agent looks for"),
    P("allow_mail_to_commands", "list", "alias, forward", "local", "where |command deliveries are allowed"),
    P("allow_mail_to_files", "list", "alias, forward", "local", "where /file deliveries are allowed"),
    P("home_mailbox", "str", "", "local", "mailbox relative to home (Maildir/ for maildir); empty: $mail_spool_directory"),
    P("mail_spool_directory", "str", "/var/mail", "local", "directory of UNIX-style mailboxes"),
    P("mailbox_command", "str", "", "local", "command that delivers to the mailbox"),
    P("mailbox_command_maps", "list", "", "local", "per-user mailbox commands"),
    P("mailbox_transport", "str", "", "local", "transport for mailbox delivery (e.g. lmtp:unix:/path)"),
    P("mailbox_transport_maps", "list", "", "local", "per-user mailbox transports"),
    P("mailbox_size_limit", "size", "51200000", "local", "maximal size of a mailbox or maildir file (0 = no limit)", min=0),
    P("mailbox_delivery_lock", "list", "fcntl, dotlock", "local", "mailbox locking methods"),
    P("luser_relay", "str", "", "local", "destination for unknown local recipients"),
    P("local_command_shell", "str", "", "local", "shell for |command deliveries (empty: built-in parsing)"),
    P("command_time_limit", "time", "1000s", "local", "time limit of a command delivery", min=1),
    P("command_expansion_filter", "str", "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "local", "characters allowed in $name expansions of commands"),
    P("export_environment", "list", "TZ MAIL_CONFIG LANG", "local", "environment passed to commands"),
    P("import_environment", "list", "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME", "global", "environment daemons keep"),
    P("prepend_delivered_header", "list", "command, file, forward", "local", "where Delivered-To: is added"),
    P("expand_owner_alias", "bool", "no", "local", "use owner-alias as the sender of alias expansions"),
    P("owner_request_special", "bool", "yes", "local", "treat owner- and -request addresses specially"),
    P("biff", "bool", "yes", "local", "notify comsat of new mail"),
    P("stale_lock_time", "time", "500s", "local", "age of a dotlock that is removed", min=1),
    P("deliver_lock_attempts", "int", "20", "local", "attempts to lock a mailbox", min=1),
    P("deliver_lock_delay", "time", "1s", "local", "delay between lock attempts", min=1),
    P("virtual_mailbox_domains", "list", "$virtual_mailbox_maps", "trivial-rewrite", "domains delivered by $virtual_transport"),
    P("virtual_mailbox_maps", "list", "", "virtual", "tables of virtual recipient to mailbox path"),
    P("virtual_mailbox_base", "str", "", "virtual", "prefix of virtual mailbox paths"),
    P("virtual_uid_maps", "list", "", "virtual", "tables of virtual recipient to uid"),
    P("virtual_gid_maps", "list", "", "virtual", "tables of virtual recipient to gid"),
    P("virtual_minimum_uid", "int", "100", "virtual", "lowest uid virtual delivers as", min=1),
    P("virtual_mailbox_limit", "size", "51200000", "virtual", "maximal size of a virtual mailbox (0 = no limit)", min=0),
    P("virtual_mailbox_lock", "list", "fcntl, dotlock", "virtual", "virtual mailbox locking methods"),
    # --- commands -----------------------------------------------------------------------
    P("authorized_flush_users", "list", "static:anyone", "postqueue", "users allowed to flush the queue"),
    P("authorized_mailq_users", "list", "static:anyone", "postqueue", "users allowed to list the queue"),
    P("authorized_submit_users", "list", "static:anyone", "sendmail", "users allowed to submit mail"),
    P("authorized_verp_clients", "list", "$mynetworks", "smtpd", "clients allowed to request VERP"),
    P("address_verify_map", "str", "btree:$data_directory/verify_cache", "verify", "address verification cache"),
]

# Postfix 3.7 parameters (postconf -d) that Fulmar registers for
# compatibility only: kind str, owner "postfix", not used by Fulmar.
_POSTFIX_ONLY = r"""
address_verify_cache_cleanup_interval = 12h
address_verify_default_transport = $default_transport
address_verify_local_transport = $local_transport
address_verify_negative_cache = yes
address_verify_negative_expire_time = 3d
address_verify_negative_refresh_time = 3h
address_verify_pending_request_limit = 5000
address_verify_poll_count = ${stress?{1}:{3}}
address_verify_poll_delay = 3s
address_verify_positive_expire_time = 31d
address_verify_positive_refresh_time = 7d
address_verify_relay_transport = $relay_transport
address_verify_relayhost = $relayhost
address_verify_sender = $double_bounce_sender
address_verify_sender_dependent_default_transport_maps = $sender_dependent_default_transport_maps
address_verify_sender_dependent_relayhost_maps = $sender_dependent_relayhost_maps
address_verify_sender_ttl = 0s
address_verify_service_name = verify
address_verify_transport_maps = $transport_maps
address_verify_virtual_transport = $virtual_transport
allow_min_user = no
alternate_config_directories =
always_bcc =
anvil_status_update_time = 600s
application_event_drain_time = 100s
backwards_bounce_logfile_compatibility = yes
berkeley_db_create_buffer_size = 16777216
berkeley_db_read_buffer_size = 131072
best_mx_transport =
body_checks_size_limit = 51200
bounce_service_name = bounce
broken_sasl_auth_clients = no
cleanup_replace_stray_cr_lf = yes
cleanup_service_name = cleanup
command_execution_directory =
confirm_delay_cleared = no
connection_cache_protocol_timeout = 5s
connection_cache_service_name = scache
connection_cache_status_update_time = 600s
connection_cache_ttl_limit = 2s
cyrus_sasl_config_path =
daemon_table_open_error_is_fatal = no
debugger_command =
default_filter_nexthop =
default_rbl_reply = $rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}
default_verp_delimiters = +=
defer_service_name = defer
defer_transports =
detect_8bit_encoding_header = yes
disable_mime_input_processing = no
disable_mime_output_conversion = no
disable_verp_bounces = no
dns_ncache_ttl_fix_enable = no
dnsblog_reply_delay = 0s
dnsblog_service_name = dnsblog
dnssec_probe = ns:.
dont_remove = 0
empty_address_default_transport_maps_lookup_key = <>
empty_address_local_login_sender_maps_lookup_key = <>
empty_address_relayhost_maps_lookup_key = <>
enable_idna2003_compatibility = no
enable_threaded_bounces = no
error_service_name = error
execution_directory_expansion_filter = 1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ
fallback_transport_maps =
fast_flush_purge_time = 7d
fast_flush_refresh_time = 12h
fault_injection_code = 0
flush_service_name = flush
forward_expansion_filter = 1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ
frozen_delivered_to = yes
header_from_format = standard
helpful_warnings = yes
html_directory = /usr/share/doc/postfix/html
ignore_mx_lookup_error = no
info_log_address_format = external
internal_mail_filter_classes =
invalid_hostname_reject_code = 501
ipc_ttl = 1000s
known_tcp_ports = lmtp=24, smtp=25, smtps=submissions=465, submission=587
lmdb_map_size = 16777216
lmtp_address_preference = any
lmtp_address_verify_target = rcpt
lmtp_assume_final = no
lmtp_balance_inet_protocols = yes
lmtp_bind_address =
lmtp_bind_address6 =
lmtp_bind_address_enforce = no
lmtp_body_checks =
lmtp_cname_overrides_servername = no
lmtp_connection_cache_destinations =
lmtp_connection_cache_on_demand = yes
lmtp_connection_cache_time_limit = 2s
lmtp_connection_reuse_count_limit = 0
lmtp_connection_reuse_time_limit = 300s
lmtp_data_done_timeout = 600s
lmtp_data_init_timeout = 120s
lmtp_data_xfer_timeout = 180s
lmtp_defer_if_no_mx_address_found = no
lmtp_discard_lhlo_keyword_address_maps =
lmtp_discard_lhlo_keywords =
lmtp_dns_reply_filter =
lmtp_dns_resolver_options =
lmtp_dns_support_level =
lmtp_enforce_tls = no
lmtp_fallback_relay =
lmtp_generic_maps =
lmtp_header_checks =
lmtp_host_lookup = dns
lmtp_line_length_limit = 998
lmtp_mail_timeout = 300s
lmtp_mime_header_checks =
lmtp_min_data_rate = 500
lmtp_mx_address_limit = 5
lmtp_mx_session_limit = 2
lmtp_nested_header_checks =
lmtp_per_request_deadline = ${lmtp_per_record_deadline?{$lmtp_per_record_deadline}:{no}}
lmtp_pix_workaround_delay_time = 10s
lmtp_pix_workaround_maps =
lmtp_pix_workaround_threshold_time = 500s
lmtp_pix_workarounds = disable_esmtp,delay_dotcrlf
lmtp_quit_timeout = 300s
lmtp_quote_rfc821_envelope = yes
lmtp_randomize_addresses = yes
lmtp_rcpt_timeout = 300s
lmtp_reply_filter =
lmtp_rset_timeout = 20s
lmtp_sasl_auth_cache_name =
lmtp_sasl_auth_cache_time = 90d
lmtp_sasl_auth_soft_bounce = yes
lmtp_sasl_mechanism_filter =
lmtp_sasl_password_maps =
lmtp_sasl_path =
lmtp_sasl_security_options = noplaintext, noanonymous
lmtp_sasl_tls_security_options = $lmtp_sasl_security_options
lmtp_sasl_tls_verified_security_options = $lmtp_sasl_tls_security_options
lmtp_sasl_type = cyrus
lmtp_send_dummy_mail_auth = no
lmtp_send_xforward_command = no
lmtp_sender_dependent_authentication = no
lmtp_skip_5xx_greeting = yes
lmtp_skip_quit_response = no
lmtp_starttls_timeout = 300s
lmtp_tls_CAfile =
lmtp_tls_CApath =
lmtp_tls_block_early_mail_reply = no
lmtp_tls_cert_file =
lmtp_tls_chain_files =
lmtp_tls_ciphers = medium
lmtp_tls_connection_reuse = no
lmtp_tls_dcert_file =
lmtp_tls_dkey_file = $lmtp_tls_dcert_file
lmtp_tls_eccert_file =
lmtp_tls_eckey_file = $lmtp_tls_eccert_file
lmtp_tls_enforce_peername = yes
lmtp_tls_exclude_ciphers =
lmtp_tls_fingerprint_cert_match =
lmtp_tls_fingerprint_digest = ${{$compatibility_level} <level {3.6} ? {md5} : {sha256}}
lmtp_tls_force_insecure_host_tlsa_lookup = no
lmtp_tls_key_file = $lmtp_tls_cert_file
lmtp_tls_loglevel = 0
lmtp_tls_mandatory_ciphers = medium
lmtp_tls_mandatory_exclude_ciphers =
lmtp_tls_mandatory_protocols = >=TLSv1
lmtp_tls_note_starttls_offer = no
lmtp_tls_per_site =
lmtp_tls_policy_maps =
lmtp_tls_protocols = >=TLSv1
lmtp_tls_scert_verifydepth = 9
lmtp_tls_secure_cert_match = nexthop
lmtp_tls_servername =
lmtp_tls_session_cache_database =
lmtp_tls_session_cache_timeout = 3600s
lmtp_tls_trust_anchor_file =
lmtp_tls_verify_cert_match = hostname
lmtp_tls_wrappermode = no
lmtp_use_tls = no
lmtp_xforward_timeout = 300s
local_login_sender_maps = static:*
mail_release_date = 20240304
maillog_file_compressor = gzip
maillog_file_rotate_suffix = %Y%m%d-%H%M%S
manpage_directory = /usr/share/man
maps_rbl_domains =
master_service_disable =
message_drop_headers = bcc, content-length, resent-bcc, return-path
meta_directory = /etc/postfix
milter_connect_macros = j {daemon_name} {daemon_addr} v _
milter_data_macros = i
milter_end_of_data_macros = i
milter_end_of_header_macros = i
milter_header_checks =
milter_helo_macros = {tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}
milter_macro_defaults =
milter_macro_v = $mail_name $mail_version
milter_mail_macros = i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}
milter_rcpt_macros = i {rcpt_addr} {rcpt_host} {rcpt_mailer}
milter_unknown_command_macros =
mime_boundary_length_limit = 2048
mime_nesting_limit = 100
multi_instance_directories =
multi_instance_group =
multi_instance_wrapper =
multi_recipient_bounce_reject_code = 550
openssl_path = openssl
permit_mx_backup_networks =
pickup_service_name = pickup
postlog_service_name = postlog
postlogd_watchdog_timeout = 10s
postmulti_control_commands = reload flush
postmulti_start_commands = start
postmulti_stop_commands = stop abort drain quick-stop
postscreen_access_list = permit_mynetworks
postscreen_allowlist_interfaces = ${postscreen_whitelist_interfaces?{$postscreen_whitelist_interfaces}:{static:all}}
postscreen_bare_newline_action = ignore
postscreen_bare_newline_enable = no
postscreen_bare_newline_ttl = 30d
postscreen_cache_cleanup_interval = 12h
postscreen_cache_map = btree:$data_directory/postscreen_cache
postscreen_cache_retention_time = 7d
postscreen_client_connection_count_limit = $smtpd_client_connection_count_limit
postscreen_command_count_limit = 20
postscreen_command_filter =
postscreen_command_time_limit = ${stress?{10}:{300}}s
postscreen_denylist_action = ${postscreen_blacklist_action?{$postscreen_blacklist_action}:{ignore}}
postscreen_disable_vrfy_command = $disable_vrfy_command
postscreen_discard_ehlo_keyword_address_maps = $smtpd_discard_ehlo_keyword_address_maps
postscreen_discard_ehlo_keywords = $smtpd_discard_ehlo_keywords
postscreen_dnsbl_action = ignore
postscreen_dnsbl_allowlist_threshold = ${postscreen_dnsbl_whitelist_threshold?{$postscreen_dnsbl_whitelist_threshold}:{0}}
postscreen_dnsbl_max_ttl = ${postscreen_dnsbl_ttl?{$postscreen_dnsbl_ttl}:{1}}h
postscreen_dnsbl_min_ttl = 60s
postscreen_dnsbl_reply_map =
postscreen_dnsbl_sites =
postscreen_dnsbl_threshold = 1
postscreen_dnsbl_timeout = 10s
postscreen_enforce_tls = $smtpd_enforce_tls
postscreen_expansion_filter = $smtpd_expansion_filter
postscreen_forbidden_commands = $smtpd_forbidden_commands
postscreen_greet_action = ignore
postscreen_greet_banner = $smtpd_banner
postscreen_greet_ttl = 1d
postscreen_greet_wait = ${stress?{2}:{6}}s
postscreen_helo_required = $smtpd_helo_required
postscreen_non_smtp_command_action = drop
postscreen_non_smtp_command_enable = no
postscreen_non_smtp_command_ttl = 30d
postscreen_pipelining_action = enforce
postscreen_pipelining_enable = no
postscreen_pipelining_ttl = 30d
postscreen_post_queue_limit = $default_process_limit
postscreen_pre_queue_limit = $default_process_limit
postscreen_reject_footer = $smtpd_reject_footer
postscreen_reject_footer_maps = $smtpd_reject_footer_maps
postscreen_tls_security_level = $smtpd_tls_security_level
postscreen_upstream_proxy_protocol =
postscreen_upstream_proxy_timeout = 5s
postscreen_use_tls = $smtpd_use_tls
postscreen_watchdog_timeout = 10s
proxy_read_maps = $local_recipient_maps $mydestination $virtual_alias_maps $virtual_alias_domains $virtual_mailbox_maps $virtual_mailbox_domains $relay_recipient_maps $relay_domains $canonical_maps $sender_canonical_maps $recipient_canonical_maps $relocated_maps $transport_maps $mynetworks $smtpd_sender_login_maps $sender_bcc_maps $recipient_bcc_maps $smtp_generic_maps $lmtp_generic_maps $alias_maps $smtpd_client_restrictions $smtpd_helo_restrictions $smtpd_sender_restrictions $smtpd_relay_restrictions $smtpd_recipient_restrictions $address_verify_sender_dependent_default_transport_maps $address_verify_sender_dependent_relayhost_maps $address_verify_transport_maps $fallback_transport_maps $lmtp_discard_lhlo_keyword_address_maps $lmtp_pix_workaround_maps $lmtp_sasl_password_maps $lmtp_tls_policy_maps $mailbox_command_maps $mailbox_transport_maps $postscreen_discard_ehlo_keyword_address_maps $rbl_reply_maps $sender_dependent_default_transport_maps $sender_dependent_relayhost_maps $smtp_discard_ehlo_keyword_address_maps $smtp_pix_workaround_maps $smtp_sasl_password_maps $smtp_tls_policy_maps $smtpd_discard_ehlo_keyword_address_maps $smtpd_milter_maps $virtual_gid_maps $virtual_uid_maps $local_login_sender_maps $postscreen_reject_footer_maps $smtpd_reject_footer_maps $tls_server_sni_maps $tlsproxy_client_policy_maps $default_delivery_status_filter $lmtp_delivery_status_filter $lmtp_dns_reply_filter $lmtp_reply_filter $local_delivery_status_filter $pipe_delivery_status_filter $postscreen_command_filter $smtp_delivery_status_filter $smtp_dns_reply_filter $smtp_reply_filter $smtpd_command_filter $smtpd_dns_reply_filter $virtual_delivery_status_filter $body_checks $header_checks $lmtp_body_checks $lmtp_header_checks $lmtp_mime_header_checks $lmtp_nested_header_checks $milter_header_checks $mime_header_checks $nested_header_checks $smtp_body_checks $smtp_header_checks $smtp_mime_header_checks $smtp_nested_header_checks
proxy_write_maps = $smtp_sasl_auth_cache_name $lmtp_sasl_auth_cache_name $address_verify_map $postscreen_cache_map
proxymap_service_name = proxymap
proxywrite_service_name = proxywrite
qmgr_clog_warn_time = 300s
qmgr_daemon_timeout = 1000s
qmgr_fudge_factor = 100
qmgr_ipc_timeout = 60s
qmgr_message_recipient_minimum = 10
qmqpd_authorized_clients =
qmqpd_client_port_logging = no
qmqpd_error_delay = 1s
qmqpd_timeout = 300s
queue_file_attribute_count_limit = 100
queue_service_name = qmgr
rbl_reply_maps =
readme_directory = /usr/share/doc/postfix
recipient_bcc_maps =
reject_tempfail_action = defer_if_permit
relay_clientcerts =
require_home_directory = no
reset_owner_alias = no
resolve_null_domain = no
resolve_numeric_domain = no
respectful_logging = ${{$compatibility_level} <level {3.6} ? {no} : {yes}}
rewrite_service_name = rewrite
sample_directory = /etc/postfix
send_cyrus_sasl_authzid = no
sender_bcc_maps =
sendmail_fix_line_endings = always
shlib_directory = /usr/lib/postfix
show_user_unknown_table_name = yes
showq_service_name = showq
smtp_address_verify_target = rcpt
smtp_balance_inet_protocols = yes
smtp_bind_address_enforce = no
smtp_body_checks =
smtp_cname_overrides_servername = no
smtp_connection_cache_destinations =
smtp_connection_cache_on_demand = yes
smtp_connection_cache_time_limit = 2s
smtp_connection_reuse_count_limit = 0
smtp_connection_reuse_time_limit = 300s
smtp_defer_if_no_mx_address_found = no
smtp_discard_ehlo_keyword_address_maps =
smtp_discard_ehlo_keywords =
smtp_dns_reply_filter =
smtp_dns_resolver_options =
smtp_enforce_tls = no
smtp_header_checks =
smtp_mime_header_checks =
smtp_min_data_rate = 500
smtp_nested_header_checks =
smtp_per_request_deadline = ${smtp_per_record_deadline?{$smtp_per_record_deadline}:{no}}
smtp_pix_workaround_delay_time = 10s
smtp_pix_workaround_maps =
smtp_pix_workaround_threshold_time = 500s
smtp_pix_workarounds = disable_esmtp,delay_dotcrlf
smtp_quote_rfc821_envelope = yes
smtp_randomize_addresses = yes
smtp_reply_filter =
smtp_sasl_auth_cache_name =
smtp_sasl_auth_cache_time = 90d
smtp_sasl_auth_soft_bounce = yes
smtp_sasl_tls_verified_security_options = $smtp_sasl_tls_security_options
smtp_send_dummy_mail_auth = no
smtp_sender_dependent_authentication = no
smtp_skip_quit_response = yes
smtp_tls_block_early_mail_reply = no
smtp_tls_connection_reuse = no
smtp_tls_dane_insecure_mx_policy = ${{$smtp_tls_security_level} == {dane} ? {dane} : {may}}
smtp_tls_dcert_file =
smtp_tls_dkey_file = $smtp_tls_dcert_file
smtp_tls_eccert_file =
smtp_tls_eckey_file = $smtp_tls_eccert_file
smtp_tls_enforce_peername = yes
smtp_tls_exclude_ciphers =
smtp_tls_fingerprint_cert_match =
smtp_tls_fingerprint_digest = ${{$compatibility_level} <level {3.6} ? {md5} : {sha256}}
smtp_tls_force_insecure_host_tlsa_lookup = no
smtp_tls_mandatory_exclude_ciphers =
smtp_tls_per_site =
smtp_tls_scert_verifydepth = 9
smtp_tls_trust_anchor_file =
smtp_use_tls = no
smtp_xforward_timeout = 300s
smtpd_authorized_verp_clients = $authorized_verp_clients
smtpd_authorized_xforward_hosts =
smtpd_delay_open_until_valid_rcpt = yes
smtpd_discard_ehlo_keyword_address_maps =
smtpd_dns_reply_filter =
smtpd_enforce_tls = no
smtpd_expansion_filter = \t\40!"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~
smtpd_milter_maps =
smtpd_min_data_rate = 500
smtpd_noop_commands =
smtpd_per_request_deadline = ${smtpd_per_record_deadline?{$smtpd_per_record_deadline}:{${stress?{yes}:{no}}}}
smtpd_policy_service_default_action = 451 4.3.5 Server configuration problem
smtpd_policy_service_policy_context =
smtpd_policy_service_request_limit = 0
smtpd_policy_service_retry_delay = 1s
smtpd_policy_service_try_limit = 2
smtpd_proxy_ehlo = $myhostname
smtpd_proxy_options =
smtpd_proxy_timeout = 100s
smtpd_reject_footer_maps =
smtpd_relay_before_recipient_restrictions = ${{$compatibility_level} <level {3.6} ? {no} : {yes}}
smtpd_sasl_mechanism_filter = !external, static:rest
smtpd_sasl_response_limit = 12288
smtpd_service_name = smtpd
smtpd_tls_always_issue_session_ids = yes
smtpd_tls_ccert_verifydepth = 9
smtpd_tls_dcert_file =
smtpd_tls_dh1024_param_file =
smtpd_tls_dh512_param_file =
smtpd_tls_dkey_file = $smtpd_tls_dcert_file
smtpd_tls_eecdh_grade = auto
smtpd_tls_exclude_ciphers =
smtpd_tls_fingerprint_digest = ${{$compatibility_level} <level {3.6} ? {md5} : {sha256}}
smtpd_tls_mandatory_exclude_ciphers =
smtpd_upstream_proxy_timeout = 5s
smtpd_use_tls = no
smtputf8_autodetect_classes = sendmail, verify
strict_7bit_headers = no
strict_8bitmime = no
strict_8bitmime_body = no
strict_mailbox_ownership = yes
strict_mime_encoding_domain = no
strict_smtputf8 = no
sun_mailtool_compatibility = no
tcp_windowsize = 0
tls_append_default_CA = no
tls_config_file = default
tls_config_name =
tls_daemon_random_bytes = 32
tls_dane_digests = sha512 sha256
tls_disable_workarounds =
tls_eecdh_auto_curves = X25519 X448 prime256v1 secp521r1 secp384r1
tls_eecdh_strong_curve = prime256v1
tls_eecdh_ultra_curve = secp384r1
tls_export_cipherlist = aNULL:-aNULL:HIGH:MEDIUM:LOW:EXPORT:+RC4:@STRENGTH
tls_fast_shutdown_enable = yes
tls_legacy_public_key_fingerprints = no
tls_low_cipherlist = aNULL:-aNULL:HIGH:MEDIUM:LOW:+RC4:@STRENGTH
tls_null_cipherlist = eNULL:!aNULL
tls_preempt_cipherlist = no
tls_random_bytes = 32
tls_random_exchange_name = ${data_directory}/prng_exch
tls_random_prng_update_period = 3600s
tls_random_reseed_period = 3600s
tls_session_ticket_cipher = aes-256-cbc
tls_ssl_options =
tls_wildcard_matches_multiple_labels = yes
tlsmgr_service_name = tlsmgr
tlsproxy_client_CAfile = $smtp_tls_CAfile
tlsproxy_client_CApath = $smtp_tls_CApath
tlsproxy_client_cert_file = $smtp_tls_cert_file
tlsproxy_client_chain_files = $smtp_tls_chain_files
tlsproxy_client_dcert_file = $smtp_tls_dcert_file
tlsproxy_client_dkey_file = $smtp_tls_dkey_file
tlsproxy_client_eccert_file = $smtp_tls_eccert_file
tlsproxy_client_eckey_file = $smtp_tls_eckey_file
tlsproxy_client_enforce_tls = $smtp_enforce_tls
tlsproxy_client_fingerprint_digest = $smtp_tls_fingerprint_digest
tlsproxy_client_key_file = $smtp_tls_key_file
tlsproxy_client_loglevel = $smtp_tls_loglevel
tlsproxy_client_loglevel_parameter = smtp_tls_loglevel
tlsproxy_client_per_site = $smtp_tls_per_site
tlsproxy_client_policy_maps = ${tlsproxy_client_policy:$smtp_tls_policy_maps}
tlsproxy_client_scert_verifydepth = $smtp_tls_scert_verifydepth
tlsproxy_client_security_level = ${tlsproxy_client_level:$smtp_tls_security_level}
tlsproxy_client_use_tls = $smtp_use_tls
tlsproxy_enforce_tls = $smtpd_enforce_tls
tlsproxy_service_name = tlsproxy
tlsproxy_tls_CAfile = $smtpd_tls_CAfile
tlsproxy_tls_CApath = $smtpd_tls_CApath
tlsproxy_tls_always_issue_session_ids = $smtpd_tls_always_issue_session_ids
tlsproxy_tls_ask_ccert = $smtpd_tls_ask_ccert
tlsproxy_tls_ccert_verifydepth = $smtpd_tls_ccert_verifydepth
tlsproxy_tls_cert_file = $smtpd_tls_cert_file
tlsproxy_tls_chain_files = $smtpd_tls_chain_files
tlsproxy_tls_ciphers = $smtpd_tls_ciphers
tlsproxy_tls_dcert_file = $smtpd_tls_dcert_file
tlsproxy_tls_dh1024_param_file = $smtpd_tls_dh1024_param_file
tlsproxy_tls_dh512_param_file = $smtpd_tls_dh512_param_file
tlsproxy_tls_dkey_file = $smtpd_tls_dkey_file
tlsproxy_tls_eccert_file = $smtpd_tls_eccert_file
tlsproxy_tls_eckey_file = $smtpd_tls_eckey_file
tlsproxy_tls_eecdh_grade = $smtpd_tls_eecdh_grade
tlsproxy_tls_exclude_ciphers = $smtpd_tls_exclude_ciphers
tlsproxy_tls_fingerprint_digest = $smtpd_tls_fingerprint_digest
tlsproxy_tls_key_file = $smtpd_tls_key_file
tlsproxy_tls_loglevel = $smtpd_tls_loglevel
tlsproxy_tls_mandatory_ciphers = $smtpd_tls_mandatory_ciphers
tlsproxy_tls_mandatory_exclude_ciphers = $smtpd_tls_mandatory_exclude_ciphers
tlsproxy_tls_mandatory_protocols = $smtpd_tls_mandatory_protocols
tlsproxy_tls_protocols = $smtpd_tls_protocols
tlsproxy_tls_req_ccert = $smtpd_tls_req_ccert
tlsproxy_tls_security_level = $smtpd_tls_security_level
tlsproxy_use_tls = $smtpd_use_tls
tlsproxy_watchdog_timeout = 10s
trace_service_name = trace
unknown_address_tempfail_action = $reject_tempfail_action
unknown_client_reject_code = 450
unknown_helo_hostname_tempfail_action = $reject_tempfail_action
unverified_recipient_defer_code = 450
unverified_recipient_reject_reason =
unverified_recipient_tempfail_action = $reject_tempfail_action
unverified_sender_defer_code = 450
unverified_sender_reject_code = 450
unverified_sender_reject_reason =
unverified_sender_tempfail_action = $reject_tempfail_action
verp_delimiter_filter = -=+
virtual_alias_address_length_limit = 1000
smtpd_tls_enable_rpk = no
smtp_tls_enable_rpk = no
"""

# Per-transport parameters: `<transport>_<suffix>` falls back to the
# parameter named here (Postfix's qmgr and delivery agents do the same).
TRANSPORT_SUFFIXES: dict[str, str] = {
    "destination_concurrency_limit": "default_destination_concurrency_limit",
    "destination_recipient_limit": "default_destination_recipient_limit",
    "destination_rate_delay": "default_destination_rate_delay",
    "transport_rate_delay": "default_transport_rate_delay",
    "initial_destination_concurrency": "initial_destination_concurrency",
    "destination_concurrency_failed_cohort_limit": "default_destination_concurrency_failed_cohort_limit",
    "destination_concurrency_positive_feedback": "default_destination_concurrency_positive_feedback",
    "destination_concurrency_negative_feedback": "default_destination_concurrency_negative_feedback",
    "recipient_limit": "default_recipient_limit",
    "extra_recipient_limit": "default_extra_recipient_limit",
    "recipient_refill_limit": "default_recipient_refill_limit",
    "recipient_refill_delay": "default_recipient_refill_delay",
    "delivery_slot_cost": "default_delivery_slot_cost",
    "delivery_slot_loan": "default_delivery_slot_loan",
    "delivery_slot_discount": "default_delivery_slot_discount",
    "minimum_delivery_slots": "default_minimum_delivery_slots",
    "delivery_status_filter": "default_delivery_status_filter",
    "time_limit": "command_time_limit",
}


def split_transport_name(name: str) -> tuple[str, str] | None:
    """`slow_destination_rate_delay` → ("slow", "destination_rate_delay")."""
    for suffix in TRANSPORT_SUFFIXES:
        if name.endswith("_" + suffix) and len(name) > len(suffix) + 1:
            return name[: -len(suffix) - 1], suffix
    return None


def transport_param_spec(name: str) -> Param | None:
    """The Param for a per-transport name such as `slow_destination_rate_delay`.

    Returns a Param whose default is `$<fallback>` and whose kind and bounds
    are the fallback's, or None when `name` is not of that form.  Registered
    names (e.g. `local_destination_concurrency_limit`) are in PARAMS itself.
    """
    split = split_transport_name(name)
    if split is not None:
        transport, suffix = split
        fallback = TRANSPORT_SUFFIXES[suffix]
        if fallback == name:
            return None
        base = PARAMS[fallback]
        return Param(name, base.kind, "$" + fallback, base.owner,
                     f"{suffix.replace('_', ' ')} of the {transport} transport",
                     min=base.min, max=base.max, unit=base.unit,
                     choices=base.choices)
    return None


def _compat_params() -> list[Param]:
    out = []
    for line in _POSTFIX_ONLY.splitlines():
        if not line:
            continue
        name, _, default = line.partition(" =")
        out.append(Param(name, "str", default.lstrip(" "), "postfix",
                         "Postfix parameter, accepted for compatibility; Fulmar does not use it",
                         compat=True))
    return out


def _lmtp_params(declared: list[Param]) -> list[Param]:
    """lmtp_* twins of the smtp_* client parameters, as Postfix has them.

    Postfix's lmtp(8) is smtp(8) under another name and reads lmtp_X where
    smtp(8) reads smtp_X (helo becomes lhlo); the defaults are the same.
    """
    names = {p.name for p in declared}
    out = []
    for p in declared:
        if p.owner != "smtp" or not p.name.startswith("smtp_"):
            continue
        name = "lmtp_" + p.name[len("smtp_"):].replace("helo_", "lhlo_")
        if name in names:
            continue
        out.append(Param(name, p.kind, p.default, "lmtp", p.help.replace("SMTP", "LMTP"),
                         min=p.min, max=p.max, unit=p.unit, choices=p.choices))
        names.add(name)
    return out


def _build() -> dict[str, Param]:
    params: dict[str, Param] = {}
    lmtp = _lmtp_params(_DECLARED)
    declared = {p.name for p in _DECLARED + lmtp}
    compat = [p for p in _compat_params() if p.name not in declared]
    for p in _DECLARED + lmtp + compat:
        if p.kind not in KINDS:
            raise AssertionError(f"{p.name}: bad kind {p.kind}")
        if p.name in params:
            raise AssertionError(f"{p.name}: declared twice")
        params[p.name] = p
    return params


PARAMS: dict[str, Param] = _build()

# Parameters that an admin sets to change what happens to mail, and that
# Fulmar accepts but does not implement (yet): a main.cf or master.cf -o
# that sets one to other than its default gets a warning from master at
# start and reload and from `postfix check` (fulmar.config.unimplemented;
# docs/deviations.md, "Parameters accepted but not implemented").
NOT_IMPLEMENTED = frozenset({
    # content inspection
    "header_checks", "mime_header_checks", "nested_header_checks", "body_checks",
    "smtp_header_checks", "smtp_mime_header_checks", "smtp_nested_header_checks",
    "smtp_body_checks", "lmtp_header_checks", "lmtp_mime_header_checks",
    "lmtp_nested_header_checks", "lmtp_body_checks", "milter_header_checks",
    "message_reject_characters", "message_strip_characters",
    "content_filter", "smtpd_proxy_filter", "smtpd_command_filter",
    "smtpd_milters", "non_smtpd_milters",
    # client rate limits (Postfix's anvil)
    "smtpd_client_connection_rate_limit", "smtpd_client_message_rate_limit",
    "smtpd_client_recipient_rate_limit", "smtpd_client_new_tls_session_rate_limit",
    # others
    "smtpd_reject_unlisted_sender", "queue_minfree", "in_flow_delay",
    "smtp_bind_address", "smtp_bind_address6",
})
