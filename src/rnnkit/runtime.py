"""The process a run lives in: its device, its CPU's features, and torch's process-wide settings.

The settings change speed (or reproducibility), never the model: flushing denormal floats to
zero avoids a 3-15x slowdown of the CPU backward pass over long documents, where gradients decay
through hundreds of time steps into the subnormal range; keeping freed memory for reuse avoids
the page faults of fresh buffers every step; ``cudnn.benchmark`` picks the fastest cuDNN
algorithms for the shapes seen; deterministic mode trades that speed for bit-identical reruns.
:func:`configure_runtime` applies them for the duration of a ``with`` block and puts back what the
caller had, so training from a notebook leaves the process as it found it (except glibc's malloc
setting, which cannot be undone; see :func:`reuse_large_allocations`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import re
import sys
from collections.abc import Iterator

import torch

from rnnkit.config import TrainConfig
from rnnkit.errors import ConfigError

logger = logging.getLogger(__name__)

CUBLAS_WORKSPACE = ":4096:8"
"""cuBLAS workspace size that makes its reductions deterministic (see the CUDA reproducibility docs)."""

_DENORMAL = 1e-310  # a float64 below the smallest normal double (2.2e-308)
_ONE = 1.0


DEVICE_NAMES = "auto, cpu, cuda or cuda:N"


def is_device_name(name: str) -> bool:
    """Whether ``name`` is one ``train.device`` and ``--device`` take (:data:`DEVICE_NAMES`)."""
    return name in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", name) is not None


def resolve_device(name: str, *, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """Turn ``train.device`` (``auto``/``cpu``/``cuda``/``cuda:N``) into a device this process can use.

    The one place a device is chosen, for a plain process and for each of the ``world_size``
    processes ``torchrun`` starts (:func:`rnnkit.distributed.setup` passes ``local_rank``): under
    data parallelism every process owns ``cuda:LOCAL_RANK``, so a fixed ``cuda:N``, which would put
    every process on one GPU, is refused.
    """
    if not is_device_name(name):
        raise ConfigError(f"train.device={name!r} is not a device; use {DEVICE_NAMES}")
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


def available_memory(device: torch.device) -> int | None:
    """Bytes this process can still allocate on ``device``: free GPU memory, or the kernel's
    ``MemAvailable`` for the CPU (Linux); ``None`` where that is unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# glibc's mallopt parameters and defaults (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536


def denormals_flushed() -> bool:
    """Whether this thread flushes denormal floats to zero (``torch.set_flush_denormal``).

    Asked on every LSTM forward pass (:func:`rnnkit.models.kernels.choose_kernel`), so it is read
    cheaply instead of cached: one float64 product in the interpreter (~30 ns) goes through the
    same FTZ/DAZ flags of this thread's floating-point unit that torch sets, where a one-element
    tensor product cost ~8.5 us. It is never stale, also when a caller toggles
    ``torch.set_flush_denormal`` itself. (Module globals, not literals, so that the compiler cannot
    fold the product at import time.)
    """
    return _DENORMAL * _ONE == 0.0


def reuse_large_allocations(enabled: bool) -> bool:
    """Keep freed memory in the process for reuse (``enabled``), or restore glibc's defaults.

    glibc serves blocks over 32 MB (a long batch's gate buffers) with a fresh ``mmap`` and returns
    them on free, so every training step page-faults its large buffers in again: 30% of an LSTM
    step on this project's CPU (LSTM forward+backward over 64 x 280 tokens: 138 ms against 95 ms).
    Serving every block from the heap and never trimming it removes that, at the price of keeping
    the peak memory of the run. PyTorch's CPU tuning guide gets the same from jemalloc or tcmalloc.
    Returns whether the setting took (False off Linux/glibc).

    This cannot be undone exactly: glibc has no way to read its settings back, and once they are
    set its adaptive mmap threshold stays off for the life of the process, also after
    ``reuse_large_allocations(False)`` puts the documented defaults back.
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


@contextlib.contextmanager
def configure_runtime(train_cfg: TrainConfig) -> Iterator[None]:
    """Apply the thread, denormal, memory and determinism settings of ``train_cfg`` inside the block.

    On exit the caller's denormal flushing, thread count, deterministic-algorithms mode, cuDNN
    flags and ``CUBLAS_WORKSPACE_CONFIG`` are put back, so ``rnnkit.training.train`` called from a
    notebook leaves the process as it found it. One thing stays: with ``train.reuse_memory`` (the
    default) glibc's malloc keeps freed memory for reuse for the rest of the process; glibc cannot
    undo that (see :func:`reuse_large_allocations`), and the run says so in its log.
    """
    saved = _Settings()
    try:
        _apply(train_cfg)
        yield
    finally:
        saved.restore()


def _apply(train_cfg: TrainConfig) -> None:
    if not torch.set_flush_denormal(train_cfg.flush_denormal) and train_cfg.flush_denormal:
        logger.warning("this CPU cannot flush denormal floats to zero; long documents may train slowly")
    if train_cfg.num_threads > 0:
        torch.set_num_threads(train_cfg.num_threads)
    if train_cfg.reuse_memory and reuse_large_allocations(True):
        logger.info(
            "runtime: glibc's malloc now keeps freed memory for reuse in this process, and keeps doing "
            "so after training (glibc cannot undo it; train.reuse_memory=false leaves malloc alone)"
        )
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
        "runtime: threads=%d flush_denormal=%s reuse_memory=%s deterministic=%s",
        torch.get_num_threads(),
        train_cfg.flush_denormal,
        train_cfg.reuse_memory,
        train_cfg.deterministic,
    )


class _Settings:
    """The process-wide switches :func:`configure_runtime` changes, read as the caller has them."""

    def __init__(self) -> None:
        self.flush_denormal = denormals_flushed()
        self.threads = torch.get_num_threads()
        self.deterministic = torch.are_deterministic_algorithms_enabled()
        self.deterministic_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        self.cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
        self.cublas_workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")

    def restore(self) -> None:
        torch.set_flush_denormal(self.flush_denormal)
        if torch.get_num_threads() != self.threads:  # resizing the thread pool is not free
            torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.deterministic_warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = self.cudnn
        if self.cublas_workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
