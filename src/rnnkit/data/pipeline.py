"""``prepare_data(cfg)``: the one door from a config to encoded train/validation/test sets.

Order of work: load the documents (or take them from Python: ``documents``), split off the test
part (``data.split``), tokenise, drop training documents that are empty after tokenisation, carve
a stratified seeded validation part from what is left, build the vocabulary from the training part
only, encode. The test part is never looked at before encoding. Empty test documents are kept as a
single ``<unk>`` so test figures stay comparable with the standard protocol (all 7,532 bydate test
posts).

Labels are class ids, or for multi-label data a 0/1 matrix (see :mod:`rnnkit.tasks`); the
validation (and a carved test) part is then split by iterative stratification.

Any corpus size: documents are read as a stream, tokenised once by worker processes and written
to disk as they come (:mod:`rnnkit.data.encoding`), so memory holds the distinct tokens and the
labels, not the text. The encoded corpus (untruncated ids, one flat file: :mod:`rnnkit.data.store`)
is cached under ``<cache>/corpus/<key>/``: ``ids.npy``, ``offsets.npy``, ``labels.npy`` (per
document), ``train.npy``/``validation.npy``/``test.npy`` (each split's document positions),
``vocab.json`` and ``meta.json``, written last. The key covers every data setting that changes the
corpus, the seed, the size/mtime of the input files and what the tokenizer depends on. Training
reads documents from the file as it batches them, so a corpus larger than memory trains too.
Documents handed over from Python are built the same way in a temporary folder, then held in
memory (not cached).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import torch

from rnnkit.config import Config
from rnnkit.data.batching import EncodedDataset
from rnnkit.data.cache import DAMAGED_ENTRY, fingerprint, path_identity, usable_cache_root
from rnnkit.data.corpus import (
    Columns,
    RecordStream,
    TextDataset,
    encode_labels,
    finish_labels,
    split_indices,
    split_layout,
    stream_records,
)
from rnnkit.data.encoding import encode_corpus, tokenize_corpus, worker_count
from rnnkit.data.newsgroups import load_20newsgroups
from rnnkit.data.store import DocumentView, TokenStore
from rnnkit.data.text import UNK_ID, Vocabulary
from rnnkit.data.tokenizers import TextTokenizer, build_tokenizer
from rnnkit.data.vectors import build_embeddings
from rnnkit.errors import DataError
from rnnkit.io import atomic_write_json, exclusive_lock
from rnnkit.tasks import MULTILABEL, task_of

logger = logging.getLogger(__name__)

__all__ = ["PreparedData", "encode_texts", "prepare_data"]

SPLITS = ("train", "validation", "test")
_CACHE_VERSION = 3  # 2: multi-label matrices; 3: one flat id file plus offsets
_META, _LABELS = "meta.json", "labels.npy"


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
    token_ids: dict[str, Sequence[np.ndarray]] = dataclasses.field(default_factory=dict)
    """Each split's token ids before truncation to ``data.max_length`` (the baseline reads whole
    texts), read from the cache as they are used."""

    @property
    def task(self) -> str:
        """``single`` or ``multilabel`` (see :mod:`rnnkit.tasks`)."""
        return task_of(self.train.labels)


Documents = tuple[TextDataset, "TextDataset | None"]
"""In-memory documents for :func:`prepare_data`: ``(train pool, test or None)``."""


@dataclass
class _Corpus:
    """The cacheable part: every document's untruncated ids, the splits as document positions."""

    vocab: Vocabulary
    store: TokenStore
    documents: dict[str, np.ndarray]  # split name -> positions in ``store`` (and ``labels``)
    labels: np.ndarray  # per document of the store: class ids, or a 0/1 matrix (multi-label)
    label_names: list[str]
    stats: dict[str, Any]

    def split_labels(self, split: str) -> np.ndarray:
        return self.labels[self.documents[split]]

    def dataset(self, split: str, max_length: int) -> EncodedDataset:
        documents = self.documents[split]
        return EncodedDataset.from_store(self.store, documents, self.labels[documents], max_length)


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
    root = usable_cache_root(data.cache_dir)
    tokenizer = build_tokenizer(data)
    if documents is None:
        corpus = _cached_corpus(cfg, tokenizer, root)
    else:
        corpus = _corpus_in_memory(cfg, tokenizer, documents)
    datasets = {name: corpus.dataset(name, data.max_length) for name in SPLITS}
    train_documents = DocumentView(corpus.store, corpus.documents["train"])
    matrix, embedding_stats = build_embeddings(
        cfg.embeddings, corpus.vocab, train_documents, root, cfg.train.seed
    )
    stats = {
        **corpus.stats,
        "truncated_train_docs": int(
            (corpus.store.lengths[train_documents.documents] > data.max_length).sum()
        ),
        **embedding_stats,
    }
    logger.info(
        "data: %d train / %d validation / %d test documents, %d %s, vocabulary %d",
        *(len(datasets[name]) for name in SPLITS),
        len(corpus.label_names),
        "labels (multi-label)" if task_of(corpus.labels) == MULTILABEL else "classes",
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
        token_ids={name: DocumentView(corpus.store, corpus.documents[name]) for name in SPLITS},
    )


