"""Tokenised documents as one flat int32 array plus offsets, in memory or in a folder on disk.

Document ``i`` is ``ids[offsets[i]:offsets[i + 1]]``. A corpus of a million documents is a few
hundred million ids: as one file it costs no Python object per document, and a process reads only
the documents it batches. On disk the ids are read with positioned reads (``os.preadv``) straight
into a small array, not through a memory map: the file's pages then live in the operating system's
page cache, shared by every process and dropped under memory pressure, instead of adding up in
the process's resident memory as a mapped file does once every page has been touched (one epoch).

Files of a store folder: ``ids.npy`` (int32), ``offsets.npy`` (int64, ``documents + 1``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["DocumentView", "TokenStore", "offsets_of", "write_npy_header"]

IDS, OFFSETS = "ids.npy", "offsets.npy"
_COUNT_CHUNK = 1 << 24  # ids per read when counting over a whole file (64 MB)


class TokenStore:
    """``len(offsets) - 1`` documents of int32 token ids; see the module docstring."""

    def __init__(
        self,
        offsets: np.ndarray,
        ids: np.ndarray | None = None,
        path: Path | None = None,
        data_start: int | None = None,
    ) -> None:
        """``path`` is an ``.npy`` file, or a raw int32 file whose ids start at byte ``data_start``."""
        if (ids is None) == (path is None):
            raise ValueError("a TokenStore holds its ids in memory (ids=...) or in a file (path=...)")
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.ids = ids
        self.path = path
        self._fd: int | None = None
        if path is not None:
            if data_start is None:
                data_start = int(np.load(path, mmap_mode="r").offset)
            # Opened now and kept: the ids stay readable if the cache is cleared while in use, and
            # a forked child shares the descriptor (positioned reads do not move a file offset).
            self._fd = os.open(path, os.O_RDONLY)
        self._data_start = data_start or 0

    @classmethod
    def from_sequences(cls, sequences: Sequence[np.ndarray]) -> TokenStore:
        """An in-memory store of ``sequences`` (any integer arrays)."""
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        offsets = offsets_of(lengths)
        ids = np.concatenate([*(np.asarray(s, dtype=np.int32) for s in sequences), np.zeros(0, np.int32)])
        return cls(offsets, ids=ids)

    @classmethod
    def open(cls, folder: Path) -> TokenStore:
        """The store written into ``folder`` (``ids.npy``, ``offsets.npy``); ids stay on disk."""
        return cls(np.load(folder / OFFSETS), path=folder / IDS)

    @classmethod
    def load(cls, folder: Path) -> TokenStore:
        """The store written into ``folder``, read into memory whole (the folder may then go)."""
        return cls(np.load(folder / OFFSETS), ids=np.load(folder / IDS))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def document(self, index: int, limit: int | None = None) -> np.ndarray:
        """Document ``index``'s ids (int32), at most the first ``limit``."""
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        if limit is not None:
            end = min(end, start + limit)
        if self.ids is not None:
            return self.ids[start:end]
        out = np.empty(end - start, dtype=np.int32)
        if len(out):
            read = os.preadv(self._fd, [out], self._data_start + 4 * start)
            if read != out.nbytes:
                raise OSError(f"{self.path} is shorter than its offsets say (truncated cache file?)")
        return out

    def token_counts(self, documents: np.ndarray, size: int) -> np.ndarray:
        """How often each id ``0..size-1`` occurs in ``documents`` (int64, ``size`` entries)."""
        member = np.zeros(len(self), dtype=bool)
        member[documents] = True
        counts = np.zeros(size, dtype=np.int64)
        for first, last, ids in self.chunks():
            inside = np.repeat(member[first:last], self.lengths[first:last])
            counts += np.bincount(ids[inside], minlength=size)[:size]
        return counts

    def chunks(self, max_ids: int = _COUNT_CHUNK) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(first, last, ids)``: whole documents ``first..last-1`` and their ids, in order."""
        first = 0
        while first < len(self):
            start = self.offsets[first]
            last = int(np.searchsorted(self.offsets, start + max_ids, side="right")) - 1
            last = min(max(last, first + 1), len(self))
            end = int(self.offsets[last])
            if self.ids is not None:
                ids = self.ids[start:end]
            else:
                ids = np.empty(end - start, dtype=np.int32)
                os.preadv(self._fd, [ids], self._data_start + 4 * int(start))
            yield first, last, ids
            first = last

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


class DocumentView(Sequence[np.ndarray]):
    """Some documents of a store, in a given order, truncated to ``limit``: a lazy list of arrays."""

    def __init__(self, store: TokenStore, documents: np.ndarray, limit: int | None = None) -> None:
        self.store, self.documents, self.limit = store, np.asarray(documents, dtype=np.int64), limit

    def __len__(self) -> int:
        return len(self.documents)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        return self.store.document(int(self.documents[index]), self.limit)

    def __iter__(self) -> Iterator[np.ndarray]:
        for document in self.documents:
            yield self.store.document(int(document), self.limit)

    def token_counts(self, size: int) -> np.ndarray:
        """Id counts over these documents, untruncated (a whole-store pass, not one read each)."""
        return self.store.token_counts(self.documents, size)


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    """Offsets (``documents + 1``, int64) of documents with these lengths."""
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


def write_npy_header(handle: BinaryIO, dtype: np.dtype, length: int) -> None:
    """Start a one-dimensional ``.npy`` file of ``length`` items; the caller writes the raw data."""
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": (length,),
    }
    np.lib.format.write_array_header_1_0(handle, header)
