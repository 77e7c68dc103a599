"""fulmar.cli.launchers: pip's command scripts rewritten without `import re`."""

import os
import subprocess
import sys

import pytest

from fulmar.cli import launchers

PIP_SCRIPT = """\
#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from {module} import {func}
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit({func}())
"""


def _pip_script(path, module="fulmar.cli.postconf", func="main"):
    path.write_text(PIP_SCRIPT.format(python=sys.executable, module=module, func=func))
    path.chmod(0o755)


def test_every_fulmar_command_is_known():
    scripts = launchers.fulmar_scripts()
    assert scripts["sendmail"] == ("fulmar.cli.sendmail", "entry")
    assert scripts["postqueue"] == ("fulmar.cli.postqueue", "main")


def test_a_pip_script_loses_re_and_keeps_the_rest(tmp_path):
    script = tmp_path / "postconf"
    _pip_script(script)
    assert launchers.main([str(tmp_path)]) == 0
    text = script.read_text()
    assert text.startswith("#!%s\n" % sys.executable)
    assert "\nimport re\n" not in text and "re.sub" not in text
    assert "from fulmar.cli.postconf import main" in text and launchers.MARK in text
    assert os.stat(script).st_mode & 0o777 == 0o755
    # It still runs the command, with its output and exit status.
    res = subprocess.run([str(script), "-d", "mail_name"], capture_output=True, text=True)
    assert (res.returncode, res.stdout) == (0, "mail_name = Postfix\n")
    res = subprocess.run([str(script), "-Z"], capture_output=True, text=True)
    assert res.returncode != 0 and "postconf" in res.stderr
    # Again: nothing changes.
    assert launchers.main([str(tmp_path)]) == 0
    assert script.read_text() == text


def test_a_script_that_is_not_pips_is_left_alone(tmp_path):
    script = tmp_path / "sendmail"
    script.write_text("#!/bin/sh\nexec /usr/sbin/sendmail.real \"$@\"\n")
    assert launchers.main([str(tmp_path)]) == 0
    assert script.read_text() == "#!/bin/sh\nexec /usr/sbin/sendmail.real \"$@\"\n"


def test_usage():
    assert launchers.main([]) == 1


TRAMPOLINE = """\
#!/bin/sh
'''exec' "{python}" "$0" "$@"
' '''
# -*- coding: utf-8 -*-
import re
import sys
from fulmar.cli.postconf import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""


def test_pips_sh_trampoline_for_a_long_path_is_kept(tmp_path):
    # pip starts a script with a /bin/sh trampoline when the interpreter's
    # path is too long (or has spaces) for a #! line: it must stay.
    script = tmp_path / "postconf"
    script.write_text(TRAMPOLINE.format(python=sys.executable))
    script.chmod(0o755)
    assert launchers.main([str(tmp_path)]) == 0
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n'''exec' \"%s\"" % sys.executable)
    assert "\nimport re\n" not in text and "re.sub" not in text
    res = subprocess.run([str(script), "-d", "mail_name"], capture_output=True, text=True)
    assert (res.returncode, res.stdout) == (0, "mail_name = Postfix\n")


def test_a_script_with_other_uses_of_re_is_left_alone(tmp_path):
    script = tmp_path / "postconf"
    text = PIP_SCRIPT.format(python=sys.executable, module="fulmar.cli.postconf",
                             func="main").replace("sys.exit(main())",
                                                  "print(re.escape('x'))\n    sys.exit(main())")
    script.write_text(text)
    assert launchers.main([str(tmp_path)]) == 0
    assert script.read_text() == text


def _fake_fulmar(tmp_path):
    """A PYTHONPATH directory whose `fulmar` cannot be imported."""
    fake = tmp_path / "fake"
    (fake / "fulmar").mkdir(parents=True)
    (fake / "fulmar" / "__init__.py").write_text("raise ImportError('the PYTHONPATH fulmar')\n")
    return dict(os.environ, PYTHONPATH=str(fake))


def _sendmail_usage(script, env=None):
    res = subprocess.run([str(script), "-Z"], capture_output=True, text=True, env=env)
    return res.returncode, "sendmail: invalid option" in res.stderr


def test_sendmail_starts_isolated_with_sites_paths_written_in(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "sendmail"
    _pip_script(script, "fulmar.cli.sendmail", "entry")
    env = _fake_fulmar(tmp_path)
    # pip's script reads PYTHONPATH, whose fulmar comes first: it fails.
    assert _sendmail_usage(script, env)[1] is False
    assert launchers.main([str(bindir)]) == 0
    text = script.read_text()
    assert text.startswith("#!%s -IS\n" % sys.executable)
    paths = launchers.site_paths(sys.executable)
    assert paths and "sys.path += %r\n" % paths in text
    assert text.index("import sys\n") < text.index("sys.path += ") < text.index("from fulmar.cli")
    # The same command, exit status and message, now without site and
    # without PYTHONPATH's fulmar.
    assert _sendmail_usage(script) == (75, True)
    assert _sendmail_usage(script, env) == (75, True)
    assert launchers.main([str(bindir)]) == 0
    assert script.read_text() == text


def _sendmail_trampoline(tmp_path):
    """pip's sendmail script with its /bin/sh trampoline (a long path)."""
    script = tmp_path / "sendmail"
    script.write_text(TRAMPOLINE.format(python=sys.executable)
                      .replace("fulmar.cli.postconf import main", "fulmar.cli.sendmail import entry")
                      .replace("sys.exit(main())", "sys.exit(entry())"))
    script.chmod(0o755)
    return script


