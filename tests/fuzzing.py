"""Hypothesis settings of the fuzz tests: the same examples on every run unless asked to explore.

``python -m pytest`` (CI) draws each fuzz test's examples from a seed derived from the test, so a
red run is a regression, never bad luck. ``HYPOTHESIS_PROFILE=explore`` draws new random examples
each run, ``EXPLORE_FACTOR`` times as many, to look for new failures (fix them, then add the input
as a test); ``HYPOTHESIS_PROFILE=dev`` runs at most ``DEV_EXAMPLES`` per test for a quick loop.
"""

import os

from hypothesis import HealthCheck, settings

DEV_EXAMPLES = 10
EXPLORE_FACTOR = 10
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "repeatable")

settings.register_profile("repeatable", derandomize=True)
settings.register_profile("dev", derandomize=True, max_examples=DEV_EXAMPLES)
settings.register_profile("explore", derandomize=False)
settings.load_profile(PROFILE)


def fuzz(max_examples: int, *health_checks: HealthCheck) -> settings:
    """``max_examples`` (scaled by the profile) and no deadline: timings vary on shared CI
    cores. ``tmp_path`` is shared by a test's examples, which is fine because each example
    overwrites its own files; ``health_checks`` are suppressed too."""
    return settings(
        max_examples=_scaled(max_examples),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, *health_checks],
    )


def _scaled(max_examples: int) -> int:
    if PROFILE == "dev":
        return min(max_examples, DEV_EXAMPLES)
    return max_examples * EXPLORE_FACTOR if PROFILE == "explore" else max_examples
