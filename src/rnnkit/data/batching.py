"""Encoded datasets, length-bucketed batch samplers (DDP-aware) and padding collation.

Sharding rule (both samplers): every epoch the indices are cut into *global* batches of up to
``batch_size * num_replicas`` documents of similar length, each holding at least ``num_replicas``
documents; rank ``r`` takes ``global_batch[r::num_replicas]``. So every rank gets the same number of
batches, and across ranks every document is used exactly once per epoch: uneven counts are never
padded with duplicates; instead the per-rank batches of one step differ in size by at most one.
(With ``batch_size=1`` and several replicas a rank's batch can then hold two documents.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from rnnkit.data.store import DocumentView, TokenStore
from rnnkit.data.text import PAD_ID

__all__ = ["Batch", "BucketBatchSampler", "EncodedDataset", "SortedBatchSampler", "collate"]


class EncodedDataset(Dataset):
    """Token-id sequences (truncated to ``max_length``) with their labels and lengths.

    Labels are class ids ``(n,)`` or, for multi-label data, a 0/1 matrix ``(n, labels)``.
    Item ``i`` is ``(token_ids, label, i)``; the index lets callers restore the input order after
    length-sorted batching. The ids live in a :class:`~rnnkit.data.store.TokenStore`: in memory
    for the sequences given here, or in the corpus cache's file (:meth:`from_store`), read one
    document at a time as batches are formed.
    """

    def __init__(
        self, sequences: Sequence[np.ndarray], labels: Sequence[int] | np.ndarray, max_length: int
    ) -> None:
        if len(sequences) != len(labels):
            raise ValueError(f"{len(sequences)} sequences but {len(labels)} labels")
        store = TokenStore.from_sequences(sequences)
        self._attach(store, np.arange(len(store)), labels, max_length)

    @classmethod
    def from_store(
        cls, store: TokenStore, documents: np.ndarray, labels: Sequence[int] | np.ndarray, max_length: int
    ) -> EncodedDataset:
        """Documents ``documents`` of ``store`` (positions, in this order) with their labels."""
        dataset = cls.__new__(cls)
        dataset._attach(store, documents, labels, max_length)
        return dataset

    def _attach(
        self, store: TokenStore, documents: np.ndarray, labels: Sequence[int] | np.ndarray, max_length: int
    ) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        if len(documents) != len(labels):
            raise ValueError(f"{len(documents)} documents but {len(labels)} labels")
        self.store = store
        self.documents = np.asarray(documents, dtype=np.int64)
        self.lengths = np.minimum(store.lengths[self.documents], max_length)
        if (self.lengths == 0).any():
            raise ValueError("every sequence needs at least one token (encode empty texts as <unk>)")
        labels = np.asarray(labels)
        self.labels = labels.astype(np.float32) if labels.ndim == 2 else labels.astype(np.int64).reshape(-1)
        self.max_length = max_length

    @property
    def sequences(self) -> DocumentView:
        """The truncated id arrays, read on access (a lazy list; the corpus may not fit in memory)."""
        return DocumentView(self.store, self.documents, self.max_length)

    def subset(self, indices: Sequence[int] | np.ndarray) -> EncodedDataset:
        """Items ``indices`` of this dataset, in that order."""
        picked = np.asarray(indices, dtype=np.int64)
        return EncodedDataset.from_store(
            self.store, self.documents[picked], self.labels[picked], self.max_length
        )

    def __len__(self) -> int:
        return len(self.documents)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int | np.ndarray, int]:
        ids = self.store.document(int(self.documents[index]), self.max_length)
        label = self.labels[index]
        return ids, (label if label.ndim else int(label)), index


@dataclass
class Batch:
    """A padded batch: ``token_ids`` (B, T) padded with 0, ``lengths`` (B,), ``labels`` (B,) class ids
    or (B, labels) floats 0/1 (multi-label).

    ``indices`` (B,) are the dataset positions of the rows.
    """

    token_ids: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """All tensors on ``device`` (``pack_padded_sequence`` wants ``lengths.cpu()`` anyway)."""
        return Batch(
            *(
                t.to(device, non_blocking=non_blocking)
                for t in (self.token_ids, self.lengths, self.labels, self.indices)
            )
        )

    def __len__(self) -> int:
        return int(self.lengths.shape[0])


def collate(items: Sequence[tuple[np.ndarray, int | np.ndarray, int]]) -> Batch:
    """Right-pad the sequences of ``items`` with ``<pad>`` (0) to the longest one."""
    lengths = np.fromiter((len(ids) for ids, _, _ in items), dtype=np.int64, count=len(items))
    padded = np.full((len(items), int(lengths.max(initial=0))), PAD_ID, dtype=np.int64)
    for row, (ids, _, _) in enumerate(items):
        padded[row, : len(ids)] = ids
    return Batch(
        token_ids=torch.from_numpy(padded),
        lengths=torch.from_numpy(lengths),
        labels=_stack_labels([label for _, label, _ in items]),
        indices=torch.tensor([index for _, _, index in items], dtype=torch.long),
    )


def _stack_labels(labels: list[int | np.ndarray]) -> torch.Tensor:
    if labels and isinstance(labels[0], np.ndarray):
        return torch.from_numpy(np.stack(labels).astype(np.float32))
    return torch.tensor(labels, dtype=torch.long)


def _global_batch_count(size: int, batch_size: int, num_replicas: int) -> int:
    """Enough global batches to stay within ``batch_size`` per rank, each with a document per rank."""
    if size == 0:
        return 0
    return max(1, min(-(-size // (batch_size * num_replicas)), size // num_replicas))


class _ShardedBatchSampler(Sampler[list[int]]):
    """Shared sharding logic: subclasses say how one epoch's global batches are formed."""

    def __init__(
        self, lengths: Sequence[int] | np.ndarray, batch_size: int, num_replicas: int, rank: int
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if 0 < len(self.lengths) < num_replicas:
            raise ValueError(f"{len(self.lengths)} documents cannot be shared among {num_replicas} replicas")
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank

    def _global_batches(self) -> list[np.ndarray]:
        raise NotImplementedError

    def _split(self, ordered: np.ndarray) -> list[np.ndarray]:
        """Cut length-ordered indices into balanced global batches."""
        count = _global_batch_count(len(ordered), self.batch_size, self.num_replicas)
        return np.array_split(ordered, count) if count else []

    def __iter__(self) -> Iterator[list[int]]:
        for global_batch in self._global_batches():
            yield global_batch[self.rank :: self.num_replicas].tolist()


class BucketBatchSampler(_ShardedBatchSampler):
    """Shuffled batches of similar length, reproducible from ``seed`` and the epoch.

    Each epoch shuffles all documents, cuts them into pools of about ``pool_batches`` global
    batches, sorts every pool by length and cuts it into global batches, then shuffles the batch
    order. Call :meth:`set_epoch` before each epoch (as with ``DistributedSampler``).
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        pool_batches: int = 50,
    ) -> None:
        super().__init__(lengths, batch_size, num_replicas, rank)
        self.seed = seed
        self.epoch = 0
        n, pool = len(self.lengths), batch_size * num_replicas * pool_batches
        # Pool sizes depend only on n, so the batch count is the same every epoch.
        self._pool_sizes = [len(p) for p in np.array_split(np.arange(n), max(1, -(-n // pool)))]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        batches: list[np.ndarray] = []
        start = 0
        for size in self._pool_sizes:
            pool = order[start : start + size]
            start += size
            batches.extend(self._split(pool[np.argsort(self.lengths[pool], kind="stable")]))
        return [batches[i] for i in rng.permutation(len(batches))]

    def __len__(self) -> int:
        return sum(_global_batch_count(size, self.batch_size, self.num_replicas) for size in self._pool_sizes)


class SortedBatchSampler(_ShardedBatchSampler):
    """Deterministic batches, longest documents first, for evaluation and prediction.

    Longest first so that every later batch fits in memory an earlier one freed. In increasing
    order each batch needed a little more than any before it while the small per-batch results
    stayed allocated between them, so the heap grew with the number of batches: scoring the
    200,000-document test split of the 1 M-document scale check peaked at 5.3 GB resident,
    against 0.9 GB during the training epoch.
    """

    def __init__(
        self, lengths: Sequence[int] | np.ndarray, batch_size: int, *, num_replicas: int = 1, rank: int = 0
    ) -> None:
        super().__init__(lengths, batch_size, num_replicas, rank)

    def _global_batches(self) -> list[np.ndarray]:
        return self._split(np.argsort(-self.lengths, kind="stable"))

    def __len__(self) -> int:
        return _global_batch_count(len(self.lengths), self.batch_size, self.num_replicas)
