"""The bench's flush diagnostics: what was deferred again during a flush,
read from the maillog, and the note that goes into the results."""

import collections

from bench_modules import load

instances = load("instances")
run = load("run")

LOG = """\
Nov 30 05:04:54 mx postfix/qmgr[1]: 4jdBlp185KzKsY0: to=<a@b>, relay=none, delay=0, status=deferred (delivery temporarily suspended: connect to 127.0.0.1[127.0.0.1]:28872: Connection refused)
Nov 30 05:05:03 mx postfix/smtp[2]: 4jdBlp184lzKsXy: to=<a@b>, relay=127.0.0.1[127.0.0.1]:28872, delay=0, status=sent (250 2.0.0 Ok)
Nov 30 05:05:04 mx postfix/smtp[2]: 4jdBlp183yzKsXx: to=<a@b>, relay=none, delay=1, status=deferred (lost connection with 127.0.0.1[127.0.0.1] while sending RCPT TO)
Nov 30 05:05:05 mx postfix/qmgr[1]: 4jdBlp183zzKsXz: to=<a@b>, relay=none, delay=0, status=deferred (delivery temporarily suspended: lost connection with 127.0.0.1[127.0.0.1] while sending RCPT TO)
Nov 30 05:05:05 mx postfix/qmgr[1]: 4jdBlp1840zKsY1: to=<a@b>, relay=none, delay=0, status=deferred (delivery temporarily suspended: lost connection with 127.0.0.1[127.0.0.1] while sending RCPT TO)
"""


def test_deferrals_since_counts_reasons_after_the_offset(tmp_path):
    inst = instances.Instance("fulmar", str(tmp_path), 1, 2)
    with open(inst.logfile, "w") as fh:
        fh.write(LOG)
    mark = len(LOG.splitlines(keepends=True)[0].encode())
    reasons = inst.deferrals_since(mark)
    assert sum(reasons.values()) == 3          # the line before the mark is not counted
    assert reasons.most_common(1)[0] == (
        "delivery temporarily suspended: lost connection with 127.0.0.1[127.0.0.1] while sending RCPT TO", 2)
    assert inst.deferrals_since(len(LOG.encode())) == collections.Counter()


def test_flush_note_names_the_deferrals_and_a_stall():
    reasons = collections.Counter({"delivery temporarily suspended: x": 5, "y": 1})
    note = run.flush_note("Fulmar", reasons, 290.0)
    assert note == ("Fulmar: 6 deferred again during the flush "
                    "(delivery temporarily suspended: x); no delivery for 290 s")
    assert run.flush_note("Postfix", collections.Counter(), run.FLUSH_STALL - 1) == ""
    assert run.flush_note("Postfix", collections.Counter(), run.FLUSH_STALL + 1) == \
        "Postfix: no delivery for %.0f s" % (run.FLUSH_STALL + 1)


def test_instance_environment_has_no_python_variables(tmp_path):
    """PYTHONUNBUFFERED from a CI runner or a shell must not reach the
    instances' commands (a write(2) per postqueue line); the rest stays."""
    env = instances.instance_environ(
        {"PATH": "/usr/bin", "PYTHONUNBUFFERED": "1", "PYTHONPATH": "/x", "LANG": "C"}, "/b/etc")
    assert env == {"PATH": "/usr/bin", "LANG": "C", "MAIL_CONFIG": "/b/etc"}
    inst = instances.Instance("fulmar", str(tmp_path), 1, 2)
    assert inst.env["MAIL_CONFIG"] == inst.etc
    assert not [k for k in inst.env if k.startswith("PYTHON")]
