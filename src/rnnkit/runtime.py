"""Process-wide torch settings for a run, applied once before the model is built.

These switches change speed (or reproducibility), never the model: flushing denormal floats to
zero avoids a 3-15x slowdown of the CPU backward pass over long documents, where gradients decay
through hundreds of time steps into the subnormal range; keeping freed memory for reuse avoids
the page faults of fresh buffers every step; ``cudnn.benchmark`` picks the fastest cuDNN
algorithms for the shapes seen; deterministic mode trades that speed for bit-identical reruns.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys

import torch

from rnnkit.config import TrainConfig
from rnnkit.errors import ConfigError

logger = logging.getLogger(__name__)

CUBLAS_WORKSPACE = ":4096:8"
"""cuBLAS workspace size that makes its reductions deterministic (see the CUDA reproducibility docs)."""


def resolve_device(name: str, *, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """Turn ``train.device`` (``auto``/``cpu``/``cuda``/``cuda:N``) into a device this process can use.

    The one place a device is chosen, for a plain process and for each of the ``world_size``
    processes ``torchrun`` starts (:func:`rnnkit.distributed.setup` passes ``local_rank``): under
    data parallelism every process owns ``cuda:LOCAL_RANK``, so a fixed ``cuda:N``, which would put
    every process on one GPU, is refused.
    """
    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"train.device={name!r} is not a device; use auto, cpu, cuda or cuda:N")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"train.device={name} but CUDA is not available (no CUDA GPU is visible; torch "
            f"{torch.__version__}, cuda build: {torch.version.cuda or 'none'}); use train.device=auto "
            "or cpu, or install a CUDA build of torch"
        )
    count = torch.cuda.device_count()
    if world_size > 1:
        if name.startswith("cuda:"):
            raise ConfigError(
                f"train.device={name} pins one GPU but torchrun started {world_size} processes; use "
                "train.device=cuda (rank i uses cuda:LOCAL_RANK) and CUDA_VISIBLE_DEVICES to pick GPUs"
            )
        if local_rank >= count:
            raise ConfigError(
                f"LOCAL_RANK={local_rank} needs a GPU but this node has {count}; "
                f"use --nproc_per_node={count} or fewer"
            )
        return torch.device("cuda", local_rank)
    device = torch.device("cuda" if name == "auto" else name)
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"train.device={name} but only {count} CUDA device(s) are visible; "
            f"use cuda:0..cuda:{count - 1} or check CUDA_VISIBLE_DEVICES"
        )
    return device


# glibc's mallopt parameters and defaults (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536


def reuse_large_allocations(enabled: bool) -> bool:
    """Keep freed memory in the process for reuse (``enabled``), or restore glibc's defaults.

    glibc serves blocks over 32 MB (a long batch's gate buffers) with a fresh ``mmap`` and returns
    them on free, so every training step page-faults its large buffers in again: 30% of an LSTM
    step on this project's CPU (LSTM forward+backward over 64 x 280 tokens: 138 ms against 95 ms).
    Serving every block from the heap and never trimming it removes that, at the price of keeping
    the peak memory of the run. PyTorch's CPU tuning guide gets the same from jemalloc or tcmalloc.
    Returns whether the setting took (False off Linux/glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    mmap_max, trim = (0, 2**31 - 1) if enabled else (_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD)
    return bool(mallopt(_M_MMAP_MAX, mmap_max)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (``avx2``, ``avx512_bf16``...); empty elsewhere.

    Read once per process: :func:`amp_dtype` asks for every training and evaluation batch.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX).

    Only then is bfloat16 mixed precision faster than float32 on CPU (on this project's 2-core
    AMD EPYC a 64x128x512 product: 24 us against 48 us); elsewhere it is emulated and slower.
    """
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device``: float16 on CUDA, bfloat16 on CPUs that have
    it natively, None (full float32) elsewhere."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bfloat16():
        return torch.bfloat16
    return None


def configure_runtime(train_cfg: TrainConfig) -> torch.device:
    """Apply the thread, denormal and determinism settings of ``train_cfg``; return the device."""
    device = resolve_device(train_cfg.device)
    if not torch.set_flush_denormal(train_cfg.flush_denormal) and train_cfg.flush_denormal:
        logger.warning("this CPU cannot flush denormal floats to zero; long documents may train slowly")
    if train_cfg.num_threads > 0:
        torch.set_num_threads(train_cfg.num_threads)
    if train_cfg.reuse_memory:
        reuse_large_allocations(True)
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
        "runtime: device=%s threads=%d flush_denormal=%s reuse_memory=%s deterministic=%s",
        device,
        torch.get_num_threads(),
        train_cfg.flush_denormal,
        train_cfg.reuse_memory,
        train_cfg.deterministic,
    )
    return device
