"""master/services.py: command map, test hook, worker counts, argv."""

from types import SimpleNamespace

import pytest
from hypothesis import given, strategies as st

from master import services
from master.services import Program


def test_postfix_commands_map_to_packages():
    assert services.resolve_program("smtpd") == Program("smtpd", module="smtpd")
    assert services.resolve_program("smtp").module == "smtp_client"
    assert services.resolve_program("lmtp").module == "smtp_client"
    assert services.resolve_program("oqmgr").module == "qmgr"
    for cmd in ("bounce", "defer", "trace"):
        assert services.resolve_program(cmd).module == "bounce"
    assert services.resolve_program("virtual").module == "local"
    assert services.resolve_program("pickup").module == "cleanup.pickup"


def test_unknown_command_has_no_program():
    assert services.resolve_program("tlsmgr") is None
    assert services.resolve_program("anvil") is None


def test_extra_commands_hook():
    extra = services.parse_extra_commands("dummy=/x/d.py, other=pkg.mod")
    assert extra == {"dummy": "/x/d.py", "other": "pkg.mod"}
    assert services.resolve_program("dummy", extra) == Program("dummy", script="/x/d.py")
    assert services.resolve_program("other", extra) == Program("other", module="pkg.mod")
    # the hook may also replace a real command (tests only)
    assert services.resolve_program("smtpd", {"smtpd": "x.y"}).module == "x.y"


@pytest.mark.parametrize("text", ["dummy", "=x", "dummy=", "a=b,c"])
def test_extra_commands_malformed(text):
    with pytest.raises(ValueError):
        services.parse_extra_commands(text)


def test_extra_commands_empty():
    assert services.parse_extra_commands(None) == {}
    assert services.parse_extra_commands("") == {}


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
                       st.from_regex(r"[a-z][a-z0-9_.]{0,20}", fullmatch=True), max_size=5))
def test_extra_commands_round_trip(mapping):
    text = ",".join(f"{k}={v}" for k, v in mapping.items())
    assert services.parse_extra_commands(text) == mapping


def test_is_runnable_package_needs_main():
    specs = {"pkg": SimpleNamespace(submodule_search_locations=["/x"]),
             "pkg.__main__": SimpleNamespace(submodule_search_locations=None),
             "bare": SimpleNamespace(submodule_search_locations=["/y"]),
             "mod": SimpleNamespace(submodule_search_locations=None)}
    find = specs.get
    assert services.is_runnable(Program("c", module="pkg"), find_spec=find)
    assert not services.is_runnable(Program("c", module="bare"), find_spec=find)
    assert services.is_runnable(Program("c", module="mod"), find_spec=find)
    assert not services.is_runnable(Program("c", module="absent"), find_spec=find)


def test_is_runnable_import_error_means_no():
    def boom(name):
        raise ModuleNotFoundError(name)
    assert not services.is_runnable(Program("c", module="cleanup.pickup"), find_spec=boom)


def test_is_runnable_script():
    assert services.is_runnable(Program("c", script="/s.py"), exists=lambda p: p == "/s.py")
    assert not services.is_runnable(Program("c", script="/t.py"), exists=lambda p: False)


@pytest.mark.parametrize("maxproc, default_limit, workers, cpus, expected", [
    (None, 100, 0, 8, 4),      # smtpd "-": one per two CPUs
    (None, 100, 0, 2, 1),      # ... so one on the 2-CPU bench machine
    (None, 100, 0, 1, 1),      # ... and at least one
    (1, 100, 0, 8, 1),         # qmgr, pickup
    (0, 100, 0, 8, 4),         # "0" = unlimited: one per two CPUs
    (2, 100, 0, 8, 2),         # explicit smaller maxproc wins
    (None, 3, 0, 8, 3),        # default_process_limit caps too
    (None, 100, 4, 8, 4),      # default_worker_processes set
    (None, 100, 0, None, 1),   # unknown CPU count
    (50, 100, 16, 8, 16),
])
def test_worker_count(maxproc, default_limit, workers, cpus, expected):
    assert services.worker_count(maxproc, default_limit, workers, cpus) == expected


@given(st.one_of(st.none(), st.integers(0, 1000)), st.integers(1, 1000),
       st.integers(0, 64), st.one_of(st.none(), st.integers(1, 256)))
def test_worker_count_bounds(maxproc, default_limit, workers, cpus):
    n = services.worker_count(maxproc, default_limit, workers, cpus)
    limit = default_limit if maxproc is None else maxproc
    assert n >= 1
    if limit > 0:
        assert n <= limit


def test_solitary():
    assert services.is_solitary(1)
    assert not services.is_solitary(None)
    assert not services.is_solitary(0)
    assert not services.is_solitary(2)


def test_daemon_argv_module_and_script():
    argv = services.daemon_argv(Program("smtpd", module="smtpd"), "/py", "/etc/pf", "submission",
                                "inet", {"syslog_name": "postfix/submission",
                                         "smtpd_tls_security_level": "encrypt"}, ["-v"])
    assert argv == ["/py", "-I", "-m", "smtpd", "-c", "/etc/pf", "-s", "submission", "-t", "inet",
                    "-o", "syslog_name=postfix/submission",
                    "-o", "smtpd_tls_security_level=encrypt", "-v"]
    argv = services.daemon_argv(Program("d", script="/t/d.py"), "/py", "/c", "x", "unix", {}, [])
    assert argv[:3] == ["/py", "-I", "/t/d.py"]


def test_paths():
    assert services.program_path("/usr/lib/postfix/sbin", "smtpd") == "/usr/lib/postfix/sbin/smtpd"
    assert services.unix_socket_path("/q", "cleanup", True) == "/q/private/cleanup"
    assert services.unix_socket_path("/q", "qmgr", False) == "/q/public/qmgr"


def test_daemon_environment():
    env = services.daemon_environment(["MAIL_CONFIG", "TZ", "LANG=C", "ABSENT"],
                                      {"MAIL_CONFIG": "/c", "TZ": "UTC", "PATH": "/bin", "LANG": "de"})
    assert env == {"MAIL_CONFIG": "/c", "TZ": "UTC", "LANG": "C"}


@pytest.mark.parametrize("stype, command, wakeup, expected", [
    ("unix", "cleanup", "0", True),
    ("unix", "bounce", "0", True),
    ("unix", "smtp", "0", True),
    ("unix", "local", "0?", True),
    ("unix", "qmgr", "0", False),          # always on, as in Postfix
    ("unix", "pickup", "60", False),
    ("unix", "smtp", "60", False),         # a wakeup time: always on
    ("inet", "smtpd", "0", False),
    ("unix", "smtpd", "0", False),         # does not implement idle exit
    ("unix-dgram", "cleanup", "0", False),
])
def test_is_on_demand(stype, command, wakeup, expected):
    assert services.is_on_demand(stype, command, wakeup) is expected


def test_extra_commands_are_never_on_demand():
    assert not services.is_on_demand("unix", "cleanup", "0", {"cleanup": "dummy"})
