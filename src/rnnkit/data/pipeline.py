"""``prepare_data(cfg)``: the one door from a config to encoded train/validation/test sets.

Order of work: load the documents (or take them from Python: ``documents``), split off the test
part (``data.split``), tokenise, drop
training documents that are empty after tokenisation, carve a stratified seeded validation part
from what is left, build the vocabulary from the training part only, encode. The test part is
never looked at before encoding. Empty test documents are kept as a single ``<unk>`` so test
figures stay comparable with the standard protocol (all 7,532 bydate test posts).

The encoded corpus (untruncated ids) is cached under ``<cache>/corpus/<key>/``; the key covers
every data setting that changes it, the seed, the size/mtime of the input files and what the
tokenizer depends on. Documents handed over from Python are not cached.

Labels are class ids, or for multi-label data a 0/1 matrix (see :mod:`rnnkit.tasks`); the
validation (and a carved test) part is then split by iterative stratification.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch

from rnnkit.config import Config
from rnnkit.data.batching import EncodedDataset
from rnnkit.data.cache import cache_root, fingerprint, path_identity
from rnnkit.data.corpus import Columns, TextDataset, load_user_data, split_indices, split_layout
from rnnkit.data.newsgroups import load_20newsgroups
from rnnkit.data.text import UNK_ID, Vocabulary
from rnnkit.data.tokenizers import TextTokenizer, build_tokenizer
from rnnkit.data.vectors import build_embeddings
from rnnkit.errors import DataError
from rnnkit.io import atomic_write_bytes, atomic_write_json
from rnnkit.tasks import MULTILABEL, task_of

logger = logging.getLogger(__name__)

__all__ = ["PreparedData", "encode_texts", "prepare_data"]

SPLITS = ("train", "validation", "test")
_CACHE_VERSION = 2  # 2: multi-label matrices


@dataclass
class PreparedData:
    """Everything the trainer needs; ``embeddings`` is ``None`` when the model initialises itself."""

    train: EncodedDataset
    validation: EncodedDataset
    test: EncodedDataset
    vocab: Vocabulary
    tokenizer: TextTokenizer
    label_names: list[str]
    embeddings: torch.Tensor | None
    stats: dict[str, Any]
    token_ids: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)
    """Each split's token ids before truncation to ``data.max_length`` (the baseline reads whole texts)."""

    @property
    def task(self) -> str:
        """``single`` or ``multilabel`` (see :mod:`rnnkit.tasks`)."""
        return task_of(self.train.labels)


Documents = tuple[TextDataset, "TextDataset | None"]
"""In-memory documents for :func:`prepare_data`: ``(train pool, test or None)``."""


@dataclass
class _Corpus:
    """The cacheable part: untruncated id sequences and labels per split."""

    vocab: Vocabulary
    sequences: dict[str, list[np.ndarray]]
    labels: dict[str, np.ndarray]
    label_names: list[str]
    stats: dict[str, Any]


def encode_texts(
    texts: Sequence[str],
    vocab: Vocabulary,
    tokenizer: TextTokenizer | None = None,
    max_length: int = 400,
    labels: np.ndarray | None = None,
) -> EncodedDataset:
    """New raw texts as an :class:`EncodedDataset` for prediction; ``labels`` default to all 0
    (unknown; a multi-label predictor passes a zero matrix).

    Uses the vocabulary's own tokenizer unless one is given; empty texts become one ``<unk>``.
    """
    tokenize = tokenizer or vocab.tokenizer
    sequences = [_nonempty(vocab.encode_tokens(tokenize(text))) for text in texts]
    unknown = np.zeros(len(sequences), dtype=np.int64) if labels is None else labels
    return EncodedDataset(sequences, unknown, max_length)


def _nonempty(ids: np.ndarray) -> np.ndarray:
    return ids if len(ids) else np.array([UNK_ID], dtype=np.int32)


