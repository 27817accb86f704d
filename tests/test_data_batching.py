"""Length-bucketed batching: every example once per epoch, little padding, fair DDP shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit.data import BucketBatchSampler, EncodedDataset, SortedBatchSampler, collate

LENGTHS = np.random.default_rng(0).integers(1, 200, size=503)


def _epoch(sampler) -> list[list[int]]:
    return list(sampler)


def test_every_example_appears_exactly_once_per_epoch() -> None:
    sampler = BucketBatchSampler(LENGTHS, 16, seed=0)
    batches = _epoch(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    assert len(batches) == len(sampler) and max(map(len, batches)) <= 16


def test_batches_hold_similar_lengths() -> None:
    batches = _epoch(BucketBatchSampler(LENGTHS, 16, seed=0))
    padding = sum(LENGTHS[b].max() * len(b) - LENGTHS[b].sum() for b in batches)
    assert padding / LENGTHS.sum() < 0.1  # unsorted batches waste about half


def test_set_epoch_reshuffles_deterministically() -> None:
    a, b = BucketBatchSampler(LENGTHS, 16, seed=5), BucketBatchSampler(LENGTHS, 16, seed=5)
    a.set_epoch(1)
    b.set_epoch(1)
    assert _epoch(a) == _epoch(b)
    b.set_epoch(2)
    assert _epoch(a) != _epoch(b)


@pytest.mark.parametrize("replicas", [2, 3, 4])
@pytest.mark.parametrize("sampler_type", [BucketBatchSampler, SortedBatchSampler])
def test_ddp_shards_cover_everything_once_with_equal_batch_counts(replicas: int, sampler_type) -> None:
    shards = [sampler_type(LENGTHS, 8, num_replicas=replicas, rank=r) for r in range(replicas)]
    epochs = [_epoch(s) for s in shards]
    assert len({len(e) for e in epochs}) == 1 and all(
        len(e) == len(s) for e, s in zip(epochs, shards, strict=True)
    )
    assert sorted(i for e in epochs for b in e for i in b) == list(range(len(LENGTHS)))
    assert all(1 <= len(b) <= 8 for e in epochs for b in e)


def test_sorted_sampler_is_deterministic_and_gives_the_longest_documents_first() -> None:
    order = [i for b in SortedBatchSampler(LENGTHS, 32) for i in b]
    assert order == np.argsort(-np.asarray(LENGTHS), kind="stable").tolist()
    assert [LENGTHS[i] for i in order] == sorted(LENGTHS, reverse=True)


def test_an_empty_dataset_gives_no_batches() -> None:
    assert list(SortedBatchSampler([], 4)) == [] and len(BucketBatchSampler([], 4)) == 0


def test_dataset_truncates_and_refuses_empty_sequences() -> None:
    data = EncodedDataset([np.arange(2, 12), np.array([5])], [1, 0], max_length=4)
    assert data.lengths.tolist() == [4, 1] and data[0][0].tolist() == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="at least one token"):
        EncodedDataset([np.array([], dtype=np.int64)], [0], max_length=4)


def test_collate_pads_with_zero_and_keeps_lengths_labels_and_indices() -> None:
    data = EncodedDataset([np.array([4, 5, 6]), np.array([7])], [1, 0], max_length=10)
    batch = collate([data[1], data[0]])
    assert batch.token_ids.tolist() == [[7, 0, 0], [4, 5, 6]]
    assert (
        batch.lengths.tolist() == [1, 3]
        and batch.labels.tolist() == [0, 1]
        and batch.indices.tolist() == [1, 0]
    )
    assert batch.token_ids.dtype == torch.long and len(batch.to("cpu")) == 2
