"""bounce.logfile: per-message defer/bounce/trace logs."""

import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bounce import logfile
from fulmar.queue import layout
from fulmar.smtp.dsn import RecipientStatus

QID = "4Xk2Lm1Qz7z9vRs"


def entry(address="bob@example.net", **kw):
    kw.setdefault("status", "4.4.1")
    kw.setdefault("reason", "connect to mx.example.net[192.0.2.7]:25: Connection refused")
    return RecipientStatus(address, **kw)


class Warnings(list):
    def __call__(self, message):
        self.append(message)


def test_append_read_round_trip(tmp_path):
    q = str(tmp_path)
    a = entry(orig_address="b@example.net", dsn_orcpt="rfc822;b@example.net", dsn_notify=12,
              offset=345, action="delayed", mta_type="dns", mta_name="mx", diag_type="smtp",
              diag_text="451 try later", time=1764400000.25)
    b = entry("carol@example.net", reason="line1\nline2\\n\r")
    logfile.append(q, "defer", QID, [a])
    logfile.append(q, "defer", QID, [b])
    w = Warnings()
    assert logfile.read(q, "defer", QID, warn=w) == [a, b]
    assert w == []


def test_defer_log_is_hashed_like_the_queue(tmp_path):
    q = str(tmp_path)
    logfile.append(q, "defer", QID, [entry()])
    logfile.append(q, "bounce", QID, [entry()])
    path = logfile.log_path(q, "defer", QID)
    assert path == os.path.join(q, layout.queue_subdir("defer", QID), QID)
    assert os.path.dirname(path) != os.path.join(q, "defer")   # one hash level
    assert os.path.isfile(path)
    assert os.path.isfile(os.path.join(q, "bounce", QID))
    assert os.stat(path).st_mode & 0o777 == logfile.LOG_FILE_MODE


def test_file_format_is_postfix_like(tmp_path):
    q = str(tmp_path)
    logfile.append(q, "bounce", QID, [entry(dsn_notify=8, offset=99, reason="a\nb")])
    with open(logfile.log_path(q, "bounce", QID), "rb") as f:
        text = f.read().decode()
    assert text == ("recipient=bob@example.net\nnotify_flags=8\noffset=99\nstatus=4.4.1\n"
                    "reason=a\\nb\n\n")


def test_missing_log(tmp_path):
    assert logfile.read(str(tmp_path), "defer", QID) == []
    with pytest.raises(FileNotFoundError):
        logfile.read(str(tmp_path), "defer", QID, missing_ok=False)
    assert logfile.remove(str(tmp_path), "defer", QID) is False


def test_replace_all_and_remove(tmp_path):
    q = str(tmp_path)
    logfile.append(q, "defer", QID, [entry(), entry("x@y")])
    logfile.replace_all(q, "defer", QID, [entry("z@y")])
    assert [e.address for e in logfile.read(q, "defer", QID)] == ["z@y"]
    directory = os.path.dirname(logfile.log_path(q, "defer", QID))
    assert os.listdir(directory) == [QID]            # no temporary file left
    assert logfile.remove(q, "defer", QID) is True
    assert logfile.read(q, "defer", QID) == []


@pytest.mark.parametrize("name,qid", [("deferred", QID), ("bounce", "../x"), ("bounce", ".x"),
                                      ("bounce", "")])
def test_bad_names_refused(tmp_path, name, qid):
    with pytest.raises(ValueError):
        logfile.log_path(str(tmp_path), name, qid)


def test_garbage_entries_are_skipped_with_a_warning():
    good = logfile.format_entry(entry())
    data = (good
            + b"this line has no equals sign\nrecipient=x@y\n\n"
            + b"recipient=y@z\noffset=12abc\n\n"
            + b"reason=no recipient here\n\n"
            + b"recipient=a@b\nfuture_attribute=1\n\n"
            + b"recipient=c@d\nreason=bad \\q escape\n\n"
            + good
            + b"recipient=cut@off\nreason=half wri")
    w = Warnings()
    got = logfile.parse_log(data, warn=w, where="defer/X")
    assert [e.address for e in got] == ["bob@example.net", "a@b", "bob@example.net"]
    assert len(w) == 6
    assert all(m.startswith("defer/X: ") for m in w)


def test_bad_numbers_are_tamed():
    got = logfile.parse_log(b"recipient=a@b\nnotify_flags=3\noffset=-5\n\n", warn=Warnings())
    assert got[0].dsn_notify == 0 and got[0].offset == 0


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
entries = st.builds(
    RecipientStatus, address=text.filter(bool), orig_address=text, dsn_orcpt=text,
    dsn_notify=st.sampled_from([0, 1, 2, 4, 8, 14]), offset=st.integers(0, 2**40), status=text,
    action=text, reason=text, mta_type=text, mta_name=text, diag_type=text, diag_text=text,
    time=st.sampled_from([0.0, 1764400000.5, 1.000001]))


@given(st.lists(entries, max_size=5))
def test_format_parse_round_trip(items):
    w = Warnings()
    data = b"".join(logfile.format_entry(e) for e in items)
    assert logfile.parse_log(data, warn=w) == items
    assert w == []


@given(st.lists(entries, min_size=1, max_size=3), st.binary(max_size=200), st.integers(0, 3))
def test_garbage_never_raises_and_good_entries_survive(items, garbage, where):
    good = [logfile.format_entry(e) for e in items]
    # Garbage ended by a blank line cannot swallow the entries after it.
    blob = b"".join(good[:where]) + garbage + b"\n\n" + b"".join(good[where:])
    got = logfile.parse_log(blob, warn=Warnings())
    for e in items[where:]:
        assert e in got


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=30)
@given(st.binary(max_size=300))
def test_read_of_a_corrupt_file_never_raises(tmp_path, garbage):
    q = str(tmp_path)
    os.makedirs(os.path.join(q, "bounce"), exist_ok=True)
    with open(os.path.join(q, "bounce", QID), "wb") as f:
        f.write(garbage)
    logfile.read(q, "bounce", QID, warn=Warnings())


def test_new_log_directory_is_synced_for_bounce_and_trace_not_defer(tmp_path, monkeypatch):
    # bounce/ and trace/ logs hold recipients that are already done in the
    # queue file: their names are made durable.  A defer log only holds a
    # delay reason for a message that stays queued.
    q = str(tmp_path)
    synced = []
    monkeypatch.setattr(logfile, "_fsync_dir", synced.append)
    for name in ("defer", "bounce", "trace"):
        logfile.append(q, name, QID, [entry()])
        logfile.append(q, name, QID, [entry()])          # existing file: never
    assert len(synced) == 2
    assert not any(os.sep + "defer" in p for p in synced)
