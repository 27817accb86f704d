"""A trained run, opened: the one path from a run folder to a model that reads text as in training.

Predict, evaluate, and everything else that starts from a finished run (explain, export, serve)
calls :func:`open_run` and gets the config, the vocabulary with its tokenizer, the label names and
the best model, rebuilt through the model registry and in eval mode (with ``quantize``, its int8
copy: :mod:`rnnkit.models.quantize`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from rnnkit.baseline import LinearBaseline
from rnnkit.config import Config
from rnnkit.data import EncodedDataset, TextTokenizer, Vocabulary
from rnnkit.errors import CheckpointError, ConfigError
from rnnkit.models import build_model
from rnnkit.models.quantize import quantize_dynamic_int8
from rnnkit.runs.ensemble import ENSEMBLE_NAME, is_ensemble
from rnnkit.runs.folder import RunDir
from rnnkit.runtime import resolve_device
from rnnkit.tasks import MULTILABEL, SINGLE

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from rnnkit.predict import BaselinePredictor, Predictor


@dataclass
class TrainedRun:
    """Everything a run folder holds for using its best model, loaded once."""

    path: Path
    config: Config
    vocab: Vocabulary
    tokenizer: TextTokenizer
    """The tokenizer saved with the vocabulary: new text is split exactly as in training."""
    label_names: list[str]
    model: nn.Module
    """The best weights, in eval mode on ``device``."""
    max_length: int
    """Tokens kept per document, as in training."""
    device: torch.device
    record: dict[str, Any] = field(default_factory=dict)
    """The history row of the best epoch (``epoch``, validation metrics...)."""
    task: str = SINGLE
    """``single`` or ``multilabel`` (:mod:`rnnkit.tasks`): softmax and one class, or sigmoids and a set."""
    thresholds: np.ndarray | None = None
    """Multi-label: each label's decision threshold, tuned on validation (``None``: 0.5 each)."""
    quantized: bool = False
    """The model's recurrent and linear layers run with int8 weights (CPU; no mixed precision)."""

    def predictor(self, batch_size: int | None = None, amp: bool = False) -> Predictor:
        """A :class:`~rnnkit.predict.Predictor` over this run (batch size: ``train.eval_batch_size``);
        ``amp`` runs its matrix products in bfloat16 on CPUs that have it (float16 on CUDA)."""
        from rnnkit.predict import Predictor

        return Predictor(
            self.model,
            self.vocab,
            self.label_names,
            max_length=self.max_length,
            tokenizer=self.tokenizer,
            device=self.device,
            batch_size=batch_size or self.config.train.eval_batch_size,
            task=self.task,
            thresholds=self.thresholds,
            amp=amp,
        )

    def baseline_predictor(self, temperature: float) -> BaselinePredictor:
        """The run's TF-IDF baseline as probabilities (scores times ``temperature``, then softmax)."""
        from rnnkit.predict import BaselinePredictor

        file = RunDir(self.path).baseline_file
        if not file.is_file():
            raise CheckpointError(
                f"{self.path} has no TF-IDF baseline ({file.name}); it was trained without one"
            )
        return BaselinePredictor(
            LinearBaseline.load(file), self.vocab, self.label_names, temperature, self.tokenizer
        )

    def load_split(self, split: str) -> EncodedDataset:
        """The ``train``, ``validation`` or ``test`` part of the run's own data, as it was trained on."""
        data = RunDir(self.path).prepare_data(self.config)
        return {"train": data.train, "validation": data.validation, "test": data.test}[split]


def open_run(
    run_dir: str | os.PathLike[str], device: str | torch.device = "cpu", *, quantize: bool = False
) -> TrainedRun:
    """The best model of a finished (or running) run, on ``device`` (``cpu``, ``cuda``, ``auto``...).

    ``quantize`` gives the model dynamic int8 weights (:func:`quantize_dynamic_int8`): CPU only.

    A folder that is not a run, a run without a finished epoch, or a run whose config, vocabulary,
    labels or checkpoint do not belong together (see :mod:`rnnkit.runs.manifest`) is a one-line
    :class:`~rnnkit.errors.CheckpointError`.
    """
    if is_ensemble(run_dir):
        raise CheckpointError(
            f"{run_dir} is an ensemble of runs ({ENSEMBLE_NAME}): predict and evaluate use it; "
            "explain, export and serve need one run, e.g. one of its members"
        )
    run = RunDir(run_dir)
    run.require()
    run.verify_files()
    cfg = run.load_config()
    target = device if isinstance(device, torch.device) else resolve_device(device)
    if quantize and target.type != "cpu":
        raise ConfigError(f"int8 quantisation runs on the CPU, not {target}; use the CPU or drop --quantize")
    best = run.checkpoints.load_best()
    sizes = best.meta["model"]
    vocab, label_names = run.load_vocab(), run.load_labels()
    # Runs written before run.json existed get these checks only; they catch what breaks loading.
    if len(label_names) != sizes["num_classes"]:
        raise CheckpointError(
            f"{run.labels_file} names {len(label_names)} classes but the model in "
            f"{run.checkpoints.path('best')} has {sizes['num_classes']} outputs"
        )
    if len(vocab) != sizes["vocab_size"]:
        raise CheckpointError(
            f"{run.vocab_file} holds {len(vocab)} tokens but the model in "
            f"{run.checkpoints.path('best')} has {sizes['vocab_size']} embedding rows"
        )
    model = build_model(
        cfg.model,
        vocab_size=sizes["vocab_size"],
        num_classes=sizes["num_classes"],
        embedding_dim=sizes["embedding_dim"],
        freeze_embeddings=cfg.embeddings.freeze,
    )
    try:
        model.load_state_dict(best.section("model"))
    except RuntimeError as error:  # missing/unexpected keys, size mismatches
        first = str(error).split("\n\t", 2)[1] if "\n\t" in str(error) else str(error)
        raise CheckpointError(
            f"{run.config_file} does not describe the weights in {run.checkpoints.path('best')} "
            f"({' '.join(first.split())[:200]}); restore the run's own config.yaml"
        ) from None
    prepare_kernels = getattr(model, "prepare_kernels", None)
    if target.type == "cpu" and not quantize and callable(prepare_kernels):
        prepare_kernels()  # the one-off build of the CPU loops now, not inside the first prediction
    task = sizes.get("task", SINGLE)  # runs written before multi-label support are single-label
    thresholds = run.load_thresholds(label_names) if task == MULTILABEL else None
    if task == MULTILABEL and thresholds is None:
        logger.warning("%s has no tuned thresholds (training did not finish): using 0.5 per label", run.path)
    return TrainedRun(
        path=run.path,
        config=cfg,
        vocab=vocab,
        tokenizer=vocab.tokenizer,
        label_names=label_names,
        model=quantize_dynamic_int8(model) if quantize else model.to(target).eval(),
        max_length=cfg.data.max_length,
        device=target,
        record=best.meta["record"],
        task=task,
        thresholds=thresholds,
        quantized=quantize,
    )
