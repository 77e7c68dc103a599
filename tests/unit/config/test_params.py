"""The parameter registry: every default parses for its type."""

import pytest

from fulmar import config
from fulmar.config.params import KINDS, PARAMS, TRANSPORT_SUFFIXES, transport_param_spec


@pytest.fixture(params=["0", "2", "3.9"])
def cfg(request, tmp_path):
    (tmp_path / "main.cf").write_text(f"compatibility_level = {request.param}\n")
    return config.load(str(tmp_path))


def test_every_default_parses_for_its_type(cfg):
    pytypes = {"str": str, "int": int, "bool": bool, "time": int, "size": int, "list": list}
    for name, p in PARAMS.items():
        value = cfg.get(name)
        assert isinstance(value, pytypes[p.kind]), name
        if p.kind in ("int", "time", "size"):
            assert p.min is None or value >= p.min, name
            assert p.max is None or value <= p.max, name


def test_declarations_are_well_formed():
    for name, p in PARAMS.items():
        assert p.name == name
        assert p.kind in KINDS
        assert p.help and "\n" not in p.help
        assert p.owner
        assert not (p.compat and p.fulmar)
        if p.fulmar:
            assert "Fulmar" in p.help
    for fallback in TRANSPORT_SUFFIXES.values():
        assert fallback in PARAMS


# Named in the issues, DESIGN.md and POSTFIX_SURFACE.md, with Postfix 3.9's defaults.
@pytest.mark.parametrize("name, default", [
    ("mydestination", "$myhostname, localhost.$mydomain, localhost"),
    ("smtpd_banner", "$myhostname ESMTP $mail_name"),
    ("queue_directory", "/var/spool/postfix"), ("mail_owner", "postfix"),
    ("message_size_limit", "10240000"), ("line_length_limit", "2048"),
    ("header_size_limit", "102400"), ("smtpd_recipient_limit", "1000"),
    ("smtpd_soft_error_limit", "10"), ("smtpd_forbid_bare_newline", "normalize"),
    ("smtpd_forbid_unauth_pipelining", "yes"), ("service_throttle_time", "60s"),
    ("qmgr_message_active_limit", "20000"), ("minimal_backoff_time", "300s"),
    ("maximal_backoff_time", "4000s"), ("queue_run_delay", "300s"),
    ("maximal_queue_lifetime", "5d"), ("bounce_queue_lifetime", "5d"),
    ("delay_warning_time", "0h"), ("default_destination_concurrency_limit", "20"),
    ("initial_destination_concurrency", "5"), ("default_destination_recipient_limit", "50"),
    ("default_destination_rate_delay", "0s"), ("local_destination_concurrency_limit", "2"),
    ("local_destination_recipient_limit", "1"), ("smtp_connect_timeout", "30s"),
    ("smtp_helo_timeout", "300s"), ("smtp_data_init_timeout", "120s"),
    ("smtp_data_xfer_timeout", "180s"), ("smtp_data_done_timeout", "600s"),
    ("smtp_quit_timeout", "300s"), ("smtp_mx_address_limit", "5"), ("smtp_mx_session_limit", "2"),
    ("smtp_tcp_port", "smtp"), ("relayhost", ""), ("hash_queue_names", "deferred, defer"),
    ("hash_queue_depth", "1"), ("enable_long_queue_ids", "yes"),
    ("2bounce_notice_recipient", "postmaster"), ("notify_classes", "resource, software"),
    ("syslog_name", "${multi_instance_name?{$multi_instance_name}:{postfix}}"),
    ("syslog_facility", "mail"), ("maillog_file", ""), ("daemon_timeout", "18000s"),
    ("default_process_limit", "100"), ("inet_interfaces", "all"), ("inet_protocols", "all"),
    ("hopcount_limit", "50"), ("smtpd_client_connection_count_limit", "50"),
    ("default_transport", "smtp"), ("relay_transport", "relay"),
    ("local_transport", "local:$myhostname"), ("dns_server_addresses", ""),
    ("local_recipient_maps", "proxy:unix:passwd.byname $alias_maps"),
    ("mailbox_size_limit", "51200000"), ("virtual_alias_maps", "$virtual_maps"),
    ("smtpd_tls_key_file", "$smtpd_tls_cert_file"), ("milter_default_action", "tempfail"),
])
def test_postfix_defaults(name, default):
    assert PARAMS[name].default == default


