"""Hypothesis settings of the fuzz tests: full example counts in CI, a few under the dev profile.

``HYPOTHESIS_PROFILE=dev python -m pytest`` runs at most ``DEV_EXAMPLES`` examples per fuzz test
for a quick loop; without it (CI) every test runs the count it asks for.
"""

import os

from hypothesis import HealthCheck, settings

DEV_EXAMPLES = 10
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")

settings.register_profile("dev", max_examples=DEV_EXAMPLES)
settings.load_profile(PROFILE)


def fuzz(max_examples: int, *health_checks: HealthCheck) -> settings:
    """``max_examples`` (fewer under the dev profile) and no deadline: timings vary on shared CI
    cores. ``tmp_path`` is shared by a test's examples, which is fine because each example
    overwrites its own files; ``health_checks`` are suppressed too."""
    return settings(
        max_examples=min(max_examples, DEV_EXAMPLES) if PROFILE == "dev" else max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, *health_checks],
    )
