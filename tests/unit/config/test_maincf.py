"""main.cf syntax, expansion and typed values."""

import pytest
from hypothesis import given, settings, strategies as st

from fulmar import config
from fulmar.config import ConfigError
from fulmar.config.maincf import expand_text, parse_main_cf, split_list


def write(tmp_path, text, name="main.cf"):
    (tmp_path / name).write_text(text)
    return str(tmp_path)


def load(tmp_path, text, **kw):
    return config.load(write(tmp_path, text), **kw)


# --- syntax ------------------------------------------------------------------

def test_continuation_comments_and_blank_lines(tmp_path):
    cfg = load(tmp_path, "mydestination = a\n# comment\n\n     b,\n\t c\n  # indented\n  d\n"
                         "relayhost=z\n")
    assert cfg.raw("mydestination") == "a b, c d"
    assert cfg["mydestination"] == ["a", "b", "c", "d"]
    assert cfg.raw("relayhost") == "z"


def test_white_space_around_equals_is_optional(tmp_path):
    cfg = load(tmp_path, "relayhost=[a.example]:587\nmyorigin   =    b.example   \n")
    assert cfg["relayhost"] == "[a.example]:587"
    assert cfg["myorigin"] == "b.example"


def test_last_assignment_wins_and_location(tmp_path):
    cfg = load(tmp_path, "message_size_limit = 1\n\nmessage_size_limit = 2\n")
    assert cfg["message_size_limit"] == 2
    assert cfg.location("message_size_limit") == f"{tmp_path}/main.cf:3"


def test_missing_main_cf_means_defaults(tmp_path):
    cfg = config.load(str(tmp_path))
    assert cfg["message_size_limit"] == 10240000
    assert cfg.warnings == []


def test_missing_equals_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, "# x\ngarbage line\n")
    assert str(e.value) == f"{tmp_path}/main.cf:2: missing '=' after attribute name: \"garbage line\""


def test_missing_name_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"main.cf:1: missing attribute name"):
        load(tmp_path, "= v\n")


def test_leading_white_space_line_is_ignored_with_warning(tmp_path):
    cfg = load(tmp_path, "  relayhost = x\nmyorigin = y\n")
    assert cfg["relayhost"] == ""
    assert any("main.cf:1: logical line must not start with whitespace" in w for w in cfg.warnings)


def test_unknown_name_warns_with_file_and_line(tmp_path):
    cfg = load(tmp_path, "myorigin = x\n\nno_such_thing = 1\n")
    assert cfg.warnings == [f"{tmp_path}/main.cf:3: unknown parameter name: no_such_thing"]
    assert cfg["myorigin"] == "x"


def test_user_defined_names_do_not_warn(tmp_path):
    cfg = load(tmp_path, "smtpd_restriction_classes = mylist\nmylist = reject\n"
                         "smtpd_recipient_restrictions = $mua_restr\nmua_restr = permit\n")
    assert cfg.warnings == []
    assert cfg["mylist"] == "reject"
    assert cfg["smtpd_recipient_restrictions"] == ["permit"]


def test_per_transport_names(tmp_path):
    write(tmp_path, "slow unix - - n - 1 smtp\n", "master.cf")
    cfg = load(tmp_path, "slow_destination_rate_delay = 12s\nfast_destination_rate_delay = 1s\n")
    assert cfg.transport_param("slow", "destination_rate_delay") == 12
    assert cfg.transport_param("smtp", "destination_rate_delay") == 0
    assert cfg.transport_param("smtp", "destination_concurrency_limit") == 20
    assert cfg.transport_param("local", "destination_concurrency_limit") == 2
    # "fast" is not a master.cf service: Postfix calls it unused.
    assert cfg.warnings == [f"{tmp_path}/main.cf:2: unknown parameter name: fast_destination_rate_delay"]


def test_per_transport_value_is_type_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"main.cf:1: parameter slow_destination_rate_delay: bad time"):
        load(tmp_path, "slow_destination_rate_delay = 12x\n")


# --- bad values ----------------------------------------------------------------

@pytest.mark.parametrize("line, message", [
    ("message_size_limit = ten", "bad numerical configuration: message_size_limit = ten"),
    ("message_size_limit =", "bad numerical configuration: message_size_limit = "),
    ("smtpd_helo_required = maybe", "bad boolean configuration: smtpd_helo_required = maybe"),
    ("smtpd_timeout = 5x", "parameter smtpd_timeout: bad time value or unit: 5x"),
    ("smtpd_timeout = 0", "invalid smtpd_timeout parameter value: 0 < 1"),
    ("smtpd_recipient_limit = 0", "invalid smtpd_recipient_limit parameter value: 0 < 1"),
    ("smtpd_tls_security_level = sometimes", "invalid smtpd_tls_security_level parameter value: \"sometimes\""),
    ("smtpd_banner = $", "empty macro name: \"$\""),
])
def test_bad_value_error_has_file_and_line(tmp_path, line, message):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, "# first\n" + line + "\n")
    assert str(e.value) == f"{tmp_path}/main.cf:2: {message}"


