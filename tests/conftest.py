"""Suite-wide test settings.

Hypothesis: no per-example deadline. The suite runs under pytest-xdist next
to real daemons on a 2-core machine, where one slow example says nothing
about the code under test; speed is measured in bench/, never asserted.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fulmar", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("fulmar")


import os

import pytest


@pytest.fixture
def daemon_context(tmp_path):
    """make(service, main_cf="") -> (Context, queue_dir): a daemon's context
    over a fresh queue under tmp_path, for testing a service in-process.
    main_cf is appended to `queue_directory = ...`."""
    from fulmar import config
    from fulmar.daemon import Context
    from fulmar.queue import layout

    def make(service: str, main_cf: str = ""):
        qdir = tmp_path / "queue"
        etc = tmp_path / "etc"
        etc.mkdir()
        (etc / "main.cf").write_text(f"queue_directory = {qdir}\n{main_cf}")
        (etc / "master.cf").write_text("")
        layout.create(str(qdir), os.getuid(), os.getgid())
        cfg = config.load(str(etc))
        return Context(cfg, service=service, process_name=service), str(qdir)

    return make
