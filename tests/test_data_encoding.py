"""Tokenising a corpus once, in parallel, into first-seen ids, then encoding it with the vocabulary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rnnkit.data import encoding
from rnnkit.data.encoding import encode_corpus, tokenize_corpus, worker_count
from rnnkit.data.text import UNK_ID, Tokenizer, Vocabulary

TEXTS = ["the cat sat", "", "The dog, the cat!", "   ", "a new word"] * 7


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoding, "CHUNK_DOCUMENTS", 3)  # 35 texts: 12 chunks, most sent to workers


def test_first_seen_ids_number_tokens_in_order_of_appearance(tmp_path: Path) -> None:
    first_seen = tokenize_corpus(TEXTS, Tokenizer(), tmp_path / "ids", workers=1)
    assert first_seen.tokens[:6] == ["the", "cat", "sat", "dog", ",", "!"]
    assert first_seen.store.document(2).tolist() == [0, 3, 4, 0, 1, 5]
    assert first_seen.store.lengths[:5].tolist() == [3, 0, 6, 0, 3]
    assert first_seen.blank[:5].tolist() == [False, True, False, True, False]


def test_worker_processes_give_exactly_the_ids_of_one_process(tmp_path: Path, small_chunks: None) -> None:
    one = tokenize_corpus(TEXTS, Tokenizer(), tmp_path / "one", workers=1)
    two = tokenize_corpus(TEXTS, Tokenizer(), tmp_path / "two", workers=2)
    assert one.tokens == two.tokens and np.array_equal(one.blank, two.blank)
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()
    assert np.array_equal(one.store.offsets, two.store.offsets)


def test_a_tokenizer_that_cannot_be_sent_to_workers_tokenises_here(
    tmp_path: Path, small_chunks: None
) -> None:
    def local_tokenizer(text: str) -> list[str]:  # a closure does not pickle
        return text.split()

    first_seen = tokenize_corpus(TEXTS, local_tokenizer, tmp_path / "ids", workers=2)
    assert first_seen.store.document(0).tolist() == [0, 1, 2] and len(first_seen.store) == len(TEXTS)


def test_counts_and_encoding_match_a_vocabulary_built_from_token_lists(tmp_path: Path) -> None:
    tokenizer = Tokenizer()
    first_seen = tokenize_corpus(TEXTS, tokenizer, tmp_path / "ids", workers=1)
    train = np.arange(0, len(TEXTS), 2)
    counted = dict(zip(first_seen.tokens, first_seen.counts(train).tolist(), strict=True))
    vocab = Vocabulary.from_counts(counted, min_freq=2, tokenizer=tokenizer)
    assert vocab == Vocabulary.build((tokenizer(TEXTS[i]) for i in train), min_freq=2, tokenizer=tokenizer)
    (tmp_path / "store").mkdir()
    store = encode_corpus(first_seen, vocab.encode_tokens(first_seen.tokens), tmp_path / "store", UNK_ID)
    for index, text in enumerate(TEXTS):
        expected = vocab.encode(text).tolist() or [UNK_ID]  # empty documents become one <unk>
        assert store.document(index).tolist() == expected


def test_worker_count_zero_means_one_per_usable_core() -> None:
    assert worker_count(3) == 3 and worker_count(0) >= 1
