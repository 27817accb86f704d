"""Token patterns that backtrack exponentially are refused, in a config and in a run's vocab.json."""

from __future__ import annotations

import json
import shutil

import pytest
from test_cli import fails_with

from rnnkit.config import DEFAULT_TOKEN_PATTERN
from rnnkit.data.regex_safety import finishes_trial
from rnnkit.data.text import Vocabulary
from rnnkit.data.tokenizers import RegexTokenizer
from rnnkit.errors import DataError

CATASTROPHIC = [r"(?:a+)+$", r"(?:\w+\s?)+$", r"(?:a|aa)+$", r"(?:[^\W_]+\.?)+@"]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_a_pattern_that_backtracks_exponentially_is_refused(pattern):
    with pytest.raises(DataError, match="takes exponential time on some texts"):
        RegexTokenizer(pattern=pattern)


@pytest.mark.parametrize(
    "pattern", [r"\w+", r"[a-z]+(?:'[a-z]+)*", r"(?:\d+,)*\d+", r"\S+", r"(?:ab|cd)+", r"[^\W\d_]+|\d+"]
)
def test_ordinary_patterns_are_accepted(pattern):
    assert RegexTokenizer(lowercase=False, pattern=pattern)("ab cd 12,34 x") is not None


def test_the_default_pattern_passes_the_trial_it_is_spared():
    assert finishes_trial(DEFAULT_TOKEN_PATTERN)


def test_a_catastrophic_pattern_in_a_saved_vocabulary_is_refused(tmp_path):
    saved = {"format": "rnnkit-vocabulary/1", "itos": ["<pad>", "<unk>"], "tokenizer": {"lowercase": True}}
    saved["tokenizer"]["pattern"] = CATASTROPHIC[0]
    (tmp_path / "vocab.json").write_text(json.dumps(saved))
    with pytest.raises(DataError, match="exponential"):
        Vocabulary.load(tmp_path / "vocab.json")


def test_predict_with_a_run_whose_vocabulary_was_given_such_a_pattern_is_one_line(
    finished_run, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "run.json").unlink()  # a run from before manifests: nothing else catches the edit
    vocab = json.loads((run / "vocab.json").read_text())
    vocab["tokenizer"]["pattern"] = CATASTROPHIC[0]
    (run / "vocab.json").write_text(json.dumps(vocab))
    fails_with(capsys, ["predict", "--run-dir", str(run), "a" * 50 + "!"], "exponential")


def test_training_with_such_a_pattern_is_refused_and_leaves_no_run_folder(finished_run, tmp_path, capsys):
    from test_trainer import cli_args, tiny_settings

    run = tmp_path / "run"
    settings = tiny_settings(finished_run.parent / "corpus.csv", **{"data.token_pattern": CATASTROPHIC[0]})
    fails_with(
        capsys, ["train", "--run-dir", str(run), *cli_args(settings)], "data.token_pattern", "exponential"
    )
    assert not run.exists()
