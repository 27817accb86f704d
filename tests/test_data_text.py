"""Tokeniser and vocabulary: deterministic, training-frequency based, saved with the tokeniser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rnnkit.data import Tokenizer, Vocabulary
from rnnkit.errors import DataError


def test_tokenizer_lowercases_and_keeps_regex_matches() -> None:
    assert Tokenizer()("Hello, WORLD") == ["hello", ",", "world"]
    assert Tokenizer(lowercase=False, pattern=r"\w+")("Hello, WORLD") == ["Hello", "WORLD"]


def test_a_pattern_with_a_capturing_group_or_bad_syntax_is_refused() -> None:
    with pytest.raises(DataError, match="capturing"):
        Tokenizer(pattern=r"(\w)+")
    with pytest.raises(DataError, match="not a valid regex"):
        Tokenizer(pattern=r"[")


def test_vocabulary_keeps_frequent_tokens_most_frequent_first_after_the_specials() -> None:
    vocab = Vocabulary.build([["b", "a", "b"], ["c", "a", "b"], ["d"]], min_freq=2, max_size=None)
    assert vocab.itos == ["<pad>", "<unk>", "b", "a"]
    assert (vocab.pad_id, vocab.unk_id) == (0, 1)


def test_max_size_counts_the_specials_and_ties_break_alphabetically() -> None:
    vocab = Vocabulary.build([["z", "y", "x", "x"]], min_freq=1, max_size=4)
    assert vocab.itos == ["<pad>", "<unk>", "x", "y"]


def test_unknown_tokens_encode_as_unk() -> None:
    vocab = Vocabulary.build([["known", "known"]], min_freq=1)
    assert vocab.encode("Known unknown").tolist() == [2, 1]


def test_saved_vocabulary_round_trips_with_its_tokenizer(tmp_path: Path) -> None:
    tokenizer = Tokenizer(lowercase=False, pattern=r"[A-Za-z]+")
    vocab = Vocabulary.build([["Alpha", "beta", "Alpha"]], min_freq=1, tokenizer=tokenizer)
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab and loaded.tokenizer == tokenizer
    assert np.array_equal(loaded.encode("Alpha ALPHA beta"), vocab.encode("Alpha ALPHA beta"))


def test_loading_something_else_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(DataError, match="not an rnnkit vocabulary"):
        Vocabulary.load(tmp_path / "x.json")
