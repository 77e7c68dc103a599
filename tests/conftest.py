"""Suite-wide test settings.

Hypothesis: no per-example deadline. The suite runs under pytest-xdist next
to real daemons on a 2-core machine, where one slow example says nothing
about the code under test; speed is measured in bench/, never asserted.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fulmar", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("fulmar")
