"""Optional dependencies: a feature's library is imported when the feature runs, not before.

A missing one is a user error like any other: one line that names the pip command installing it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from rnnkit.errors import RnnkitError


class MissingExtraError(RnnkitError):
    """An optional dependency of the feature being used is not installed."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install 'rnnkit[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = (error.name or module).partition(".")[0]
        raise MissingExtraError(
            f"{feature} needs {missing}, which is not installed; "
            f"install it with: pip install 'rnnkit[{extra}]'"
        ) from None
