"""Batches in, probabilities out: the one evaluation pass shared by training, evaluate and predict.

It sits below both training and the readers of a run, so predicting never imports the training
package.

Batches are collated here rather than by a ``DataLoader``: creating a DataLoader iterator draws
from torch's global random generator, which would make a resumed run draw different dropout masks
than an uninterrupted one. With the data already in memory as token ids, a loader adds nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rnnkit import distributed
from rnnkit.data import Batch, EncodedDataset, SortedBatchSampler, collate
from rnnkit.runtime import amp_dtype


@dataclass
class Predictions:
    """Per-example outputs of an evaluation, in dataset order."""

    labels: np.ndarray  # (n,) true class ids
    probs: np.ndarray  # (n, classes) softmax probabilities
    losses: np.ndarray  # (n,) unweighted cross-entropy per example

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)


def iterate_batches(
    dataset: EncodedDataset, batches: Iterable[list[int]], device: torch.device
) -> Iterator[Batch]:
    """Collate each list of indices into a padded :class:`Batch` on ``device``."""
    for indices in batches:
        yield collate([dataset[i] for i in indices]).to(device, non_blocking=True)


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """Mixed precision when ``enabled`` and ``device`` computes in lower precision natively.

    float16 on CUDA, bfloat16 on CPUs with AVX512-BF16/AMX (see :func:`rnnkit.runtime.amp_dtype`);
    a no-op context otherwise. Weights, optimiser state and the loss stay float32.
    """
    dtype = amp_dtype(device) if enabled else None
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


@torch.no_grad()
def predict_dataset(
    model: nn.Module, dataset: EncodedDataset, batch_size: int, device: torch.device, amp: bool = False
) -> Predictions:
    """Softmax probabilities and per-example losses for every document, in dataset order.

    Under DDP each rank scores its shard and :func:`distributed.gather_by_index` reassembles the
    whole set, so the metrics computed from the result are the same on every rank.
    """
    was_training = model.training
    model.eval()
    sampler = SortedBatchSampler(
        dataset.lengths, batch_size, num_replicas=distributed.get_world_size(), rank=distributed.get_rank()
    )
    parts: dict[str, list[torch.Tensor]] = {"index": [], "probs": [], "losses": [], "labels": []}
    for batch in iterate_batches(dataset, sampler, device):
        with autocast(device, amp):
            logits = model(batch.token_ids, batch.lengths)
        logits = logits.float()
        parts["index"].append(batch.indices)
        parts["probs"].append(logits.softmax(dim=1))
        parts["losses"].append(F.cross_entropy(logits, batch.labels, reduction="none"))
        parts["labels"].append(batch.labels)
    model.train(was_training)
    if not parts["index"]:
        return Predictions(np.zeros(0, np.int64), np.zeros((0, 0), np.float32), np.zeros(0, np.float32))
    columns = {name: torch.cat(values).cpu() for name, values in parts.items()}
    _, columns = distributed.gather_by_index(columns.pop("index"), columns)
    return Predictions(columns["labels"].numpy(), columns["probs"].numpy(), columns["losses"].numpy())