def test_sendmails_sh_trampoline_gets_the_flags_after_the_interpreter(tmp_path):
    script = _sendmail_trampoline(tmp_path)
    assert launchers.main([str(tmp_path)]) == 0
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/bin/sh"
    assert lines[1] == "'''exec' \"%s\" -IS \"$0\" \"$@\"" % sys.executable
    assert _sendmail_usage(script, _fake_fulmar(tmp_path)) == (75, True)


def test_an_interpreter_line_with_an_argument_is_not_isolated(tmp_path):
    script = tmp_path / "sendmail"
    script.write_text(PIP_SCRIPT.format(python=sys.executable + " -E", module="fulmar.cli.sendmail",
                                        func="entry"))
    script.chmod(0o755)
    assert launchers.main([str(tmp_path)]) == 0
    text = script.read_text()
    assert text.startswith("#!%s -E\n" % sys.executable)
    assert "re.sub" not in text and launchers.ISOLATED_MARK not in text
    assert _sendmail_usage(script) == (75, True)


def test_make_install_left_the_venvs_sendmail_without_re():
    # `make install` runs this module over the venv's scripts (Makefile);
    # `make test` runs in that venv.
    script = os.path.join(os.path.dirname(sys.executable), "sendmail")
    if not os.path.exists(script):
        pytest.skip("no sendmail script next to this interpreter (not a `make install` venv)")
    with open(script, encoding="utf-8") as f:
        text = f.read()
    assert "\nimport re\n" not in text and "from fulmar.cli.sendmail import entry\n" in text
    # ... and started with -I -S, site's paths written in.
    assert launchers.ISOLATED_MARK in text
    assert text.splitlines()[0].endswith(" -IS") or ' -IS "$0"' in text


def test_an_isolated_trampoline_script_rewritten_again_is_unchanged(tmp_path):
    # The second `make install` over the same venv: the trampoline line
    # now carries -IS, which must not be read as part of the path.
    script = _sendmail_trampoline(tmp_path)
    assert launchers.main([str(tmp_path)]) == 0
    text = script.read_text()
    assert launchers.main([str(tmp_path)]) == 0
    assert script.read_text() == text


def test_an_interpreter_that_cannot_report_its_paths_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    script = tmp_path / "sendmail"
    _pip_script(script, "fulmar.cli.sendmail", "entry")
    before = script.read_text()

    def broken(python):
        raise subprocess.CalledProcessError(1, [python, "-I", "-c", "..."])
    monkeypatch.setattr(launchers, "site_paths", broken)
    assert launchers.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("launchers: %s: " % script) and err.count("\n") == 1
    assert script.read_text() == before          # left as it was
