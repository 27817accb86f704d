"""Process-wide torch settings for a run, applied once before the model is built.

These switches change speed (or reproducibility), never the model: flushing denormal floats to
zero avoids a 3-15x slowdown of the CPU backward pass over long documents, where gradients decay
through hundreds of time steps into the subnormal range; ``cudnn.benchmark`` picks the fastest
cuDNN algorithms for the shapes seen; deterministic mode trades that speed for bit-identical reruns.
"""

from __future__ import annotations

import logging
import os

import torch

from rnnkit.config import TrainConfig
from rnnkit.errors import ConfigError, RnnkitError

logger = logging.getLogger(__name__)

CUBLAS_WORKSPACE = ":4096:8"
"""cuBLAS workspace size that makes its reductions deterministic (see the CUDA reproducibility docs)."""


def resolve_device(name: str) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a device that exists on this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RnnkitError(
                f"train.device={name} but CUDA is not available (torch {torch.__version__}, "
                f"cuda build: {torch.version.cuda or 'none'}); use train.device=auto or cpu, "
                "or install a CUDA build of torch"
            )
        device = torch.device(name)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise RnnkitError(
                f"train.device={name} but only {count} CUDA device(s) are visible; "
                f"use cuda:0..cuda:{count - 1} or check CUDA_VISIBLE_DEVICES"
            )
        return device
    raise ConfigError(f"train.device={name!r} is not a device; use auto, cpu, cuda or cuda:N")


def configure_runtime(train_cfg: TrainConfig) -> torch.device:
    """Apply the thread, denormal and determinism settings of ``train_cfg``; return the device."""
    device = resolve_device(train_cfg.device)
    if not torch.set_flush_denormal(train_cfg.flush_denormal) and train_cfg.flush_denormal:
        logger.warning("this CPU cannot flush denormal floats to zero; long documents may train slowly")
    if train_cfg.num_threads > 0:
        torch.set_num_threads(train_cfg.num_threads)
    if train_cfg.deterministic:
        # cuBLAS reads this when its handle is created, so it must be set before the first CUDA matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    logger.info(
        "runtime: device=%s threads=%d flush_denormal=%s deterministic=%s",
        device,
        torch.get_num_threads(),
        train_cfg.flush_denormal,
        train_cfg.deterministic,
    )
    return device
