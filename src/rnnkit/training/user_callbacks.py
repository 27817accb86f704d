"""``--callback module:Name``: a user's callback class (or factory) loaded by name for the CLI."""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys

from rnnkit.errors import RnnkitError
from rnnkit.training.callbacks import Callback


class CallbackError(RnnkitError):
    """A ``--callback`` that cannot be imported or does not give a callback."""


def load_callback(spec: str) -> Callback:
    """Import ``module:Name`` (from the current folder too) and call ``Name()`` for a callback."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CallbackError(f"--callback {spec!r} must look like module:ClassName, e.g. my_callbacks:Notify")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise CallbackError(
            f"--callback {spec}: no module named {error.name!r}; give an importable module "
            "(a file my_callbacks.py in the current folder is my_callbacks)"
        ) from None
    factory = getattr(module, attribute, None)
    if factory is None:
        names = [name for name in vars(module) if not name.startswith("_")]
        match = difflib.get_close_matches(attribute, names, n=1, cutoff=0.5)
        hint = f"; did you mean '{module_name}:{match[0]}'?" if match else ""
        raise CallbackError(f"--callback {spec}: module {module_name!r} has no {attribute!r}{hint}")
    if not callable(factory):
        raise CallbackError(f"--callback {spec}: {attribute!r} is not a class or function")
    try:
        inspect.signature(factory).bind()
    except TypeError as error:
        raise CallbackError(
            f"--callback {spec}: {attribute}() cannot be called without arguments ({error}); "
            "give a class or function that takes none"
        ) from None
    except ValueError:  # no signature to inspect (a builtin): just call it
        pass
    callback = factory()
    if not isinstance(callback, Callback):
        raise CallbackError(
            f"--callback {spec}: {attribute}() gave a {type(callback).__name__}, not a callback; "
            "subclass rnnkit.training.Callback"
        )
    return callback
