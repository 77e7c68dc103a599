"""master/pidfile.py: Postfix's PID format and lock-based "running"."""

import os

import pytest

from master import pidfile


def test_format_is_postfix_width():
    data = pidfile.format_pid(1234)
    assert data == b" " * 28 + b"1234\n"
    assert len(data) == pidfile.PID_FIELD_WIDTH + 1
    assert pidfile.parse_pid(data) == 1234
    assert pidfile.parse_pid(b"junk\n") is None


def test_running_follows_the_lock_not_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(pidfile, "LOCK_RETRY_TIME", 0.0)
    path = str(tmp_path / "master.pid")
    assert pidfile.running_pid(path) is None          # no file
    fd = pidfile.acquire(path)
    pidfile.write_pid(fd, 4321)
    assert pidfile.running_pid(path) == 4321
    with pytest.raises(pidfile.Locked, match="unable to set exclusive lock"):
        pidfile.acquire(path)
    os.close(fd)
    assert os.path.exists(path)
    assert pidfile.running_pid(path) is None          # file left behind, lock gone


def test_held_lock_with_garbage_reports_zero(tmp_path):
    path = str(tmp_path / "master.pid")
    fd = pidfile.acquire(path)
    os.write(fd, b"garbage\n")
    try:
        assert pidfile.running_pid(path) == 0
    finally:
        os.close(fd)


def test_write_pid_replaces_old_contents(tmp_path):
    path = tmp_path / "master.pid"
    path.write_bytes(b"9" * 100)
    fd = pidfile.acquire(str(path))
    pidfile.write_pid(fd, 7)
    os.close(fd)
    assert path.read_bytes() == pidfile.format_pid(7)
