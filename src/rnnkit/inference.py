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
from torch import nn

from rnnkit import distributed
from rnnkit.data import Batch, EncodedDataset, SortedBatchSampler, collate
from rnnkit.runtime import amp_dtype
from rnnkit.tasks import decide, example_losses, probabilities, task_of


@dataclass
class Predictions:
    """Per-example outputs of an evaluation, in dataset order (see :mod:`rnnkit.tasks`)."""

    labels: np.ndarray  # (n,) true class ids, or (n, labels) 0/1 for multi-label data
    probs: np.ndarray  # (n, classes) softmax probabilities, or per-label sigmoid probabilities
    losses: np.ndarray  # (n,) unweighted cross-entropy (multi-label: mean binary cross-entropy)
    thresholds: np.ndarray | None = None  # multi-label: per-label cuts (None: 0.5)

    @property
    def task(self) -> str:
        return task_of(self.labels)

    @property
    def predicted(self) -> np.ndarray:
        """Class ids ``(n,)``, or the 0/1 label matrix at :attr:`thresholds`."""
        return decide(self.probs, self.task, self.thresholds)


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
    """Probabilities and per-example losses for every document, in dataset order; the task
    (softmax or sigmoid) follows the dataset's labels.

    Under DDP each rank scores its shard and :func:`distributed.gather_by_index` reassembles the
    whole set, so the metrics computed from the result are the same on every rank.
    """
    was_training = model.training
    model.eval()
    sampler = SortedBatchSampler(
        dataset.lengths, batch_size, num_replicas=distributed.get_world_size(), rank=distributed.get_rank()
    )
    task = task_of(dataset.labels)
    parts: dict[str, list[torch.Tensor]] = {"index": [], "probs": [], "losses": [], "labels": []}
    for batch in iterate_batches(dataset, sampler, device):
        with autocast(device, amp):
            logits = model(batch.token_ids, batch.lengths)
        logits = logits.float()
        parts["index"].append(batch.indices)
        parts["probs"].append(probabilities(logits, task))
        parts["losses"].append(example_losses(logits, batch.labels, task))
        parts["labels"].append(batch.labels)
    model.train(was_training)
    if not parts["index"]:
        width = dataset.labels.shape[1] if dataset.labels.ndim == 2 else 0
        return Predictions(dataset.labels[:0], np.zeros((0, width), np.float32), np.zeros(0, np.float32))
    columns = {name: torch.cat(values).cpu() for name, values in parts.items()}
    _, columns = distributed.gather_by_index(columns.pop("index"), columns)
    return Predictions(columns["labels"].numpy(), columns["probs"].numpy(), columns["losses"].numpy())
