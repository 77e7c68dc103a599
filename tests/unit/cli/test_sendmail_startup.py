"""sendmail runs once per message: its start-up must not import what only
some options need (docs/performance.md, "changes and their effect")."""

import subprocess
import sys

# Imported only by options or paths that need them; each costs milliseconds
# (asyncio 20-100 ms on a loaded machine) on every submission.
HEAVY = ("asyncio", "subprocess", "email.utils", "fulmar.ipc.channel", "shutil", "sysconfig")


def test_sendmail_import_leaves_heavy_modules_out():
    code = ("import sys, fulmar.cli.sendmail, fulmar.cli._common\n"
            "print(' '.join(m for m in %r if m in sys.modules))" % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == []


# Not imported by a whole plain submission (config, maildrop file, pickup
# wakeup): dataclasses (via inspect) and typing alone cost ~10 ms per call.
# re (with enum, functools and collections behind it) and json cost ~9 ms
# more (item 51): the scanners on this path are written by hand, and the
# pickup wakeup reads its hello without fulmar.ipc.frames.
NOT_ON_SUBMIT_PATH = HEAVY + ("dataclasses", "inspect", "typing", "socket", "ipaddress",
                              "selectors", "re", "json", "collections", "enum", "functools",
                              "fulmar.ipc.frames")


def _instance(tmp_path):
    from fulmar.queue import layout
    qdir = tmp_path / "queue"
    layout.create(str(qdir))
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(f"queue_directory = {qdir}\nmyhostname = mx.example.com\n")
    (etc / "master.cf").write_text("smtp inet n - n - - smtpd\npickup unix n - n 60 1 pickup\n")
    return qdir, etc


def _submit_modules(tmp_path, args):
    """Submit one message in a fresh interpreter: which of NOT_ON_SUBMIT_PATH
    it loaded, and the maildrop directory."""
    qdir, etc = _instance(tmp_path)
    code = ("import sys\n"
            "from fulmar.cli.sendmail import main\n"
            "sys.argv = ['sendmail', '-C', %r] + %r\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(' '.join(m for m in %r if m in sys.modules))"
            % (str(etc), args, NOT_ON_SUBMIT_PATH))
    res = subprocess.run([sys.executable, "-I", "-c", code],
                         input="To: c@example.org\nSubject: x\n\nhi\n",
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert len(list((qdir / "maildrop").iterdir())) == 1
    return res.stdout.split()


def test_plain_submission_leaves_heavy_modules_out(tmp_path):
    assert _submit_modules(tmp_path, ["-i", "-f", "a@example.com", "b@example.net"]) == []


def test_the_check_sees_what_an_option_brings(tmp_path):
    # -t parses addresses with email.utils, which imports re: the same
    # check lists them, so an empty list above is not a blind spot.
    loaded = _submit_modules(tmp_path, ["-t", "-i", "-f", "a@example.com"])
    assert "email.utils" in loaded and "re" in loaded


def _entry(etc, args, stdin):
    # An atexit handler stands for the interpreter's shutdown: the command
    # skips it (about 4 ms per submission), so it must not run.
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('shutdown ran'))\n"
            "sys.argv = ['sendmail', '-C', %r] + %r\n"
            "from fulmar.cli.sendmail import entry\n"
            "entry()\n" % (str(etc), args))
    return subprocess.run([sys.executable, "-I", "-c", code], input=stdin,
                          capture_output=True, text=True)


def test_the_command_skips_interpreter_shutdown_and_keeps_status_and_output(tmp_path):
    qdir, etc = _instance(tmp_path)
    res = _entry(etc, ["-i", "-f", "a@example.com", "b@example.net"], "Subject: x\n\nhi\n")
    assert res.returncode == 0, res.stderr
    assert "shutdown ran" not in res.stdout
    assert len(list((qdir / "maildrop").iterdir())) == 1
    # A failure still reaches the caller: its status and its flushed message.
    res = _entry(etc, ["-B", "bogus", "b@example.net"], "Subject: x\n\nhi\n")
    assert res.returncode == 75
    assert res.stderr.startswith("sendmail: fatal: ")
    assert "shutdown ran" not in res.stdout
    assert len(list((qdir / "maildrop").iterdir())) == 1
