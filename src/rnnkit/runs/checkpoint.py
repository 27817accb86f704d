"""Checkpoints that can be trusted: safe to load, verified, and never the only copy.

A checkpoint is one ``.safetensors`` file: tensors (model weights, optimizer moments, RNG states)
plus a JSON document in the header's metadata (epoch, position in the epoch, scheduler, callbacks,
history...). Loading it never runs code from the file (no pickle), so a checkpoint from a stranger
is at worst refused. The metadata also carries a SHA-256 of every tensor and of the JSON itself,
so a truncated or bit-flipped file is detected instead of silently training on garbage.

A run keeps two kinds: ``best.safetensors`` holds the best weights with what rebuilding the model
needs (:func:`model_checkpoint`); the resumable training state lives in ``last.safetensors``, and
before it is replaced, the current one becomes ``previous.safetensors``. Every write is atomic
(tmp file + rename), and if ``last`` is damaged anyway, :meth:`CheckpointStore.load_latest`
moves it aside and falls back to ``previous``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from rnnkit.errors import CheckpointError
from rnnkit.io import atomic_write_bytes
from rnnkit.runs.manifest import check_stamp

logger = logging.getLogger(__name__)

FORMAT = "rnnkit-checkpoint/1"
RUN_FILES = "run_files"
"""The checkpoint metadata key holding the run's manifest digests (see :class:`CheckpointStore`)."""
SUFFIX = ".safetensors"


