import ast
import pathlib

import pytest

from fulmar import version


def test_old_python_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        version.require_python((3, 11, 2, "final", 0))
    assert e.value.code == 1
    assert capsys.readouterr().err == "fatal: Fulmar requires Python 3.12 or newer (this is 3.11)\n"


def test_current_python_is_accepted():
    version.require_python()
    version.require_python((3, 13, 0))


def test_version_module_avoids_new_syntax():
    # Parse with the oldest grammar ast offers, so 3.12 syntax would fail.
    src = pathlib.Path(version.__file__).read_text()
    ast.parse(src, feature_version=(3, 4))
    assert "f\"" not in src and "f'" not in src and ":=" not in src


def test_mail_name_is_postfix():
    assert version.MAIL_NAME == "Postfix"
    assert "fulmar" in version.MAIL_VERSION
