"""Open a trained run for what comes after training: explain, export and serve.

Temporary home: the restructuring of issue 12 adds ``rnnkit.runs.open_run`` with the same
attributes; this module then gives way to it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rnnkit.config import Config
from rnnkit.data import EncodedDataset, Tokenizer, Vocabulary, prepare_data
from rnnkit.errors import CheckpointError
from rnnkit.models import RecurrentClassifier
from rnnkit.predict import Predictor, load
from rnnkit.training.rundir import RunDir


@dataclass
class TrainedRun:
    """A run's best model (eval mode, on ``device``) with everything that reads text for it."""

    path: Path
    config: Config
    vocab: Vocabulary
    tokenizer: Tokenizer
    label_names: list[str]
    model: nn.Module
    max_length: int
    device: torch.device

    def predictor(self, batch_size: int | None = None) -> Predictor:
        return Predictor(
            self.model,
            self.vocab,
            self.label_names,
            max_length=self.max_length,
            tokenizer=self.tokenizer,
            device=self.device,
            batch_size=batch_size or self.config.train.eval_batch_size,
        )


def open_run(run_dir: str | os.PathLike[str], device: str = "cpu") -> TrainedRun:
    """The run in ``run_dir``; a missing or damaged run is one :class:`RnnkitError` line."""
    predictor = load(run_dir, device)
    return TrainedRun(
        path=Path(run_dir),
        config=RunDir(run_dir).load_config(),
        vocab=predictor.vocab,
        tokenizer=predictor.tokenizer,
        label_names=predictor.label_names,
        model=predictor.model,
        max_length=predictor.max_length,
        device=predictor.device,
    )


def module_path(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that runs the torch modules only (``kernel="native"``).

    With ``kernel: auto`` a GRU or SimpleRNN runs rnnkit's compiled loop whenever gradients are
    on, as in Captum's backward passes and in tracing for export; those are training details,
    and the torch modules are the reference (and the only path the exporters understand).
    Models that are not rnnkit classifiers are returned as they are.
    """
    if not isinstance(model, RecurrentClassifier) or model.hparams["kernel"] == "native":
        return model
    twin = type(model)(**{**model.hparams, "kernel": "native"})
    twin.load_state_dict(model.state_dict())
    return twin.to(next(model.parameters()).device).eval()


def load_split(run: TrainedRun, split: str) -> EncodedDataset:
    """The ``train``, ``validation`` or ``test`` part of the run's own data, as it was trained on."""
    data = prepare_data(run.config)
    if data.vocab != run.vocab:
        raise CheckpointError(
            f"the data of {run.path} no longer gives the vocabulary the run was trained with: the data "
            "files changed since; use the original data"
        )
    return {"train": data.train, "validation": data.validation, "test": data.test}[split]
