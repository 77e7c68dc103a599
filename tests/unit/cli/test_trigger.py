"""fulmar.cli._common.trigger: the pickup wakeup, which reads a daemon's
hello without fulmar.ipc.frames (docs/performance.md, item 51)."""

import itertools
import os
import socket
import threading

from fulmar.cli import _common as C
from fulmar.ipc import frames


def _serve(path, chunks):
    """A one-connection Unix server that sends chunks and waits for the close."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    seen = {}

    def run():
        conn, _ = srv.accept()
        with conn:
            for chunk in chunks:
                conn.sendall(chunk)
            seen["after"] = conn.recv(100)     # b"" once trigger() closed
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, seen


_names = itertools.count()


def _trigger(tmp_path, chunks, protocol="pickup"):
    path = os.path.join(tmp_path, "sock%d" % next(_names))
    t, seen = _serve(path, chunks)
    ok = C.trigger(path, protocol, 5.0)
    t.join(5)
    assert seen.get("after") == b""      # it closed, having sent nothing
    return ok


def test_a_hello_naming_the_protocol_is_a_wakeup(tmp_path):
    hello = frames.encode_attr({"protocol": "pickup", "version": 1})
    assert _trigger(tmp_path, [hello]) is True


def test_a_hello_in_pieces_is_read_whole(tmp_path):
    hello = frames.encode_attr({"protocol": "pickup", "version": 1})
    assert _trigger(tmp_path, [hello[:3], hello[3:9], hello[9:]]) is True


def test_another_daemon_is_not(tmp_path):
    hello = frames.encode_attr({"protocol": "qmgr", "version": 1})
    assert _trigger(tmp_path, [hello]) is False


def test_the_name_inside_another_value_is_not(tmp_path):
    # JSON escapes every '"' inside a string: the pair cannot hide in one.
    hello = frames.encode_attr({"protocol": "qmgr", "note": '"protocol":"pickup"'})
    assert _trigger(tmp_path, [hello]) is False


def test_a_record_frame_or_an_oversized_length_is_not(tmp_path):
    assert _trigger(tmp_path, [frames.encode_record(b"B", b'"protocol":"pickup"')]) is False
    assert _trigger(tmp_path, [b"A\x7f\xff\xff\xff" + b'{"protocol":"pickup"}']) is False


def test_a_peer_that_closes_early_is_not(tmp_path):
    hello = frames.encode_attr({"protocol": "pickup", "version": 1})
    assert _trigger(tmp_path, [hello[:-1]]) is False


def test_nobody_listening_is_not(tmp_path):
    assert C.trigger(os.path.join(tmp_path, "missing"), "pickup", 1.0) is False