def _log_data_notes(cfg: Config, corpus: _Corpus) -> None:
    """What a user should know about the data, every run (also from the cache): where the test set
    came from, the documents whose bytes were replaced or rows skipped, classes training never sees."""
    test_labels = corpus.split_labels("test")
    logger.info("test set: %s (%d documents)", _test_set_origin(cfg), len(test_labels))
    if corpus.stats.get("undecodable_docs"):
        logger.warning(
            "%d documents had bytes that are not UTF-8; they were replaced by U+FFFD",
            corpus.stats["undecodable_docs"],
        )
    if corpus.stats.get("missing_label"):
        logger.warning("%d rows without a label were skipped", corpus.stats["missing_label"])
    trained, tested = (
        _documents_per_label(labels, len(corpus.label_names))
        for labels in (corpus.split_labels("train"), test_labels)
    )
    kind = "label" if task_of(corpus.labels) == MULTILABEL else "class"
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
    ignored = ("cache_dir", "max_length", "num_workers")  # settings that do not change the corpus
    settings = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in ignored}
    identity = (_source_identity(cfg), tokenizer.cache_identity())
    key = fingerprint(_CACHE_VERSION, settings, identity, cfg.train.seed)
    folder = root / "corpus" / key
    if (folder / _META).exists():
        try:
            corpus = _read_corpus(folder, in_memory=False)
            _check_corpus(corpus)
        except DAMAGED_ENTRY as error:
            logger.warning(
                "the tokenised corpus in the cache is damaged (%s: %s); building it again", folder, error
            )
            shutil.rmtree(folder, ignore_errors=True)
        else:
            logger.info("tokenised corpus from cache %s", folder)
            corpus.stats["corpus_cache"] = "hit"
            return corpus
    _build_corpus(cfg, tokenizer, folder, _load_documents(cfg))
    corpus = _read_corpus(folder, in_memory=False)
    corpus.stats["corpus_cache"] = "miss"
    return corpus


def _corpus_in_memory(cfg: Config, tokenizer: TextTokenizer, documents: Documents) -> _Corpus:
    """Documents from Python: built like a cached corpus, in a temporary folder, then read into memory."""
    pool, test = documents
    parts = [pool] if test is None else [pool, test]
    labels = np.concatenate([part.labels for part in parts])
    opened = _Documents([_in_memory_part(part) for part in parts], known=(labels, list(pool.label_names)))
    with tempfile.TemporaryDirectory(prefix="rnnkit-corpus-") as scratch:
        folder = Path(scratch) / "corpus"
        _build_corpus(cfg, tokenizer, folder, opened)
        corpus = _read_corpus(folder, in_memory=True)
    corpus.stats["corpus_cache"] = "in memory"
    return corpus


@dataclass
class _Documents:
    """The documents in reading order, read once: ``texts`` yields them and fills ``raw_labels``.

    ``parts`` are the sources read one after the other (the training pool, then a fixed test part
    if the data has one) with their statistics; ``known`` holds the labels and their names where they
    are encoded up front (20 Newsgroups, documents from Python).
    """

    parts: list[RecordStream]
    known: tuple[np.ndarray, list[str]] | None = None
    raw_labels: list[Any] = dataclasses.field(default_factory=list)
    part_sizes: list[int] = dataclasses.field(default_factory=list)

    def texts(self) -> Iterator[str]:
        for part in self.parts:
            before = len(self.raw_labels)
            for text, label in part.records:
                self.raw_labels.append(label)
                yield text
            self.part_sizes.append(len(self.raw_labels) - before)

    def labels(self, task: str) -> tuple[np.ndarray, list[str]]:
        """Every document's label (all parts share one label space); once ``texts`` is used up."""
        if self.known is not None:
            return self.known
        return encode_labels(finish_labels(self.parts[0].kind, self.raw_labels), task=task)

    def stats(self) -> dict[str, int]:
        """The parts' statistics added up (undecodable documents, rows without a label, ...)."""
        total: dict[str, int] = {}
        for part in self.parts:
            for name, value in part.stats.items():
                total[name] = total.get(name, 0) + value
        return total


def _in_memory_part(dataset: TextDataset) -> RecordStream:
    return RecordStream("memory", zip(dataset.texts, dataset.labels, strict=True), dict(dataset.stats))


def _load_documents(cfg: Config) -> _Documents:
    """The configured data as streams (files and folders) or loaded (20 Newsgroups)."""
    data = cfg.data
    if data.dataset == "20newsgroups":
        common = {
            "categories": data.categories,
            "remove": tuple(data.remove),
            "data_home": data.data_home,
            "archive": data.archive,
        }
        subsets = ("train", "test") if data.split == "bydate" else ("all",)
        loaded = [load_20newsgroups(subset, **common) for subset in subsets]
        known = (np.concatenate([part.labels for part in loaded]), list(loaded[0].label_names))
        return _Documents([_in_memory_part(part) for part in loaded], known=known)
    root = Path(str(data.path)).expanduser()  # checked by _source_identity
    paths = split_layout(data.dataset, root) or (root,)
    columns = Columns(data.text_column, data.label_column, data.label_separator)
    return _Documents([stream_records(data.dataset, path, columns) for path in paths])


def _pool_and_test(cfg: Config, documents: _Documents, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the training pool and of the test part, following ``data.split``.

    A fixed test part (20 Newsgroups' bydate test set, ``test/`` or ``test.csv``, a test part from
    Python) is used with ``split: bydate``; otherwise ``test_size`` of everything is held out:
    stratified for data that came in one part with ``split: bydate``, at random otherwise (also
    20 Newsgroups' ``random``).
    """
    data, seed = cfg.data, cfg.train.seed
    everything = np.arange(len(labels))
    if len(documents.part_sizes) == 2 and data.split == "bydate":
        boundary = documents.part_sizes[0]
        return everything[:boundary], everything[boundary:]
    return split_indices(labels, data.test_size, seed, stratify=data.split == "bydate")


def _build_corpus(cfg: Config, tokenizer: TextTokenizer, folder: Path, documents: _Documents) -> None:
    """Read, tokenise, split and encode the documents into the corpus ``folder`` (see the module)."""
    data = cfg.data
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        workers = worker_count(data.num_workers)
        first_seen = tokenize_corpus(documents.texts(), tokenizer, building / "first-seen.i32", workers)
        labels, label_names = documents.labels(data.task)
        pool, test = _pool_and_test(cfg, documents, labels)
        if len(pool) == 0:
            raise DataError(
                "the training split is empty; check data.path, data.categories and data.test_size"
            )
        if data.task == MULTILABEL and labels.ndim == 1:  # one class each: one-label sets
            labels = np.eye(len(label_names), dtype=np.float32)[labels]
        if labels.ndim == 2:
            _log_multilabel(labels[pool], label_names)
        lengths = first_seen.store.lengths
        keep = pool[lengths[pool] > 0]
        if len(keep) == 0:
            raise DataError(
                "no training document has a single token; check data.text_column and data.token_pattern"
            )
        _refuse_one_class(labels[keep], label_names)
        empty_raw = int(first_seen.blank[pool].sum())
        stats: dict[str, Any] = {
            **documents.stats(),
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
        train_idx, val_idx = split_indices(labels[keep], data.val_size, cfg.train.seed)
        if data.train_docs is not None and data.train_docs < len(train_idx):
            # ceil((k - 0.5) / n * n) == k: exactly train_docs documents, stratified like the other splits.
            fraction = (data.train_docs - 0.5) / len(train_idx)
            _, subset = split_indices(labels[keep][train_idx], fraction, cfg.train.seed)
            logger.info(
                "data.train_docs: training on %d of %d training documents (stratified, seed %d)",
                len(subset),
                len(train_idx),
                cfg.train.seed,
            )
            stats["train_docs_left_out"] = len(train_idx) - len(subset)
            train_idx = train_idx[np.sort(subset)]
        splits = {"train": keep[train_idx], "validation": keep[val_idx], "test": test}
        vocab = Vocabulary.from_counts(
            dict(zip(first_seen.tokens, first_seen.counts(splits["train"]).tolist(), strict=True)),
            min_freq=data.min_freq,
            max_size=data.max_vocab,
            tokenizer=tokenizer,
        )
        to_final = vocab.encode_tokens(first_seen.tokens)
        encode_corpus(first_seen, to_final, building, empty_id=UNK_ID)
        (building / "first-seen.i32").unlink()
        stats["empty_test_docs_as_unk"] = int((lengths[test] == 0).sum())
        stats.update({f"{name}_docs": len(splits[name]) for name in SPLITS})
        stats.update({"num_classes": len(label_names), "vocab_size": len(vocab)})
        for name in SPLITS:
            np.save(building / f"{name}.npy", splits[name])
        np.save(building / _LABELS, labels)
        vocab.save(building / "vocab.json")
        # Written last: its presence means the folder is complete.
        atomic_write_json(building / _META, {"label_names": label_names, "stats": stats})
        _publish(building, folder)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _refuse_one_class(labels: np.ndarray, label_names: list[str]) -> None:
    """A classifier needs two classes; multi-label data needs two different label sets (a label
    that every document has, and no other, leaves nothing to learn)."""
    if labels.ndim == 2:
        sets = np.unique(labels, axis=0)
        if len(sets) < 2:
            names = ", ".join(repr(name) for name, on in zip(label_names, sets[0], strict=True) if on)
            raise DataError(
                f"every training document has the same labels ({names or 'none'}); multi-label training "
                "needs documents whose label sets differ: check data.label_column or data.label_separator"
            )
        return
    classes = np.unique(labels)
    if len(classes) < 2:
        names = ", ".join(repr(label_names[label]) for label in classes)
        raise DataError(
            f"the training data has only one class ({names}); a classifier needs at least two: "
            "check data.label_column, the class folders or data.categories"
        )


def _log_multilabel(labels: np.ndarray, label_names: list[str]) -> None:
    counts = labels.sum(axis=1)
    if not counts.any():
        raise DataError("no training document has a label; multi-label data needs labels on some documents")
    logger.info(
        "labels are lists: multi-label, %d labels, %.2f per document, %d documents without a label",
        len(label_names),
        counts.mean(),
        int((counts == 0).sum()),
    )


def _publish(building: Path, folder: Path) -> None:
    """Move a complete corpus folder into place; a folder another process completed first is kept.

    One process at a time (a lock on the folder of corpora): processes preparing the same corpus at
    once, such as parallel tune trials, would otherwise remove a folder another one had just
    published while it reads it.
    """
    with exclusive_lock(folder.parent):
        if (folder / _META).exists():
            return
        shutil.rmtree(folder, ignore_errors=True)  # an incomplete leftover (no meta.json)
        building.rename(folder)


def _read_corpus(folder: Path, *, in_memory: bool) -> _Corpus:
    """The corpus in ``folder``; its ids stay on disk, or with ``in_memory`` are read in whole."""
    meta = json.loads((folder / _META).read_text(encoding="utf-8"))
    return _Corpus(
        Vocabulary.load(folder / "vocab.json"),
        TokenStore.load(folder) if in_memory else TokenStore.open(folder),
        {name: np.load(folder / f"{name}.npy") for name in SPLITS},
        np.load(folder / _LABELS),
        meta["label_names"],
        meta["stats"],
    )


def _check_corpus(corpus: _Corpus) -> None:
    """A ``ValueError`` unless the cached files fit each other: the id file as long as its offsets
    say, one label (or a 0/1 row per label) per document, split positions among the documents.

    Sizes and ranges only, no pass over the ids, which may not fit in memory.
    """
    store, labels, classes = corpus.store, corpus.labels, len(corpus.label_names)
    documents = len(store)
    ids = store.ids if store.ids is not None else np.load(store.path, mmap_mode="r")
    if store.offsets[0] != 0 or store.offsets[-1] != len(ids) or np.any(np.diff(store.offsets) < 0):
        raise ValueError(f"{len(ids)} ids do not fit offsets ending at {store.offsets[-1]}")
    if len(labels) != documents:
        raise ValueError(f"{len(labels)} labels for {documents} documents")
    if labels.ndim == 2:  # multi-label
        fits = labels.shape[1] == classes and bool(np.isin(labels, (0, 1)).all())
    else:
        fits = documents == 0 or (labels.min() >= 0 and labels.max() < classes)
    if not fits:
        raise ValueError(f"labels do not fit the {classes} label names")
    for name, positions in corpus.documents.items():
        if len(positions) and (positions.min() < 0 or positions.max() >= documents):
            raise ValueError(f"the {name} split names documents the corpus does not have")
