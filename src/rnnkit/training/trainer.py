"""The training loop: read it top to bottom in :meth:`Trainer.fit`.

One epoch = the length-bucketed batches of :class:`BucketBatchSampler` for that epoch (a pure
function of seed and epoch), one optimizer step per batch, then validation, the learning-rate
schedule, the weight average (``train.swa_epochs``), the callbacks and a checkpoint. Every
``train.checkpoint_every`` steps a checkpoint is also written mid-epoch. A checkpoint holds
everything the next step depends on (weights, optimizer, schedule, weight average, callbacks, RNG
states, position in the epoch), so a resumed run on CPU ends with bit-identical results. On CUDA,
cuDNN picks kernels whose float sums vary between runs unless ``train.deterministic`` is set,
which selects deterministic algorithms at some cost in speed (see :mod:`rnnkit.runtime`).

The loop is written for data parallelism: the loss is normalised by the global batch
(:func:`distributed.global_mean`), validation outputs are gathered from all ranks, early stopping
is broadcast from rank 0, and only the main process writes files. In a single process these
helpers do nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel

from rnnkit import distributed
from rnnkit.config import TrainConfig
from rnnkit.data import Batch, BucketBatchSampler, EncodedDataset
from rnnkit.errors import CheckpointError, ConfigError, RnnkitError
from rnnkit.inference import Predictions, autocast, iterate_batches, predict_dataset
from rnnkit.runs.checkpoint import (
    Checkpoint,
    CheckpointStore,
    capture_rng,
    model_checkpoint,
    optimizer_from_checkpoint,
    optimizer_to_checkpoint,
    restore_rng,
)
from rnnkit.runtime import amp_dtype
from rnnkit.tasks import MULTILABEL, exact_matches, example_losses, positive_weights, resolve_monitor, task_of
from rnnkit.training.adversarial import EmbeddingAdversary, check_adversarial
from rnnkit.training.callbacks import Callback, is_improvement
from rnnkit.training.embedding_rows import RowAdam, clip_grad_norm, use_row_gradients
from rnnkit.training.metrics import summarize

logger = logging.getLogger(__name__)


@dataclass
class RunningStats:
    """Sums over the batches seen so far in the current epoch (saved in mid-epoch checkpoints)."""

    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0
    seconds: float = 0.0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.count, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.count, 1)


class Trainer:
    """Fits ``model`` on ``train`` and tracks ``validation``; state goes to ``store``.

    ``model_info`` is saved with the best weights so the model can be rebuilt from the file alone.
    Any ``nn.Module`` taking ``(token_ids, lengths)`` and returning logits can be trained; if it has
    a ``prepare_for_training()`` method, that is called once, after the model is on its device.
    The task (single- or multi-label, :mod:`rnnkit.tasks`) follows ``train``'s labels, and
    ``train.monitor: auto`` becomes that task's default.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        model: nn.Module,
        train: EncodedDataset,
        validation: EncodedDataset,
        num_classes: int,
        device: torch.device,
        store: CheckpointStore,
        callbacks: Sequence[Callback] = (),
        model_info: dict[str, Any] | None = None,
        teacher: torch.Tensor | None = None,
    ) -> None:
        """``teacher``: class probabilities ``(len(train), classes)`` that ``cfg.distill`` of each
        document's loss fits instead of its label (see :func:`rnnkit.baseline.out_of_fold_probabilities`)."""
        if (teacher is None) != (cfg.distill == 0):
            raise ValueError("train.distill > 0 and teacher probabilities go together")
        self.task = task_of(train.labels)
        self.cfg = cfg = dataclasses.replace(cfg, monitor=resolve_monitor(cfg.monitor, self.task))
        self.device = device
        self.raw_model = model.to(device)
        prepare = getattr(self.raw_model, "prepare_for_training", None)
        if callable(prepare):  # an optional model hook (see RecurrentClassifier.prepare_for_training)
            prepare()
        self.model = distributed.wrap_model(self.raw_model, device)
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.train_set, self.validation_set = train, validation
        self.num_classes = num_classes
        self.store = store
        self.callbacks = list(callbacks)
        keys = [cb.state_key for cb in self.callbacks if type(cb).state_dict is not Callback.state_dict]
        if len(set(keys)) < len(keys):  # two stateful callbacks would overwrite each other's state
            duplicate = next(key for key in keys if keys.count(key) > 1)
            raise ValueError(f"two callbacks have the state_key {duplicate!r}; give one its own state_key")
        self.model_info = model_info or {}
        self.amp = cfg.amp and amp_dtype(device) is not None
        self.optimizer = build_optimizer(cfg, self.raw_model)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        # Stochastic weight averaging: the mean of the weights at the end of the last swa_epochs epochs.
        self.averaged = AveragedModel(self.raw_model, use_buffers=True) if cfg.swa_epochs else None
        # float16 needs loss scaling against underflow; bfloat16 has float32's range and does not.
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp and device.type == "cuda")
        # Class weights: per document for one class each, per label's positives (pos_weight) for sets.
        self.class_weights, self.pos_weight = None, None
        if self.task == MULTILABEL and cfg.class_weights == "balanced":
            self.pos_weight = positive_weights(train.labels, device)
        elif self.task != MULTILABEL:
            self.class_weights = class_weights(cfg.class_weights, train.labels, num_classes, device)
        self.teacher = None if teacher is None else teacher.to(device)
        check_adversarial(cfg, self.raw_model)
        self.adversary = (
            EmbeddingAdversary(self.raw_model, cfg.adversarial_epsilon) if cfg.adversarial_epsilon else None
        )
        self.sampler = BucketBatchSampler(
            train.lengths,
            cfg.batch_size,
            seed=cfg.seed,
            num_replicas=distributed.get_world_size(),
            rank=distributed.get_rank(),
        )
        self.batches_per_epoch = len(self.sampler)
        # Position and progress: everything below is saved in every checkpoint.
        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0  # batches of the current epoch completed
        self.global_step = 0
        self.should_stop = False
        self.running = RunningStats()
        self.history: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- the loop
    def fit(self) -> None:
        for callback in self.callbacks:
            callback.on_fit_start(self)
        while self.epoch < self.cfg.epochs and not self.should_stop:
            self.train_epoch()
            self.end_epoch()
        self.offer_average()
        for callback in self.callbacks:
            callback.on_fit_end(self)

    def train_epoch(self) -> None:
        """The remaining batches of the current epoch (all of them unless resuming mid-epoch)."""
        self.model.train()
        self.sampler.set_epoch(self.epoch)
        batches = list(self.sampler)[self.batch_in_epoch :]
        for callback in self.callbacks:
            callback.on_epoch_start(self)
        for batch in iterate_batches(self.train_set, batches, self.device):
            started = time.perf_counter()
            self.train_step(batch)
            self.running.seconds += time.perf_counter() - started
            self.batch_in_epoch += 1
            self.global_step += 1
            for callback in self.callbacks:
                callback.on_step_end(self)
            if self.cfg.checkpoint_every and self.global_step % self.cfg.checkpoint_every == 0:
                self.save_state()

    def train_step(self, batch: Batch) -> None:
        """Forward, loss, backward, clip, step; a non-finite loss stops before any update.

        With ``train.adversarial_epsilon`` a second forward and backward pass at adversarially moved
        embeddings adds its gradient before the step (:mod:`.adversarial`).
        """
        watching = self.adversary.watch() if self.adversary else contextlib.nullcontext()
        with watching, autocast(self.device, self.amp):
            logits = self.model(batch.token_ids, batch.lengths)
        loss, losses = self.loss(logits, batch)
        loss_sum, correct = torch.stack(
            [losses.detach().sum(), exact_matches(logits.detach(), batch.labels, self.task)]
        ).tolist()
        if not math.isfinite(loss_sum):
            raise RnnkitError(
                f"the training loss became {loss_sum} at step {self.global_step + 1} "
                f"(epoch {self.epoch + 1}, batch {self.batch_in_epoch + 1}); "
                f"the last good checkpoint is kept in {self.store.folder}; "
                "lower train.lr, keep train.grad_clip > 0, and start a new run"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.adversary is not None:
            with self.adversary.perturbed(), autocast(self.device, self.amp):
                adversarial_logits = self.model(batch.token_ids, batch.lengths)
            self.scaler.scale(self.loss(adversarial_logits, batch)[0]).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            clip_grad_norm(self.raw_model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.running.loss_sum += loss_sum
        self.running.correct += int(correct)
        self.running.count += len(batch)

    def loss(self, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's loss (weighted mean over the global batch) and each document's unweighted one."""
        losses = example_losses(
            logits.float(), batch.labels, self.task, self.pos_weight, label_smoothing=self.cfg.label_smoothing
        )
        if self.teacher is not None:  # knowledge distillation: part of the target is the teacher's
            taught = F.cross_entropy(logits.float(), self.teacher[batch.indices], reduction="none")
            losses = (1 - self.cfg.distill) * losses + self.cfg.distill * taught
        weights = (
            self.class_weights[batch.labels] if self.class_weights is not None else torch.ones_like(losses)
        )
        return distributed.global_mean((losses * weights).sum(), weights.sum()), losses

    def end_epoch(self) -> None:
        """Validate, record, step the schedule, run callbacks, then checkpoint the new position."""
        started = time.perf_counter()
        val = self.validation_scores(self.model)
        stats = distributed.all_reduce_sum(
            torch.tensor(
                [self.running.loss_sum, self.running.correct, self.running.count], dtype=torch.float64
            )
        ).tolist()
        record = {
            "epoch": self.epoch + 1,
            "train_loss": stats[0] / max(stats[2], 1),
            "train_accuracy": stats[1] / max(stats[2], 1),
            **val,
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_time_s": round(self.running.seconds + time.perf_counter() - started, 3),
        }
        self.history.append(record)
        micro = f" micro-F1 {record['val_micro_f1']:.4f}" if "val_micro_f1" in record else ""
        logger.info(
            "epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f macro-F1 %.4f%s"
            " | lr %.2e | %.1fs",
            record["epoch"],
            self.cfg.epochs,
            *(
                record[k]
                for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1")
            ),
            micro,
            record["lr"],
            record["epoch_time_s"],
        )
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(record[self.cfg.monitor])
        elif self.scheduler is not None:
            self.scheduler.step()
        if self.averaged is not None and self.epoch >= self.cfg.epochs - self.cfg.swa_epochs:
            self.averaged.update_parameters(self.raw_model)
        for callback in self.callbacks:
            callback.on_epoch_end(self, record)
        self.should_stop = distributed.broadcast_flag(self.should_stop)
        self.epoch += 1
        self.batch_in_epoch = 0
        self.running = RunningStats()
        self.save_state()

    def offer_average(self) -> None:
        """Score the averaged weights on validation. Like an epoch's weights, they become the best
        checkpoint only if they beat every epoch on ``train.monitor``; else the best epoch stays."""
        if self.averaged is None:
            return
        epochs = int(self.averaged.n_averaged)
        if not epochs:
            logger.info(
                "no weights averaged: training stopped at epoch %d, before the last %d (train.swa_epochs)",
                self.epoch,
                self.cfg.swa_epochs,
            )
            return
        record = {
            "epoch": self.epoch,
            "averaged_epochs": epochs,
            **self.validation_scores(self.averaged.module),
        }
        monitor = self.cfg.monitor
        best = None
        for row in self.history:
            if is_improvement(monitor, row[monitor], best):
                best = row[monitor]
        kept = is_improvement(monitor, record[monitor], best)
        logger.info(
            "weights averaged over the last %d epochs: val loss %.4f acc %.4f macro-F1 %.4f; %s",
            epochs,
            record["val_loss"],
            record["val_accuracy"],
            record["val_macro_f1"],
            "better than every epoch, kept as the best weights"
            if kept
            else f"not better on {monitor} than the best epoch's {best:.4f}, which stays",
        )
        if kept and distributed.is_main_process():
            self.store.save_best(model_checkpoint(self.averaged.module.state_dict(), self.model_info, record))

    def validation_scores(self, model: nn.Module) -> dict[str, float]:
        """``model``'s ``val_loss``, ``val_accuracy``, ``val_macro_f1`` (and ``val_micro_f1``)."""
        scores = summarize(self.predict(self.validation_set, model), self.num_classes)
        names = ["loss", "accuracy", "macro_f1", *(["micro_f1"] if self.task == MULTILABEL else [])]
        return {f"val_{name}": scores[name] for name in names}

    def predict(self, dataset: EncodedDataset, model: nn.Module | None = None) -> Predictions:
        model = self.model if model is None else model
        return predict_dataset(model, dataset, self.cfg.eval_batch_size, self.device, self.amp)

    # ---------------------------------------------------------------- checkpoints
    def save_state(self) -> None:
        # Random states and running sums differ between ranks: rank 0 saves those of every rank.
        ranks = distributed.gather_objects((capture_rng(), dataclasses.asdict(self.running)))
        if distributed.is_main_process():
            self.store.save_last(self.state_checkpoint(ranks[1:]))

    def save_best(self, record: dict[str, Any]) -> None:
        if distributed.is_main_process():
            self.store.save_best(model_checkpoint(self.raw_model.state_dict(), self.model_info, record))

    def load_best(self) -> dict[str, Any]:
        """Put the best weights back into the model (on every rank); return their epoch's record.

        Rank 0 reads the file and sends the weights to the other ranks, which may run on machines
        that cannot see the run folder.
        """
        record = None
        if distributed.is_main_process():
            best = self.store.load_best()
            self.raw_model.load_state_dict(best.section("model"))
            record = best.meta["record"]
        distributed.broadcast_module(self.raw_model)
        return distributed.broadcast_object(record)

    def state_checkpoint(self, other_ranks: Sequence[tuple[Checkpoint, dict[str, Any]]] = ()) -> Checkpoint:
        """Everything needed to continue exactly from here; under DDP with ``other_ranks``' own
        random states and running sums (ranks 1, 2, ...)."""
        optimizer = optimizer_to_checkpoint(self.optimizer.state_dict())
        rng = capture_rng()
        meta = {
            "kind": "train_state",
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "should_stop": self.should_stop,
            "running": dataclasses.asdict(self.running),
            "history": self.history,
            "optimizer": optimizer.meta,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "callbacks": {cb.state_key: cb.state_dict() for cb in self.callbacks},
            "rng": rng.meta,
            "world_size": distributed.get_world_size(),
            "other_ranks": [{"rng": other.meta, "running": running} for other, running in other_ranks],
        }
        checkpoint = Checkpoint({}, meta)
        checkpoint.add("model", self.raw_model.state_dict())
        checkpoint.add("optimizer", optimizer.tensors)
        checkpoint.add("rng", rng.tensors)
        if self.averaged is not None:
            checkpoint.add("averaged", self.averaged.state_dict())
        for rank, (other, _) in enumerate(other_ranks, start=1):
            checkpoint.add(f"rng{rank}", other.tensors)
        return checkpoint

    def load_state(self, checkpoint: Checkpoint) -> None:
        """Inverse of :meth:`state_checkpoint`; the RNG states are restored last."""
        meta = checkpoint.meta
        saved_world, rank = meta.get("world_size", 1), distributed.get_rank()
        if meta["batch_in_epoch"] and saved_world != distributed.get_world_size():
            raise CheckpointError(
                f"the last checkpoint was written mid-epoch by {saved_world} process(es); resume it with "
                f"{saved_world} (the batches of an epoch depend on the number of processes)"
            )
        self.raw_model.load_state_dict(checkpoint.section("model"))
        self.optimizer.load_state_dict(
            optimizer_from_checkpoint(checkpoint.section("optimizer"), meta["optimizer"])
        )
        if self.scheduler is not None:
            self.scheduler.load_state_dict(meta["scheduler"])
        averaged = checkpoint.section("averaged")
        if self.averaged is not None and averaged:  # none in a run that had no swa_epochs until now
            self.averaged.load_state_dict(averaged)
        if meta["scaler"]:
            self.scaler.load_state_dict(meta["scaler"])
        saved = meta["callbacks"]
        for callback in self.callbacks:  # one added since the checkpoint (a logger) starts afresh
            state = _callback_state(saved, callback)
            if state is not None:
                callback.load_state_dict(state)
        self.epoch, self.batch_in_epoch = meta["epoch"], meta["batch_in_epoch"]
        self.global_step, self.should_stop = meta["global_step"], meta["should_stop"]
        self.history = meta["history"]
        if 0 < rank <= len(meta.get("other_ranks", [])):
            own = meta["other_ranks"][rank - 1]
            self.running = RunningStats(**own["running"])
            restore_rng(checkpoint.section(f"rng{rank}"), own["rng"])
        else:
            self.running = RunningStats(**meta["running"]) if rank == 0 else RunningStats()
            restore_rng(checkpoint.section("rng"), meta["rng"])


def _callback_state(saved: dict[str, Any], callback: Callback) -> dict[str, Any] | None:
    """``callback``'s saved state, None if it has none; checkpoints written before ``state_key``
    keyed it by class name."""
    if callback.state_key in saved:
        return saved[callback.state_key]
    return saved.get(type(callback).__name__)


def _check_row_updates(cfg: TrainConfig) -> None:
    """What ``train.embedding_update: rows`` cannot be combined with, said before training starts."""
    if cfg.optimizer == "sgd":
        raise ConfigError(
            "train.embedding_update=rows updates the embedding's rows with Adam; "
            "set train.optimizer to adam or adamw, or train.embedding_update=dense"
        )
    if distributed.get_world_size() > 1:
        raise ConfigError(
            "train.embedding_update=rows is for one process (sparse gradients are not all-reduced); "
            "use train.embedding_update=dense with torchrun"
        )


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD with momentum over the trainable parameters (frozen embeddings excluded).

    The model's embeddings are switched to sparse (row) gradients here where the Adam returned can
    apply them (:mod:`.embedding_rows`): lazily with ``train.embedding_update: rows``; exactly, the
    default, when training in one process on CPU, where it saves the dense gradient's zero fill,
    scatter and read (about 1 ms per batch at 50,000 x 100; README: Performance). Elsewhere (GPU,
    torchrun, ``train.compile``) the exact update takes the dense gradient as usual.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    lazy = cfg.embedding_update == "rows"
    if lazy:
        _check_row_updates(cfg)
    adam = cfg.optimizer in ("adam", "adamw")
    if adam and (lazy or _exact_rows_apply(cfg, params)) and use_row_gradients(model):
        decoupled = cfg.optimizer == "adamw"
        return RowAdam(
            params, lazy=lazy, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True,
            decoupled_weight_decay=decoupled,
        )  # fmt: skip
    # fused: one kernel per step instead of several small ops per tensor (optimizer step ~6x faster on CPU)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _exact_rows_apply(cfg: TrainConfig, params: list[nn.Parameter]) -> bool:
    """Whether the exact update takes row gradients: one process, CPU, no ``torch.compile``."""
    on_cpu = all(p.device.type == "cpu" for p in params)
    return on_cpu and distributed.get_world_size() == 1 and not cfg.compile


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer) -> Any:
    """Per-epoch schedules: ``cosine`` anneals to 0 over ``epochs``; ``step`` divides the rate by 10
    after each third of the epochs; ``plateau`` halves it after an epoch without improvement of
    ``train.monitor``; ``none`` keeps it constant."""
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, cfg.epochs // 3), gamma=0.1)
    if cfg.scheduler == "plateau":
        mode = "min" if cfg.monitor == "val_loss" else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.5, patience=1)
    return None


def class_weights(
    mode: str, labels: np.ndarray, num_classes: int, device: torch.device
) -> torch.Tensor | None:
    """``balanced``: weight ``n / (classes * count)`` per class, as in scikit-learn; ``none``: None.
    (Multi-label runs weigh each label's positives instead: :func:`rnnkit.tasks.positive_weights`.)"""
    if mode != "balanced":
        return None
    counts = np.bincount(labels, minlength=num_classes).clip(min=1)
    return torch.tensor(len(labels) / (num_classes * counts), dtype=torch.float32, device=device)
