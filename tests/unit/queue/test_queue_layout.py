"""The queue directory layout: names, modes, idempotent create, check, hashing."""

import os
import stat

import pytest

from fulmar.queue import layout


@pytest.fixture(autouse=True)
def _defaults():
    layout.reset_hashing()
    yield
    layout.reset_hashing()


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_queue_names_are_postfix():
    """Postfix's directories, and Fulmar's recycle/ (docs/deviations.md)."""
    assert set(layout.QUEUE_NAMES) == set(
        "maildrop incoming active deferred hold corrupt bounce defer trace saved "
        "flush public private pid recycle".split())
    assert layout.QUEUE_RECYCLE not in layout.MESSAGE_QUEUES


def test_create_modes_and_idempotent(tmp_path):
    d = str(tmp_path / "spool")
    old = os.umask(0o077)       # create must not depend on the umask
    try:
        layout.create(d)
        layout.create(d)
    finally:
        os.umask(old)
    assert _mode(os.path.join(d, "maildrop")) == 0o1730
    assert _mode(os.path.join(d, "public")) == 0o710
    assert _mode(os.path.join(d, "private")) == 0o700
    assert _mode(os.path.join(d, "incoming")) == 0o700
    assert _mode(os.path.join(d, "pid")) == 0o755
    assert _mode(d) == 0o755
    assert sorted(os.listdir(os.path.join(d, "deferred"))) == list("0123456789ABCDEF")
    assert sorted(os.listdir(os.path.join(d, "defer"))) == list("0123456789ABCDEF")
    assert os.listdir(os.path.join(d, "incoming")) == []
    assert layout.check(d) == []


def test_check_reports_problems_and_create_repairs(tmp_path):
    d = str(tmp_path / "spool")
    layout.create(d)
    os.chmod(os.path.join(d, "maildrop"), 0o777)
    os.rmdir(os.path.join(d, "hold"))
    problems = layout.check(d)
    assert any("maildrop: mode 0777, expected 1730" in p for p in problems)
    assert any(p.endswith("hold: directory is missing") for p in problems)
    layout.create(d)
    assert layout.check(d) == []


def test_check_owner(tmp_path):
    d = str(tmp_path / "spool")
    layout.create(d)
    other = os.getuid() + 1
    problems = layout.check(d, uid=other)
    assert any(f"expected {other}" in p for p in problems)
    assert not any("/pid:" in p for p in problems)   # pid belongs to root


def test_hashed():
    assert layout.hashed("deferred") and layout.hashed("defer")
    assert not layout.hashed("incoming")
    assert layout.hashed("incoming", "incoming, active")
    assert layout.hashed("Deferred", ["deferred"])
    assert layout.queue_subdir("incoming", "4jccWL4hF4zJ9Wx") == "incoming"
    assert layout.queue_subdir("deferred", "4jccWL4hF4zJ9Wx") == "deferred/A"
    layout.set_hashing("deferred", 2)
    assert layout.queue_subdir("deferred", "4jccWL4hF4zJ9Wx") == "deferred/A/1"   # microseconds 0xA13E8
    assert not layout.hashed("defer")


def test_configure_reads_config():
    class Cfg:
        def get(self, name):
            return {"hash_queue_names": ["hold"], "hash_queue_depth": 2}[name]
    layout.configure(Cfg())
    assert layout.hashed("hold") and not layout.hashed("deferred")
    assert layout.hash_depth() == 2
