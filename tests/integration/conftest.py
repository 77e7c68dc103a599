"""Fixtures for integration tests: real processes on loopback addresses.

    alloc             the per-process address/port allocator (support.addrs)
    dns_server        session: a real knotd serving the test zones
                      (support.dns.KnotServer; .hosts maps host names of the
                      standard zones to their 127.x.y.z addresses)
    smtp_sink         factory: smtp_sink(host=None, port=None, **SmtpSink options)
                      -> a started support.sink.SmtpSink, stopped after the test
    fulmar_instance   factory: fulmar_instance(name="a", host=None, smtp_port=None,
                      main_cf={...}, start=True) -> support.instance.FulmarInstance,
                      with dns_server_addresses pointing at dns_server; stopped
                      after the test
    test_ca           session: support.certs.TestCA written to a temp dir
    pflogsumm         the support.pflogsumm module (skips if pflogsumm is missing)

When a test fails, the maillog of every instance it started and the
transcript of every sink are added to its report.

tests/ is not a package: this file puts its own directory on sys.path so
that `support` imports under any --import-mode.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from support import addrs, certs, dns, instance, pflogsumm as pflogsumm_mod, sink  # noqa: E402

INSTANCES = pytest.StashKey[list]()
SINKS = pytest.StashKey[list]()
LOG_TAIL = 20000          # characters of a maillog shown for a failed test
TRANSCRIPT_TAIL = 60      # sink lines shown for a failed test


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(item.path).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.failed:
        for inst in item.stash.get(INSTANCES, []):
            text = inst.log_text()
            rep.sections.append((f"maillog of {inst.name} ({inst.maillog})", text[-LOG_TAIL:]))
            if inst.transcript:
                rep.sections.append((f"commands run for {inst.name}",
                                     "\n".join(inst.transcript)[-LOG_TAIL:]))
        for s in item.stash.get(SINKS, []):
            rep.sections.append((f"sink {s.host}:{s.port} transcript",
                                 "\n".join(s.transcript[-TRANSCRIPT_TAIL:])))
    return rep


@pytest.fixture(scope="session")
def alloc() -> addrs.Allocator:
    return addrs.ALLOCATOR


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory, alloc):
    if dns.KNOTD is None or dns.KNOTC is None:
        pytest.skip("knotd/knotc not installed (apt-get install knot); .ci/run installs it")
    srv = dns.KnotServer(tmp_path_factory.mktemp("knot"), port=alloc.port("127.0.0.1"))
    zones, hosts = dns.standard_zones(alloc)
    srv.zones.update(zones)
    for name, addr in hosts.items():
        srv.ptrs[addr] = name
    srv.hosts = hosts
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def smtp_sink(request, tmp_path, alloc):
    started: list[sink.SmtpSink] = []
    request.node.stash[SINKS] = started

    def make(host: str | None = None, port: int | None = None, **options) -> sink.SmtpSink:
        host = host or alloc.host()
        port = port or alloc.port(host)
        s = sink.SmtpSink(host, port, tmp_path / f"sink-{host}-{port}", **options)
        s.start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def instance_base_dir():
    """A short directory in /tmp for Fulmar instances (see support.instance)."""
    d = Path(tempfile.mkdtemp(prefix="fm-"))
    if os.geteuid() == 0:
        d.chmod(0o711)
    yield d
    if not os.environ.get("FULMAR_KEEP_TEST_DIRS"):
        shutil.rmtree(d, ignore_errors=True)


def _mail_owner_problem(config) -> str | None:
    """Checked once per process: can the daemons run as mail_owner?"""
    key = "_fulmar_mail_owner_problem"
    if not hasattr(config, key):
        setattr(config, key, instance.mail_owner_problem())
    return getattr(config, key)


@pytest.fixture
def fulmar_instance(request, dns_server, instance_base_dir, alloc):
    made: list[instance.FulmarInstance] = []
    request.node.stash[INSTANCES] = made

    def make(name: str | None = None, *, host: str | None = None,
             smtp_port: int | None = None, main_cf: dict[str, str] | None = None,
             start: bool = True, **kw) -> instance.FulmarInstance:
        name = name or "abcdefgh"[len(made)]
        inst = instance.FulmarInstance(instance_base_dir / name, name=name, host=host,
                                       smtp_port=smtp_port, dns_address=dns_server.address,
                                       main_cf=main_cf, **kw)
        made.append(inst)
        if start:
            problem = _mail_owner_problem(request.config)
            if problem:
                # CI prepares the machine (.ci/run), so there it is a real failure.
                (pytest.fail if os.environ.get("CI") else pytest.skip)(problem)
            inst.start()
        return inst

    yield make
    for inst in reversed(made):
        inst.stop()


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    ca = certs.TestCA.create()
    ca.write(tmp_path_factory.mktemp("ca"))
    return ca


@pytest.fixture
def pflogsumm():
    if pflogsumm_mod.PFLOGSUMM is None:
        pytest.skip("pflogsumm not installed (apt-get install pflogsumm); .ci/run installs it")
    return pflogsumm_mod
