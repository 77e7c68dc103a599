"""The top-level layout issue 2 asks for exists.

(Named test_project_layout.py, not test_layout.py: tests/ has no
__init__.py files, so under pytest's default import mode two test files
with the same basename collide, and tests/unit/queue/test_layout.py is the
natural name for the queue-layout tests.)
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FILES = ["pyproject.toml", "Makefile", "README.md", ".ci/run", "bin/find-python",
         "bench/run.py", "docs/internals.md"]
DIRS = ["fulmar", "smtpd", "cleanup", "qmgr", "smtp_client", "bounce", "master", "local",
        "conf", "tests", "docs", "bench"]
PACKAGES = ["fulmar", "smtpd", "cleanup", "qmgr", "smtp_client", "bounce", "master", "local"]
MAKE_TARGETS = ["install", "run", "test", "bench", "profile", "clean"]


@pytest.mark.parametrize("name", FILES)
def test_file_exists(name):
    assert (ROOT / name).is_file(), f"{name} missing at the top of the tree"


@pytest.mark.parametrize("name", DIRS)
def test_directory_exists(name):
    assert (ROOT / name).is_dir(), f"{name}/ missing at the top of the tree"


@pytest.mark.parametrize("name", PACKAGES)
def test_package_is_a_package(name):
    assert (ROOT / name / "__init__.py").is_file(), f"{name}/__init__.py missing"


@pytest.mark.parametrize("name", [".ci/run", "bin/find-python"])
def test_scripts_are_executable(name):
    assert os.access(ROOT / name, os.X_OK), f"{name} is not executable"


def test_makefile_has_targets():
    text = (ROOT / "Makefile").read_text()
    missing = [t for t in MAKE_TARGETS if f"\n{t}:" not in text]
    assert not missing, f"Makefile lacks targets {missing}"


def test_pyproject_declares_python_and_packages():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["requires-python"] == ">=3.12"
    include = meta["tool"]["setuptools"]["packages"]["find"]["include"]
    for pkg in PACKAGES:
        assert f"{pkg}*" in include, f"{pkg} not packaged"


def test_readme_starts_with_the_two_commands():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:40])
    assert "make run" in head and "make test" in head


def test_test_file_basenames_are_unique():
    # pytest's default import mode imports test modules by basename: two
    # files with the same name in different folders break collection.
    import collections
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1]
    names = collections.Counter(p.name for p in root.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