def prepare_data(cfg: Config, documents: Documents | None = None) -> PreparedData:
    """Load (or reuse from cache), split, tokenise and encode the data; attach embeddings.

    ``documents`` are texts and labels from Python (:func:`rnnkit.data.corpus.from_lists`) in place
    of ``data.dataset``: the training pool and, if not ``None``, the test part.
    """
    data = cfg.data
    root = cache_root(data.cache_dir)
    tokenizer = build_tokenizer(data)
    if documents is None:
        corpus = _cached_corpus(cfg, tokenizer, root)
    else:
        corpus = _build_corpus(cfg, tokenizer, documents)
        corpus.stats["corpus_cache"] = "in memory"
    datasets = {
        name: EncodedDataset(corpus.sequences[name], corpus.labels[name], data.max_length) for name in SPLITS
    }
    matrix, embedding_stats = build_embeddings(
        cfg.embeddings, corpus.vocab, corpus.sequences["train"], root, cfg.train.seed
    )
    stats = {
        **corpus.stats,
        "truncated_train_docs": int(sum(len(s) > data.max_length for s in corpus.sequences["train"])),
        **embedding_stats,
    }
    logger.info(
        "data: %d train / %d validation / %d test documents, %d %s, vocabulary %d",
        *(len(datasets[name]) for name in SPLITS),
        len(corpus.label_names),
        "labels (multi-label)" if task_of(corpus.labels["train"]) == MULTILABEL else "classes",
        len(corpus.vocab),
    )
    _log_data_notes(cfg, corpus)
    return PreparedData(
        train=datasets["train"],
        validation=datasets["validation"],
        test=datasets["test"],
        vocab=corpus.vocab,
        tokenizer=tokenizer,
        label_names=corpus.label_names,
        embeddings=None if matrix is None else torch.from_numpy(matrix),
        stats=stats,
        token_ids=corpus.sequences,
    )


def _log_data_notes(cfg: Config, corpus: _Corpus) -> None:
    """What a user should know about the data, every run (also from the cache): where the test set
    came from, the documents whose bytes were replaced or rows skipped, classes training never sees."""
    logger.info("test set: %s (%d documents)", _test_set_origin(cfg), len(corpus.labels["test"]))
    if corpus.stats.get("undecodable_docs"):
        logger.warning(
            "%d documents had bytes that are not UTF-8; they were replaced by U+FFFD",
            corpus.stats["undecodable_docs"],
        )
    if corpus.stats.get("missing_label"):
        logger.warning("%d rows without a label were skipped", corpus.stats["missing_label"])
    trained, tested = (
        _documents_per_label(corpus.labels[name], len(corpus.label_names)) for name in ("train", "test")
    )
    kind = "label" if task_of(corpus.labels["train"]) == MULTILABEL else "class"
    for label in np.flatnonzero(trained == 0):
        logger.warning(
            "%s %r has no training document (%d in the test part); the model cannot learn it",
            kind,
            corpus.label_names[label],
            tested[label],
        )


def _documents_per_label(labels: np.ndarray, count: int) -> np.ndarray:
    """How many documents have each class (class ids) or each label (a 0/1 matrix)."""
    if labels.ndim == 2:
        return labels.sum(axis=0).astype(np.int64)
    return np.bincount(labels, minlength=count)


def _test_set_origin(cfg: Config) -> str:
    """Where ``data.split`` and the data's layout take the test documents from, in words."""
    data, seed = cfg.data, cfg.train.seed
    held = f"{data.test_size:.0%}"
    if data.dataset == "20newsgroups":
        if data.split == "bydate":
            return "the 20news-bydate test part"
        return f"{held} of 20 Newsgroups held out at random (data.split=random, seed {seed})"
    path = Path(str(data.path)).expanduser()
    pair = split_layout(data.dataset, path)
    if pair is not None:
        if data.split == "bydate":
            return str(pair[1])
        return f"{held} of {pair[0]} and {pair[1]} together, held out at random (data.split=random)"
    sibling = path.with_name(f"test{path.suffix}")
    if path.is_file() and path.stem == "train" and sibling.is_file():
        logger.warning("%s is not used: set data.path=%s to make it the test set", sibling, path.parent)
    how = "stratified by class" if data.split == "bydate" else "at random"
    return f"{held} of {path} held out ({how}; data.test_size, seed {seed})"


def _source_identity(cfg: Config) -> Any:
    data = cfg.data
    if data.dataset == "memory":
        raise DataError(
            "data.dataset 'memory' means documents handed over from Python (rnnkit.fit, "
            "prepare_data(cfg, documents)); for files use folder, csv or jsonl"
        )
    if data.dataset == "20newsgroups":
        if data.archive:
            return path_identity(data.archive) if Path(data.archive).expanduser().exists() else data.archive
        return {"sklearn": sklearn.__version__, "data_home": data.data_home}
    if not data.path:
        raise DataError(f"data.path must point to your data for dataset {data.dataset!r}")
    if not Path(data.path).expanduser().exists():
        raise DataError(f"data.path {data.path} does not exist")
    return path_identity(data.path)


