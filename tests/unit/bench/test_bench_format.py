"""The bench's JSON writer and table printer produce the shape bench/README.md documents.

bench/ is not a package (its scripts run as `bench/run.py`), so the module
is loaded from its path; nothing here starts a daemon or opens a socket.
"""

import json
import os

from bench_modules import load
from hypothesis import given, strategies as st

report = load("report")
flamegraph = load("flamegraph")

KEYS = {"workload", "unit", "fulmar", "postfix", "ratio", "min", "max"}


def _rows():
    return [
        report.Row("accept throughput -s 20 -l 1024", "msg/s", [700.0, 650.0, 720.0],
                   [600.0, 640.0, 620.0]),
        report.Row("latency p50", "ms", [4.0, 5.0], [2.0, 3.0]),
        report.Row("queue 10000: postqueue -j time", "s", [], [1.5], note="not available"),
    ]


def test_json_shape(tmp_path):
    path = report.write_json(_rows(), str(tmp_path), stamp="20260101T000000Z")
    assert os.path.basename(path) == "20260101T000000Z.json"
    with open(path) as fh:
        data = json.load(fh)
    assert isinstance(data, list) and len(data) == 3
    for obj in data:
        assert KEYS <= set(obj)
    first = data[0]
    assert first["fulmar"] == 700.0 and first["postfix"] == 620.0
    assert first["ratio"] == 700.0 / 620.0
    assert (first["min"], first["max"]) == (650.0, 720.0)
    assert "throughput" in first["workload"]
    missing = data[2]
    assert missing["fulmar"] is None and missing["ratio"] is None and missing["min"] is None
    assert missing["postfix"] == 1.5


def test_table_has_one_line_per_row_and_marks_the_better_side():
    lines = report.format_table(_rows()).splitlines()
    assert lines[0].split()[:5] == ["workload", "unit", "Fulmar", "Postfix", "ratio"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    body = lines[2:]
    assert len(body) == 3
    assert "1.13x" in body[0] and " F " in body[0] + " "          # throughput: higher wins
    assert "1.80x" in body[1] and " P " in body[1] + " "          # latency: lower wins
    assert "n/a" in body[2]


@given(st.lists(st.floats(min_value=0.001, max_value=1e6), min_size=1, max_size=7),
       st.lists(st.floats(min_value=0.001, max_value=1e6), max_size=7))
def test_record_invariants(f, p):
    rec = report.record(report.Row("end-to-end throughput", "msg/s", f, p))
    assert rec["min"] <= rec["fulmar"] <= rec["max"]
    if p:
        assert abs(rec["ratio"] * rec["postfix"] - rec["fulmar"]) <= 1e-9 * max(1.0, rec["fulmar"])
    else:
        assert rec["ratio"] is None
    assert len(report.format_table([report.Row("x", "u", f, p)]).splitlines()) == 3


def test_collapsed_stacks_merge_and_rank():
    text = "main (a.py);loop (b.py);parse (c.py) 30\nmain (a.py);loop (b.py) 10\nbad line\n"
    stacks = flamegraph.parse_collapsed(text)
    stacks.update(flamegraph.parse_collapsed("main (a.py);loop (b.py);parse (c.py) 5\n"))
    top = flamegraph.top_functions(stacks, 5)
    assert top[0] == ("parse (c.py)", 35, 35)
    assert top[1] == ("loop (b.py)", 10, 45)
    svg = flamegraph.render_svg(stacks, "t")
    assert svg.startswith("<?xml") and svg.rstrip().endswith("</svg>")
    assert "parse (c.py) (35 samples" in svg


def test_queue_counts_skip_dot_files(tmp_path):
    # cleanup keeps a spare dot-file in incoming/; a drained queue is one
    # without messages, not one without files.
    I = load("instances")
    inst = I.Instance("fulmar", str(tmp_path), 1, 2)
    for q in I.QUEUES:
        os.makedirs(os.path.join(inst.queue, q, "A"), exist_ok=True)
    open(os.path.join(inst.queue, "incoming", ".1234.5"), "w").close()
    open(os.path.join(inst.queue, "deferred", "A", "4jck4m1219zK8ZC"), "w").close()
    counts = inst.queue_counts()
    assert counts["incoming"] == 0 and counts["deferred"] == 1
    assert inst.queue_total() == 1


def test_ab_summary_has_one_row_per_build_in_milliseconds():
    ab = load("ab")
    samples = {"new": [(0.002, 0.0015)] * 8 + [(0.010, 0.005)] * 2,
               "old": [(0.003, 0.0025)] * 10}
    lines = ab.summary(samples).splitlines()
    assert lines[0].split()[0] == "build"
    assert lines[1].split() == ["new", "2.000", "10.000", "1.500", "10"]
    assert lines[2].split() == ["old", "3.000", "3.000", "2.500", "10"]


def test_ab_accept_rounds_sends_the_asked_size_and_sessions_to_every_build(monkeypatch):
    ab = load("ab")
    calls = []

    class Inst:
        def __init__(self):
            self.sent = 0

        def start_sink(self):
            pass

        def sent_count(self):
            return self.sent

    def fake_source(inst, sessions, count, size):
        calls.append((inst, sessions, count, size))
        inst.sent += count
        return 0.5

    monkeypatch.setattr(ab, "smtp_source", fake_source)
    monkeypatch.setattr(ab, "drain", lambda inst, n: None)
    monkeypatch.setattr(ab, "_busy_ticks", lambda: 0)
    targets = {"new": Inst(), "old": Inst()}
    out = ab.accept_rounds(targets, 2, count=100, sessions=20, size=102400)
    timed = [c for c in calls if c[2] == 100]
    # Two rounds for each build, each with the asked sessions and size;
    # the warm-ups stay at one session of 1 KB.
    assert len(timed) == 4
    assert {(s, l) for _i, s, _n, l in timed} == {(20, 102400)}
    assert {i for i, *_ in timed} == set(targets.values())
    assert [(s, n, l) for _i, s, n, l in calls if n != 100] == [(1, 300, 1024)] * 2
    assert out.splitlines()[1].split()[:2] == ["new", "200"]
