"""Refuse token patterns whose matching time explodes on some texts (catastrophic backtracking).

Python's ``re`` backtracks: ``(a+)+$`` needs 2^n steps on ``"aaa...a!"``, so one such pattern in a
config, or edited into a run's ``vocab.json``, turns tokenising (and ``rnnkit predict``) into a
denial of service. A pattern is checked once per process, in two steps:

1. a look at its parse tree: only a repeat that contains another repeat, an alternation or a
   back-reference can backtrack exponentially (``[a-z]+``, ``\\w+|[^\\w\\s]`` cannot);
2. for such a pattern, a trial: ``findall`` over texts built to make it backtrack (runs of each
   character it mentions, alone and in pairs, followed by each of them or nothing), in a separate
   Python process that is killed after :data:`TRIAL_SECONDS`. Safe patterns take milliseconds;
   exponential ones need hours on these 40-character texts.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from typing import Any

from rnnkit.config import DEFAULT_TOKEN_PATTERN
from rnnkit.errors import DataError

try:  # Python 3.11+
    from re import _constants as sre_constants
    from re import _parser as sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

TRIAL_SECONDS = 2.0
RUN_LENGTH = 40
_ALPHABET = "a0 _!.'\n"
"""Characters every trial uses, besides those the pattern names: a letter, a digit, space, punctuation."""
_MAX_ALPHABET = 12
_REPEATS = {
    sre_constants.MAX_REPEAT,
    sre_constants.MIN_REPEAT,
    getattr(sre_constants, "POSSESSIVE_REPEAT", None),
}
_AMBIGUOUS = {sre_constants.BRANCH, sre_constants.GROUPREF, sre_constants.GROUPREF_EXISTS}
_TRIAL = "import json, re, sys\npattern, texts = json.load(sys.stdin)\nfor t in texts: re.findall(pattern, t)"


@functools.cache
def check_token_pattern(pattern: str, setting: str = "data.token_pattern") -> None:
    """Raise a one-line :class:`DataError` if ``pattern`` (a valid regex) can take exponential time."""
    if pattern == DEFAULT_TOKEN_PATTERN:
        return  # passes the trial (tests/test_data_regex_safety.py); spared a process per run
    tree = _parse(pattern)
    if tree is not None and not _may_backtrack(tree, inside_repeat=False):
        return
    if not finishes_trial(pattern):
        raise DataError(
            f"{setting} {pattern!r} takes exponential time on some texts (it did not finish on "
            f"{RUN_LENGTH}-character inputs in {TRIAL_SECONDS:.0f} s): a repeat inside a repeat, such as "
            "(a+)+, backtracks without end; write it without nested repeats"
        )


def finishes_trial(pattern: str) -> bool:
    """Whether ``findall`` over :func:`attack_texts` ends within :data:`TRIAL_SECONDS` (in a child
    process, killed at the deadline: a running match cannot be interrupted in this one)."""
    try:
        subprocess.run(
            [sys.executable, "-I", "-c", _TRIAL],
            input=json.dumps([pattern, attack_texts(_parse(pattern))]),
            text=True,
            capture_output=True,
            timeout=TRIAL_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return True


def _parse(pattern: str) -> Any:
    try:
        return sre_parse.parse(pattern)
    except Exception:  # the caller compiled it already; anything odd here just means "try it"
        return None


def _may_backtrack(tree: Any, *, inside_repeat: bool) -> bool:
    """Whether a repeat contains another repeat, an alternation or a back-reference."""
    for op, arg in tree:
        if op in _REPEATS:
            nested = inside_repeat or _may_backtrack(arg[2], inside_repeat=arg[1] > 1)
        else:
            nested = (op in _AMBIGUOUS and inside_repeat) or any(
                _may_backtrack(child, inside_repeat=inside_repeat) for child in _children(op, arg)
            )
        if nested:
            return True
    return False


def _children(op: Any, arg: Any) -> list[Any]:
    """The sub-patterns of a group, an alternation or a look-around."""
    if op == sre_constants.SUBPATTERN:
        return [arg[-1]]
    if op == sre_constants.BRANCH:
        return list(arg[1])
    if op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
        return [arg[1]]
    return []


def attack_texts(tree: Any) -> list[str]:
    """Runs of each character the pattern names (and of pairs of them), each followed by every
    character or by nothing: what makes a nested repeat try every way to split the run."""
    characters = dict.fromkeys(_named_characters(tree) if tree is not None else [])
    alphabet = "".join(list(dict.fromkeys([*characters, *_ALPHABET]))[:_MAX_ALPHABET])
    endings = ["", *alphabet]
    runs = [c * RUN_LENGTH for c in alphabet]
    runs += [(a + b) * (RUN_LENGTH // 2) for a in alphabet for b in alphabet if a != b]
    return [run + end for run in runs for end in endings]


def _named_characters(tree: Any) -> list[str]:
    """Characters the pattern mentions: literals, range ends, and one of each category."""
    found: list[str] = []
    categories = {
        sre_constants.CATEGORY_DIGIT: "1",
        sre_constants.CATEGORY_NOT_DIGIT: "b",
        sre_constants.CATEGORY_SPACE: " ",
        sre_constants.CATEGORY_NOT_SPACE: "c",
        sre_constants.CATEGORY_WORD: "d",
        sre_constants.CATEGORY_NOT_WORD: "-",
    }
    for op, arg in tree:
        if op in (sre_constants.LITERAL, sre_constants.NOT_LITERAL):
            found.append(chr(arg))
        elif op == sre_constants.RANGE:
            found += [chr(arg[0]), chr(arg[1])]
        elif op == sre_constants.CATEGORY:
            found.append(categories.get(arg, "e"))
        elif op == sre_constants.IN:
            found += _named_characters(arg)
        elif op in _REPEATS:
            found += _named_characters(arg[2])
        for child in _children(op, arg):
            found += _named_characters(child)
    return found
