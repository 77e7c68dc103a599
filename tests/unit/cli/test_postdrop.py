"""The postdrop helper (C): builds, copies a stream, refuses a truncated one."""

import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from fulmar.postdrop import build
from fulmar.queue import layout, maildrop, qid

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")


@pytest.fixture(scope="module")
def built():
    # Outside pytest's 0700 tmp tree, so that another user can run it.
    d = tempfile.mkdtemp(prefix="fm-pd-")
    os.chmod(d, 0o755)
    yield build.build(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def helper(built, tmp_path_factory):
    """A copy without the set-gid bit (as root, build() makes it setgid postdrop)."""
    plain = str(tmp_path_factory.mktemp("plain") / "postdrop")
    shutil.copyfile(built, plain)
    os.chmod(plain, 0o755)
    return plain


def stream() -> bytes:
    out = io.BytesIO()
    w = maildrop.StreamWriter(out)
    w.envelope("a@b", [maildrop.encode_recipient("c@d")], {"submit_uid": "1"})
    w.content(b"x" * 100000)
    w.finish()
    return out.getvalue()


def test_copies_stream(helper, tmp_path):
    layout.create(str(tmp_path))
    data = stream()
    r = subprocess.run([helper, str(tmp_path)], input=data, capture_output=True)
    assert r.returncode == 0, r.stderr
    name = r.stdout.decode().strip()
    assert qid.is_queue_id(name)
    assert os.listdir(tmp_path / "maildrop") == [name]
    path = tmp_path / "maildrop" / name
    assert path.read_bytes() == data
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("cut", [0, 5, -1, -9])
def test_truncated_input_leaves_nothing(helper, tmp_path, cut):
    layout.create(str(tmp_path))
    data = stream()[:cut] if cut else b""
    r = subprocess.run([helper, str(tmp_path)], input=data, capture_output=True)
    assert r.returncode == 75
    assert r.stderr == b"postdrop: fatal: premature end of input: message not submitted\n"
    assert os.listdir(tmp_path / "maildrop") == []


def test_usage(helper, tmp_path):
    for argv in ([], ["relative/dir"], ["/a/../b"], ["/a", "/b"]):
        r = subprocess.run([helper, *argv], input=b"", capture_output=True)
        assert r.returncode == 64
    r = subprocess.run([helper, str(tmp_path / "none")], input=stream(), capture_output=True)
    assert r.returncode == 75 and b"open" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the set-gid install needs root")
def test_setgid_helper_only_writes_its_groups_maildrop(built):
    assert os.stat(built).st_mode & 0o2000
    tmp_path = Path(os.path.dirname(built)) / "q"
    layout.create(str(tmp_path))          # maildrop/ owned by root's group, not postdrop
    r = subprocess.run([built, str(tmp_path)], input=stream(), capture_output=True,
                       user="nobody", group="nogroup", extra_groups=[])
    assert r.returncode == 75 and b"not a maildrop directory of this group" in r.stderr
    assert os.listdir(tmp_path / "maildrop") == []