def test_bad_value_through_reference(tmp_path):
    with pytest.raises(ConfigError, match=r"main.cf:2: bad numerical configuration: "
                                          r"smtp_destination_concurrency_limit = x"):
        load(tmp_path, "myorigin = y\nsmtp_destination_concurrency_limit = $myorigin\n"
                       "myorigin = x\n")


def test_overrides_are_validated(tmp_path):
    cfg = load(tmp_path, "")
    with pytest.raises(ConfigError, match=r"master.cf:7: bad boolean configuration"):
        cfg.with_overrides({"smtpd_sasl_auth_enable": "sure"}, origin="master.cf:7")


def test_time_units_and_default_unit(tmp_path):
    cfg = load(tmp_path, "maximal_queue_lifetime = 2\nbounce_queue_lifetime = 3h\n"
                         "delay_warning_time = 4\nsmtpd_timeout = 2m\nqueue_run_delay = 1w\n")
    assert cfg["maximal_queue_lifetime"] == 2 * 86400
    assert cfg["bounce_queue_lifetime"] == 3 * 3600
    assert cfg["delay_warning_time"] == 4 * 3600
    assert cfg["smtpd_timeout"] == 120
    assert cfg["queue_run_delay"] == 604800


# --- expansion -------------------------------------------------------------------

VALUES = {"a": "A", "empty": "", "lvl": "3.9", "n": "10"}


def lookup(name):
    return VALUES.get(name, "")


@pytest.mark.parametrize("text, expected", [
    ("$a", "A"), ("${a}", "A"), ("$(a)", "A"), ("x$a.y", "xA.y"), ("$$a", "$a"),
    ("$nosuch", ""), ("${a?yes}", "yes"), ("${empty?yes}", ""), ("${a:no}", ""),
    ("${empty:no}", "no"), ("${a?{x} : {y}}", "x"), ("${empty?{x}:{y}}", "y"),
    ("${a?yes:no}", "yes:no"), ("${empty:{d}}", "d"), ("${a?{$a$a}}", "AA"),
    ("${{$lvl} <level {2} ? {old} : {new}}", "new"),
    ("${{1} <level {2} ? {old} : {new}}", "old"),
    ("${{3.10} >=level {3.9} ? {ge} : {lt}}", "ge"),
    ("${{2} < {10} ? {lt}:{ge}}", "lt"), ("${{$n} == {10} ? {eq}}", "eq"),
    ("${{a} != {a} ? {ne}}", ""), ("${{a} == {b} : {ne}}", "ne"),
    ("$(a?{$(a)})", "A"), ("no dollars", "no dollars"),
])
def test_expansion_forms(text, expected):
    assert expand_text(text, lookup) == expected


@pytest.mark.parametrize("text", ["$", "a $ b", "${", "${a", "$(a", "${a!x}", "${{1} ~ {2} ? {x}}",
                                  "${{x} < {2} ? {y}}", "${{1} <level {2}}", "${a?{x}junk}"])
def test_expansion_errors(text):
    with pytest.raises(ConfigError):
        expand_text(text, lookup)


def test_expansion_loop_names_the_parameters(tmp_path):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, "myorigin = $mydomain\nmydomain = $myhostname\nmyhostname = $myorigin\n")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path}/main.cf:")
    assert "expansion loop" in msg
    for name in ("myorigin", "mydomain", "myhostname"):
        assert name in msg


def test_self_reference_is_a_loop(tmp_path):
    with pytest.raises(ConfigError, match=r"main.cf:1: parameter relayhost: expansion loop: "
                                          r"relayhost -> relayhost"):
        load(tmp_path, "relayhost = x$relayhost\n")


def test_banner_and_defaults_expand(tmp_path):
    cfg = load(tmp_path, "myhostname = mx.example.org\n")
    assert cfg["smtpd_banner"] == "mx.example.org ESMTP Postfix"
    assert cfg["mydomain"] == "example.org"
    assert cfg["mydestination"] == ["mx.example.org", "localhost.example.org", "localhost"]
    assert cfg["syslog_name"] == "postfix"
    assert cfg.raw("smtpd_banner") == "$myhostname ESMTP $mail_name"
    assert cfg.expand("<$myhostname>") == "<mx.example.org>"


def test_compatibility_level_defaults(tmp_path):
    old = load(tmp_path, "myhostname = h.example\n")
    assert old["relay_domains"] == ["h.example", "localhost.example", "localhost"]
    assert old["smtputf8_enable"] is False
    new = old.with_overrides({"compatibility_level": "3.9"})
    assert new["relay_domains"] == []
    assert new["smtputf8_enable"] is True
    assert new["mynetworks_style"] == "host"
    assert new["smtpd_relay_restrictions"] == [
        "permit_mynetworks", "permit_sasl_authenticated", "defer_unauth_destination"]
    assert old["relay_domains"] != new["relay_domains"]   # old is unchanged