@dataclass
class Checkpoint:
    """What a checkpoint file holds: named tensors and a JSON-able ``meta`` mapping."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    def section(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors saved under ``prefix.``, with the prefix removed (e.g. a model state dict)."""
        start = f"{prefix}."
        return {name[len(start) :]: t for name, t in self.tensors.items() if name.startswith(start)}

    def add(self, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
        """Store ``tensors`` under ``prefix.``, the inverse of :meth:`section`."""
        self.tensors.update({f"{prefix}.{name}": t for name, t in tensors.items()})


def model_checkpoint(
    weights: dict[str, torch.Tensor], model_info: dict[str, Any], record: dict[str, Any]
) -> Checkpoint:
    """The best model of a run: ``weights`` (a state dict), the sizes ``build_model`` needs to rebuild
    it (``model_info``: vocab_size, num_classes, embedding_dim) and the history row of its epoch."""
    checkpoint = Checkpoint({}, {"kind": "model", "record": record, "model": model_info})
    checkpoint.add("model", weights)
    return checkpoint


def save_checkpoint(path: str | os.PathLike[str], checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` atomically, with a digest of its tensors and metadata."""
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in checkpoint.tensors.items()}
    meta_json = json.dumps({"format": FORMAT, **checkpoint.meta}, sort_keys=True)
    header = {"rnnkit": meta_json, "sha256": _digest(tensors, meta_json)}
    atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=header))


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and verify a checkpoint; anything unexpected is a :class:`CheckpointError`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    damaged = f"checkpoint {path} is truncated, corrupted or not an rnnkit checkpoint"
    try:
        header = _read_header(data)
        tensors = safetensors.torch.load(data)
        meta_json = header["rnnkit"]
        meta = json.loads(meta_json)
    except Exception:  # any parse failure means the bytes are not a checkpoint we wrote
        raise CheckpointError(f"{damaged}; it was not loaded") from None
    if header.get("sha256") != _digest(tensors, meta_json) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{damaged} (checksum mismatch); it was not loaded")
    meta.pop("format")
    return Checkpoint(tensors, meta)


def _read_header(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file: 8-byte little-endian length, then JSON."""
    size = int.from_bytes(data[:8], "little")
    if len(data) < 8 or size > len(data) - 8:
        raise ValueError("header longer than the file")
    metadata = json.loads(data[8 : 8 + size])["__metadata__"]
    if not isinstance(metadata, dict):
        raise ValueError("metadata is not a mapping")
    return metadata


def _digest(tensors: dict[str, torch.Tensor], meta_json: str) -> str:
    sha = hashlib.sha256(meta_json.encode("utf-8"))
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        sha.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        sha.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


class CheckpointStore:
    """The ``checkpoints/`` folder of a run: ``best``, ``last`` and its fallback ``previous``.

    ``run_files`` (the run's :mod:`~rnnkit.runs.manifest` digests, once known) is recorded in
    every checkpoint saved and required of every checkpoint loaded, so weights are only ever used
    with the config, vocabulary and labels they were trained with.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.run_files: dict[str, str] | None = None

    def path(self, name: str) -> Path:
        return self.folder / f"{name}{SUFFIX}"

    def save_last(self, checkpoint: Checkpoint) -> Path:
        """Keep the current ``last`` as ``previous``, then write the new ``last``."""
        last = self.path("last")
        if last.exists():
            os.replace(last, self.path("previous"))
        self._save(last, checkpoint)
        return last

    def save_best(self, checkpoint: Checkpoint) -> Path:
        self._save(self.path("best"), checkpoint)
        return self.path("best")

    def _save(self, path: Path, checkpoint: Checkpoint) -> None:
        if self.run_files is not None:
            checkpoint = Checkpoint(checkpoint.tensors, {**checkpoint.meta, RUN_FILES: self.run_files})
        save_checkpoint(path, checkpoint)

    def _checked(self, path: Path, checkpoint: Checkpoint) -> Checkpoint:
        """``checkpoint`` (read from ``path``) once its recorded run files are this run's."""
        stamp = checkpoint.meta.pop(RUN_FILES, None)
        if self.run_files is not None:
            check_stamp(path, stamp, self.run_files)
        return checkpoint

    def load_best(self) -> Checkpoint:
        path = self.path("best")
        if not path.exists():
            raise CheckpointError(
                f"{path} does not exist: the run has not finished an epoch yet; "
                f"continue it with: rnnkit train --resume {self.folder.parent}"
            )
        return self._checked(path, load_checkpoint(path))

    def latest_path(self) -> Path | None:
        """The newest resumable checkpoint file on disk (unverified), for messages."""
        return next((p for p in (self.path("last"), self.path("previous")) if p.exists()), None)

    def load_latest(self) -> Checkpoint | None:
        """The newest checkpoint that verifies, or ``None`` if none was ever written.

        A damaged file is renamed to ``*.corrupt`` (kept for inspection, never picked again) and the
        older one is used; if every checkpoint is damaged the run cannot continue safely.
        """
        for tmp in self.folder.glob(".*.tmp"):  # left by a write that was killed midway
            tmp.unlink(missing_ok=True)
        candidates = [p for p in (self.path("last"), self.path("previous")) if p.exists()]
        for path in candidates:
            try:
                checkpoint = load_checkpoint(path)
            except CheckpointError as error:
                aside = path.with_suffix(path.suffix + ".corrupt")
                os.replace(path, aside)
                logger.warning("%s; moved it to %s and trying an older checkpoint", error, aside.name)
                continue
            return self._checked(path, checkpoint)  # intact but another run's: refused, kept in place
        if candidates:
            raise CheckpointError(
                f"every checkpoint in {self.folder} is damaged (moved to *.corrupt); "
                "start a new run, or restore a checkpoint from a backup"
            )
        return None


def optimizer_to_checkpoint(state: dict[str, Any]) -> Checkpoint:
    """Split an optimizer ``state_dict`` into tensors and JSON (safetensors holds tensors only)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_id}.{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return Checkpoint(tensors, {"param_groups": state["param_groups"], "scalars": scalars})


def optimizer_from_checkpoint(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_to_checkpoint`."""
    state: dict[int, dict[str, Any]] = {}
    for param_id, entries in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(entries)
    for name, tensor in tensors.items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = tensor
    return {"state": state, "param_groups": meta["param_groups"]}


def capture_rng() -> Checkpoint:
    """Python, NumPy and torch (CPU and CUDA) random states, so a resumed run draws the same numbers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    version, internal, gauss = random.getstate()
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, int(pos), int(has_gauss), float(cached)],
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    return Checkpoint(tensors, meta)


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda_states = [tensors[f"cuda.{i}"] for i in range(meta["cuda_devices"])]
    if cuda_states and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda_states):
        torch.cuda.set_rng_state_all(cuda_states)
