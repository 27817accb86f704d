"""Optional dependencies: imported when a feature runs; a missing one names its pip command."""

from __future__ import annotations

import sys

import pytest

from rnnkit.errors import RnnkitError
from rnnkit.extras import MissingExtraError, require


def test_an_installed_module_is_returned():
    assert require("json", "none", "reading JSON").dumps([1]) == "[1]"


def test_a_missing_module_is_one_user_error_naming_the_extra(monkeypatch):
    for module in ("captum", "captum.attr"):  # also when an earlier test imported it
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError) as caught:
        require("captum.attr", "explain", "rnnkit explain")
    assert isinstance(caught.value, RnnkitError)
    assert str(caught.value) == (
        "rnnkit explain needs captum, which is not installed; install it with: pip install 'rnnkit[explain]'"
    )