def _cached_corpus(cfg: Config, tokenizer: TextTokenizer, root: Path) -> _Corpus:
    settings = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in ("cache_dir", "max_length")}
    identity = (_source_identity(cfg), tokenizer.cache_identity())
    key = fingerprint(_CACHE_VERSION, settings, identity, cfg.train.seed)
    folder = root / "corpus" / key
    if (folder / "meta.json").exists():
        logger.info("tokenised corpus from cache %s", folder)
        corpus = _read_corpus(folder)
        corpus.stats["corpus_cache"] = "hit"
        return corpus
    corpus = _build_corpus(cfg, tokenizer)
    _write_corpus(folder, corpus)
    corpus.stats["corpus_cache"] = "miss"
    return corpus


def _load_documents(cfg: Config) -> tuple[TextDataset, TextDataset]:
    """``(train_pool, test)`` following ``data.split``; validation is carved from the pool later."""
    data, seed = cfg.data, cfg.train.seed
    if data.dataset == "20newsgroups":
        common = {
            "categories": data.categories,
            "remove": tuple(data.remove),
            "data_home": data.data_home,
            "archive": data.archive,
        }
        if data.split == "bydate":
            return load_20newsgroups("train", **common), load_20newsgroups("test", **common)
        everything = load_20newsgroups("all", **common)
        rest, held = split_indices(everything.labels, data.test_size, seed, stratify=False)
        return everything.subset(rest), everything.subset(held)
    columns = Columns(data.text_column, data.label_column, data.label_separator)
    train, test = load_user_data(data.dataset, data.path, columns, data.task)
    return _test_part(cfg, train, test)


def _test_part(cfg: Config, train: TextDataset, test: TextDataset | None) -> tuple[TextDataset, TextDataset]:
    """``(train pool, test)``: a given test part under ``split: bydate``, else one carved off."""
    data, seed = cfg.data, cfg.train.seed
    stats = dict(train.stats)
    if test is not None:
        stats = {k: v + test.stats.get(k, 0) for k, v in stats.items()}
        if data.split == "bydate":
            return _with_stats(train, stats), test
        train = TextDataset(
            [*train.texts, *test.texts], np.concatenate([train.labels, test.labels]), train.label_names
        )
    rest, held = split_indices(train.labels, data.test_size, seed, stratify=data.split == "bydate")
    return _with_stats(train.subset(rest), stats), train.subset(held)


def _with_stats(dataset: TextDataset, stats: dict[str, int]) -> TextDataset:
    dataset.stats = stats
    return dataset


def _build_corpus(cfg: Config, tokenizer: TextTokenizer, documents: Documents | None = None) -> _Corpus:
    data = cfg.data
    pool, test = _load_documents(cfg) if documents is None else _test_part(cfg, *documents)
    if len(pool) == 0:
        raise DataError("the training split is empty; check data.path, data.categories and data.test_size")
    if data.task == MULTILABEL and pool.task != MULTILABEL:  # one class each: one-label sets
        pool, test = _one_hot(pool), _one_hot(test)
    if pool.task == MULTILABEL:
        _log_multilabel(pool)
    pool_tokens = [tokenizer(text) for text in pool.texts]
    keep = np.array([i for i, tokens in enumerate(pool_tokens) if tokens], dtype=np.int64)
    if len(keep) == 0:
        raise DataError(
            "no training document has a single token; check data.text_column and data.token_pattern"
        )
    _refuse_one_class(pool.subset(keep))
    empty_raw = sum(not text.strip() for text in pool.texts)
    stats: dict[str, Any] = {
        **pool.stats,
        "empty_docs_dropped": empty_raw,
        "empty_after_cleaning_dropped": len(pool) - len(keep) - empty_raw,
    }
    if len(keep) < len(pool):
        logger.warning(
            "dropped %d training documents with no tokens (%d empty, %d empty after cleaning)",
            len(pool) - len(keep),
            stats["empty_docs_dropped"],
            stats["empty_after_cleaning_dropped"],
        )
    train_idx, val_idx = split_indices(pool.labels[keep], data.val_size, cfg.train.seed)
    if data.train_docs is not None and data.train_docs < len(train_idx):
        # ceil((k - 0.5) / n * n) == k: exactly train_docs documents, stratified like the other splits.
        fraction = (data.train_docs - 0.5) / len(train_idx)
        _, subset = split_indices(pool.labels[keep][train_idx], fraction, cfg.train.seed)
        logger.info(
            "data.train_docs: training on %d of %d training documents (stratified, seed %d)",
            len(subset),
            len(train_idx),
            cfg.train.seed,
        )
        stats["train_docs_left_out"] = len(train_idx) - len(subset)
        train_idx = train_idx[np.sort(subset)]
    parts = {"train": keep[train_idx], "validation": keep[val_idx]}
    vocab = Vocabulary.build(
        (pool_tokens[i] for i in parts["train"]),
        min_freq=data.min_freq,
        max_size=data.max_vocab,
        tokenizer=tokenizer,
    )
    sequences = {name: [vocab.encode_tokens(pool_tokens[i]) for i in idx] for name, idx in parts.items()}
    labels = {name: pool.labels[idx] for name, idx in parts.items()}
    test_ids = [vocab.encode_tokens(tokenizer(text)) for text in test.texts]
    stats["empty_test_docs_as_unk"] = sum(len(ids) == 0 for ids in test_ids)
    sequences["test"] = [_nonempty(ids) for ids in test_ids]
    labels["test"] = test.labels
    stats.update({f"{name}_docs": len(sequences[name]) for name in SPLITS})
    stats.update({"num_classes": len(pool.label_names), "vocab_size": len(vocab)})
    return _Corpus(vocab, sequences, labels, list(pool.label_names), stats)


