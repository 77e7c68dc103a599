# Fulmar: build, run and test.  `make help` lists the targets.
#
# Everything runs from .venv, built with a Python 3.12+ that bin/find-python
# finds by itself (PATH first, then pyenv's versions; PYTHON=... overrides).

VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# pytest-xdist workers: "auto" = one per core
WORKERS ?= auto
# what `make test` runs (e.g. make test TESTS=tests/unit)
TESTS   ?= tests/
# QUICK=1 makes `make bench` take its short path
QUICK   ?=

.PHONY: help install run test bench profile clean distclean

help:
	@echo "make run      run Fulmar in the foreground on 127.0.0.1:2525/5870/4650 (config, queue, mail in run/)"
	@echo "make test     run the whole test suite (unit + integration)"
	@echo "make install  build .venv only (python -m venv + pip install -e '.[test]')"
	@echo "make bench    benchmarks (QUICK=1 for the short run);  make profile"
	@echo "make clean    remove run/ and caches;  make distclean  also .venv"

install: $(STAMP)

# Rebuilt only when pyproject.toml is newer than the stamp.  A venv made
# with a Python older than 3.12 is thrown away and made again.
$(STAMP): pyproject.toml Makefile
	@if ! $(VPY) -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
	    py=$$(bin/find-python) || exit 1; \
	    echo "make: creating $(VENV) with $$py"; \
	    rm -rf $(VENV) && "$$py" -m venv $(VENV) || exit 1; \
	fi
	@# editable_mode=compat: a .pth path entry, not an import hook; the hook
	@# imports pathlib & co. at every interpreter start (~8 ms per sendmail).
	@# setuptools calls that mode transitional: if a future one refuses it,
	@# the default editable install still works, only slower to start.
	$(VPY) -m pip install -q --disable-pip-version-check -e '.[test]' \
	    --config-settings editable_mode=compat >$(VENV)/pip.log 2>&1 || \
	    $(VPY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@# pip's command scripts import re only to strip Windows suffixes:
	@# ~7 ms of every sendmail (docs/performance.md, item 51); sendmail
	@# also starts with -I -S, site's paths written in (item 53).
	$(VPY) -m fulmar.cli.launchers $(VENV)/bin
	@# The setgid postdrop helper for local submission (docs/local-submission.md);
	@# without a C compiler or the postdrop group, sendmail still works for root
	@# and for a one-user development setup.
	-@$(VPY) -m fulmar.postdrop.build
	@touch $(STAMP)

run: $(STAMP)
	@$(VPY) -m fulmar.devrun

# pytest exits 5 when it collected nothing: that is a failure here.
test: $(STAMP)
	@$(VPY) -m pytest -n $(WORKERS) -rfEs $(TESTS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests collected: failing" >&2; exit 1; fi; \
	exit $$rc

bench: $(STAMP)
	@QUICK="$(QUICK)" $(VPY) bench/run.py

profile: $(STAMP)
	@QUICK="$(QUICK)" $(VPY) bench/profile.py

clean:
	rm -rf run/ .pytest_cache .hypothesis build
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