def test_named_parameters_are_declared_with_types():
    assert PARAMS["smtp_tls_security_level"].kind == "str"
    assert PARAMS["smtpd_sasl_auth_enable"].kind == "bool"
    assert PARAMS["message_size_limit"].kind == "size"
    assert PARAMS["smtpd_relay_restrictions"].kind == "list"
    assert PARAMS["maximal_queue_lifetime"].unit == "d"
    assert PARAMS["dns_server_addresses"].fulmar
    for name in ("tls_server_sni_maps", "smtp_sasl_password_maps", "virtual_uid_maps",
                 "virtual_alias_recursion_limit", "luser_relay", "lmtp_tcp_port",
                 "smtpd_sender_login_maps", "sender_dependent_default_transport_maps"):
        assert not PARAMS[name].compat, name


def test_postfix_only_parameters_are_accepted(tmp_path):
    (tmp_path / "main.cf").write_text("biff = no\nreadme_directory = no\n"
                                      "smtpd_tls_session_cache_database = btree:x\n")
    cfg = config.load(str(tmp_path))
    assert cfg.warnings == []
    assert PARAMS["readme_directory"].compat


def test_transport_param_spec():
    p = transport_param_spec("slow_destination_rate_delay")
    assert p.kind == "time" and p.default == "$default_destination_rate_delay"
    assert transport_param_spec("myhostname") is None


def test_computed_defaults(tmp_path, monkeypatch):
    import socket
    monkeypatch.setattr(socket, "gethostname", lambda: "box")
    cfg = config.load(str(tmp_path))
    assert cfg["myhostname"] == "box.localdomain"
    assert cfg["mydomain"] == "localdomain"
    monkeypatch.setattr(socket, "gethostname", lambda: "mx1.example.net")
    cfg = config.load(str(tmp_path))
    assert cfg["myhostname"] == "mx1.example.net"
    assert cfg["mydomain"] == "example.net"


def test_mynetworks_host_style_falls_back_to_loopback(tmp_path, monkeypatch):
    from fulmar.config import params
    monkeypatch.setattr(params, "interface_networks", lambda: [])
    (tmp_path / "main.cf").write_text("compatibility_level = 3.9\n")
    assert config.load(str(tmp_path))["mynetworks"] == ["127.0.0.0/8", "[::1]/128"]


def test_mynetworks_styles(tmp_path, monkeypatch):
    import ipaddress
    from fulmar.config import params
    ifaces = [ipaddress.ip_interface("127.0.0.1/8"), ipaddress.ip_interface("10.1.2.3/16"),
              ipaddress.ip_interface("::1/128"), ipaddress.ip_interface("fd00::2/64")]
    monkeypatch.setattr(params, "interface_networks", lambda: ifaces)
    cfg = config.load(str(tmp_path), {"mynetworks_style": "host"})
    assert cfg["mynetworks"] == ["127.0.0.0/8", "10.1.2.3/32", "[::1]/128", "[fd00::2]/128"]
    cfg = config.load(str(tmp_path), {"mynetworks_style": "subnet"})
    assert cfg["mynetworks"] == ["127.0.0.0/8", "10.1.0.0/16", "[::1]/128", "[fd00::]/64"]
    cfg = config.load(str(tmp_path), {"mynetworks_style": "class"})
    assert "10.0.0.0/8" in cfg["mynetworks"]


def test_not_implemented_names_are_parameters_nothing_reads():
    # The list behind master's "not implemented" warning (docs/deviations.md).
    # A daemon that starts reading one of these must take it off the list,
    # or admins are told that a working setting does nothing.
    import pathlib
    from fulmar.config.params import NOT_IMPLEMENTED
    assert NOT_IMPLEMENTED <= PARAMS.keys()
    root = pathlib.Path(__file__).resolve().parents[3]
    sources = [p for d in ("fulmar", "master", "smtpd", "cleanup", "qmgr", "smtp_client",
                           "local", "bounce") for p in (root / d).rglob("*.py")
               if p.parts[-3:-1] != ("fulmar", "config")]
    assert len(sources) > 50
    text = "\n".join(p.read_text() for p in sources)
    assert [n for n in sorted(NOT_IMPLEMENTED) if f'"{n}"' in text] == []