def test_stress_conditionals(tmp_path):
    cfg = load(tmp_path, "")
    assert cfg["smtpd_timeout"] == 300 and cfg["smtpd_hard_error_limit"] == 20
    stressed = cfg.with_overrides({"stress": "yes"})
    assert stressed["smtpd_timeout"] == 10 and stressed["smtpd_hard_error_limit"] == 1


def test_raw_parameters_are_not_expanded(tmp_path):
    cfg = load(tmp_path, "")
    assert cfg["forward_path"][0] == "$home/.forward${recipient_delimiter}${extension}"


def test_list_splitting_keeps_brace_groups():
    assert split_list("a, b  c,,d") == ["a", "b", "c", "d"]
    assert split_list("inline:{ a=b, c=d }, static:x") == ["inline:{ a=b, c=d }", "static:x"]


def test_get_unknown_name_is_key_error(tmp_path):
    with pytest.raises(KeyError):
        load(tmp_path, "").get("no_such_parameter")


def test_mail_config_environment(tmp_path, monkeypatch):
    write(tmp_path, "relayhost = env.example\n")
    monkeypatch.setenv("MAIL_CONFIG", str(tmp_path))
    cfg = config.load()
    assert cfg.config_dir == str(tmp_path)
    assert cfg["relayhost"] == "env.example"
    assert cfg["config_directory"] == str(tmp_path)


def test_get_is_cached(tmp_path):
    cfg = load(tmp_path, "smtpd_recipient_restrictions = permit\n")
    assert cfg.get("smtpd_recipient_restrictions") is cfg.get("smtpd_recipient_restrictions")


# --- hypothesis ---------------------------------------------------------------------

@settings(max_examples=300)
@given(st.text())
def test_parser_never_raises_anything_but_config_error(text):
    try:
        for a in parse_main_cf(text, "x.cf"):
            assert a.name and a.name.strip() == a.name
    except ConfigError:
        pass


@settings(max_examples=300)
@given(st.text(alphabet="${}()?:<=>!level 0123a_b,"))
def test_expander_never_raises_anything_but_config_error(text):
    try:
        expand_text(text, lookup)
    except ConfigError:
        pass


NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
VALUES_ST = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
                    max_size=40).map(str.strip)


@settings(max_examples=200)
@given(st.lists(st.tuples(NAMES, VALUES_ST), max_size=10))
def test_round_trip_generated_assignments(pairs):
    text = "".join(f"# c\n{n} = {v}\n\n" for n, v in pairs)
    parsed = parse_main_cf(text, "x.cf")
    assert [(a.name, a.value) for a in parsed] == pairs
    assert [a.lineno for a in parsed] == [2 + 3 * i for i in range(len(pairs))]


def test_missing_config_directory_is_an_error(tmp_path):
    # A mistyped -c must not silently mean "all defaults" (and with them
    # the system's queue directory).
    import pytest
    from fulmar import config
    missing = tmp_path / "nope"
    with pytest.raises(config.ConfigError) as e:
        config.load(str(missing))
    assert str(e.value) == f"open {missing}/main.cf: No such file or directory"
    assert config.load(str(tmp_path)).get("mail_name") == "Postfix"   # empty dir: defaults


def test_settings_fulmar_ignores_are_listed_with_file_and_line(tmp_path):
    from fulmar.config.mastercf import parse_master_cf
    write(tmp_path, "smtp inet n - n - - smtpd\n"
                    "  -o content_filter=amavis:[127.0.0.1]:10024\n"
                    "  -o smtpd_milters=\n"
                    "submission inet n - n - - smtpd -o myhostname=x\n", "master.cf")
    cfg = load(tmp_path, "header_checks = regexp:/etc/postfix/header_checks\n"
                         "body_checks =\n"
                         "in_flow_delay = 1s\n"
                         "smtpd_milters = inet:localhost:8891\n"
                         "myorigin = example.org\n")
    specs = parse_master_cf(str(tmp_path / "master.cf"))
    text = "is not implemented by Fulmar: the setting has no effect"
    # Set to their defaults (body_checks, in_flow_delay, the master.cf
    # smtpd_milters=): nothing to say.  Not in cfg.warnings: postconf is quiet.
    assert config.unimplemented(cfg, specs) == [
        f"{tmp_path}/main.cf:1: parameter header_checks {text}",
        f"{tmp_path}/main.cf:4: parameter smtpd_milters {text}",
        f"{tmp_path}/master.cf:1: service smtp: parameter content_filter {text}",
    ]
    assert cfg.warnings == []
    assert config.unimplemented(load(tmp_path, "myorigin = example.org\n")) == []
