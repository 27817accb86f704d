"""The README names only command-line options that exist: rnnkit's, a script's, or another tool's
(torchrun, pip, ruff, tensorboard)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from rnnkit.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
OTHER_TOOLS = {
    "--nproc_per_node", "--nnodes", "--rdzv_backend", "--rdzv_endpoint", "--rdzv_id",  # torchrun
    "--index-url",  # pip
    "--logdir",  # tensorboard
    "--check",  # ruff format --check
    "--nproc",  # quoted as the option rnnkit deliberately does not have
}  # fmt: skip


def rnnkit_options() -> set[str]:
    options: set[str] = set()
    parsers = [build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            options.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    return options


def script_options() -> set[str]:
    found: set[str] = set()
    for script in (ROOT / "scripts").glob("*.py"):
        found.update(
            re.findall(r"add_argument\(\s*\"(--[a-z][a-z0-9_-]*)\"", script.read_text(encoding="utf-8"))
        )
    return found


def test_every_option_the_readme_names_exists():
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", (ROOT / "README.md").read_text(encoding="utf-8")))
    unknown = named - rnnkit_options() - script_options() - OTHER_TOOLS
    assert not unknown, f"README names options no command has: {sorted(unknown)}"
