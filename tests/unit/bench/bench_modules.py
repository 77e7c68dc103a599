"""bench/ is not a package (its scripts run as `bench/run.py`): its modules
are loaded from their paths for the tests here."""

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def load(name):
    spec = importlib.util.spec_from_file_location("fulmar_bench_" + name,
                                                  os.path.join(ROOT, "bench", name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod
