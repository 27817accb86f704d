"""Texts to token ids at any corpus size: tokenised once, in parallel, streamed through disk.

The vocabulary comes from the training part, which is only known after tokenising (empty documents
leave it), so ids cannot be final while tokenising. Each text is tokenised exactly once into
*first-seen ids* (a token's position in the order tokens first appear in the corpus), written to a
temporary flat file; the vocabulary is then counted from those ids with ``np.bincount`` over the
training documents, and one pass maps them to final ids. No token string is kept per occurrence,
so memory holds one entry per distinct token, not per token.

Tokenising is the slow part (a regex per document). Chunks of documents go to worker processes
(``data.num_workers``), at most a few chunks in flight, so reading, tokenising and writing overlap
and memory stays bounded; results are taken in order, so the ids do not depend on the number of
workers. Worker processes are forked (Linux); elsewhere, or when the tokenizer cannot be sent to a
process, tokenising runs in this process.
"""

from __future__ import annotations

import collections
import itertools
import logging
import multiprocessing
import os
import pickle
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnkit.data.store import IDS, OFFSETS, TokenStore, offsets_of, write_npy_header

logger = logging.getLogger(__name__)

__all__ = ["FirstSeenIds", "encode_corpus", "tokenize_corpus", "worker_count"]

CHUNK_DOCUMENTS = 1000
"""Documents per task sent to a worker: large enough that sending it costs little."""

Tokenize = Callable[[str], list[str]]


@dataclass
class FirstSeenIds:
    """A tokenised corpus before the vocabulary exists (see the module docstring)."""

    store: TokenStore  # first-seen ids of every document, in order, in a raw int32 file
    blank: np.ndarray  # (documents,) the raw text was empty or whitespace
    tokens: list[str]  # first-seen id -> token

    def counts(self, documents: np.ndarray) -> np.ndarray:
        """How often each first-seen id occurs in ``documents`` (one pass over the file)."""
        return self.store.token_counts(documents, len(self.tokens))


def worker_count(setting: int) -> int:
    """``data.num_workers``: 0 means one process per CPU core this process may use; 1 means none."""
    if setting > 0:
        return setting
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def tokenize_corpus(texts: Iterable[str], tokenize: Tokenize, path: Path, workers: int) -> FirstSeenIds:
    """Tokenise ``texts`` (read once, in order) into first-seen ids written to ``path``."""
    index: dict[str, int] = {}
    lengths: list[np.ndarray] = []
    blank: list[np.ndarray] = []
    with open(path, "wb") as out:
        for chunk in _tokenized_chunks(texts, tokenize, workers):
            local_tokens, local_ids, chunk_lengths, chunk_blank = chunk
            # setdefault's default is the current size: a new token gets the next id.
            to_global = np.fromiter(
                (index.setdefault(token, len(index)) for token in local_tokens),
                dtype=np.int32,
                count=len(local_tokens),
            )
            to_global[local_ids].tofile(out)
            lengths.append(chunk_lengths)
            blank.append(chunk_blank)
    offsets = offsets_of(np.concatenate([*lengths, np.zeros(0, np.int64)]))
    return FirstSeenIds(
        TokenStore(offsets, path=path, data_start=0), np.concatenate([*blank, np.zeros(0, bool)]), list(index)
    )


def encode_corpus(first_seen: FirstSeenIds, to_final: np.ndarray, folder: Path, empty_id: int) -> TokenStore:
    """Write the final store into ``folder``: ids mapped through ``to_final`` (first-seen -> final
    id), every empty document as the single id ``empty_id``."""
    source = first_seen.store
    offsets = offsets_of(np.maximum(source.lengths, 1))
    with open(folder / IDS, "wb") as out:
        write_npy_header(out, np.dtype(np.int32), int(offsets[-1]))
        for first, last, ids in source.chunks():
            final = to_final[ids]
            empty = np.flatnonzero(source.lengths[first:last] == 0)
            if len(empty):  # one id where each empty document starts
                final = np.insert(final, source.offsets[first + empty] - source.offsets[first], empty_id)
            final.astype(np.int32, copy=False).tofile(out)
    np.save(folder / OFFSETS, offsets)
    return TokenStore.open(folder)


# ------------------------------------------------------------------------------------ the workers

_Chunk = tuple[list[str], np.ndarray, np.ndarray, np.ndarray]
_worker_tokenize: Tokenize | None = None


def _init_worker(tokenize: Tokenize) -> None:
    global _worker_tokenize
    _worker_tokenize = tokenize


def _tokenize_in_worker(texts: list[str]) -> _Chunk:
    assert _worker_tokenize is not None
    return _tokenize_chunk(texts, _worker_tokenize)


def _tokenize_chunk(texts: list[str], tokenize: Tokenize) -> _Chunk:
    """``(distinct tokens in first-seen order, their local ids, lengths, blank flags)`` of ``texts``."""
    documents = [tokenize(text) for text in texts]
    local: dict[str, int] = {}
    assign = local.setdefault  # the default is the current size: a new token gets the next id
    flat = itertools.chain.from_iterable(documents)
    count = sum(map(len, documents))
    ids = np.fromiter((assign(token, len(local)) for token in flat), dtype=np.int32, count=count)
    distinct = list(local)
    lengths = np.fromiter(map(len, documents), dtype=np.int64, count=len(documents))
    blank = np.fromiter((not text.strip() for text in texts), dtype=bool, count=len(texts))
    return distinct, ids, lengths, blank


def _tokenized_chunks(texts: Iterable[str], tokenize: Tokenize, workers: int) -> Iterator[_Chunk]:
    """Chunks of ``texts`` tokenised in order: the first here, the rest by ``workers`` processes."""
    chunks = _batched(texts, CHUNK_DOCUMENTS)
    first = next(chunks, None)
    if first is None:
        return
    yield _tokenize_chunk(first, tokenize)
    pool = _start_pool(tokenize, workers)
    if pool is None:
        for chunk in chunks:
            yield _tokenize_chunk(chunk, tokenize)
        return
    with pool:
        pending: collections.deque[Future[_Chunk]] = collections.deque()
        for chunk in chunks:
            pending.append(pool.submit(_tokenize_in_worker, chunk))
            if len(pending) >= 2 * workers:  # bounded: reading never runs far ahead of tokenising
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _start_pool(tokenize: Tokenize, workers: int) -> ProcessPoolExecutor | None:
    if workers < 2 or not sys.platform.startswith("linux"):
        return None
    try:
        pickle.dumps(tokenize)
    except Exception as error:  # a tokenizer holding a lock or a native handle: tokenise here
        logger.info("tokenising in this process: the tokenizer cannot be sent to workers (%s)", error)
        return None
    context = multiprocessing.get_context("fork")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(tokenize,))


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