def _refuse_one_class(pool: TextDataset) -> None:
    """A classifier needs two classes; multi-label data needs two different label sets (a label
    that every document has, and no other, leaves nothing to learn)."""
    if pool.task == MULTILABEL:
        sets = np.unique(pool.labels, axis=0)
        if len(sets) < 2:
            names = ", ".join(repr(name) for name, on in zip(pool.label_names, sets[0], strict=True) if on)
            raise DataError(
                f"every training document has the same labels ({names or 'none'}); multi-label training "
                "needs documents whose label sets differ: check data.label_column or data.label_separator"
            )
        return
    classes = np.unique(pool.labels)
    if len(classes) < 2:
        names = ", ".join(repr(pool.label_names[label]) for label in classes)
        raise DataError(
            f"the training data has only one class ({names}); a classifier needs at least two: "
            "check data.label_column, the class folders or data.categories"
        )


def _one_hot(dataset: TextDataset) -> TextDataset:
    matrix = np.eye(len(dataset.label_names), dtype=np.float32)[dataset.labels]
    return TextDataset(dataset.texts, matrix, dataset.label_names, dataset.stats)


def _log_multilabel(pool: TextDataset) -> None:
    counts = pool.labels.sum(axis=1)
    if not counts.any():
        raise DataError("no training document has a label; multi-label data needs labels on some documents")
    logger.info(
        "labels are lists: multi-label, %d labels, %.2f per document, %d documents without a label",
        len(pool.label_names),
        counts.mean(),
        int((counts == 0).sum()),
    )


def _write_corpus(folder: Path, corpus: _Corpus) -> None:
    arrays: dict[str, np.ndarray] = {}
    for name in SPLITS:
        seqs = corpus.sequences[name]
        arrays[f"{name}_ids"] = np.concatenate([*seqs, np.zeros(0, np.int32)]).astype(np.int32)
        arrays[f"{name}_offsets"] = np.cumsum([0, *map(len, seqs)], dtype=np.int64)
        arrays[f"{name}_labels"] = corpus.labels[name]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(folder / "arrays.npz", buffer.getvalue())
    corpus.vocab.save(folder / "vocab.json")
    # Written last: its presence means the folder is complete.
    atomic_write_json(folder / "meta.json", {"label_names": corpus.label_names, "stats": corpus.stats})


def _read_corpus(folder: Path) -> _Corpus:
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    with np.load(folder / "arrays.npz") as arrays:
        sequences = {name: _unflatten(arrays[f"{name}_ids"], arrays[f"{name}_offsets"]) for name in SPLITS}
        labels = {name: arrays[f"{name}_labels"] for name in SPLITS}
    return _Corpus(
        Vocabulary.load(folder / "vocab.json"), sequences, labels, meta["label_names"], meta["stats"]
    )


def _unflatten(ids: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [ids[start:end] for start, end in itertools.pairwise(offsets)]
