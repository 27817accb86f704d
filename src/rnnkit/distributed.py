"""Data-parallel training across processes, as launched by ``torchrun``.

``torchrun`` starts one process per device and tells each, through environment variables, who it
is (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and where to meet (``MASTER_ADDR``/``MASTER_PORT``).
This module turns that into a process group and a device, and offers the few collectives the
trainer needs so that a run on N processes computes what one process would:

* :func:`global_mean` normalises the loss by the *global* batch, so DDP's gradient averaging equals
  the gradient of one big batch even when the shards are uneven;
* :func:`gather_by_index` collects evaluation outputs from every rank, each example exactly once;
* :func:`broadcast_flag` makes a decision (early stopping) identical on all ranks, and
  :func:`gather_objects` lets rank 0 save the state each rank keeps for itself (random generators);
* :func:`claim_error_report` lets exactly one failing rank print the error.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) every helper is a cheap no-op, so the trainer
calls them unconditionally.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from rnnkit.errors import RnnkitError
from rnnkit.runtime import resolve_device

logger = logging.getLogger(__name__)

TIMEOUT_ENV = "RNNKIT_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0
"""How long a rank waits for its peers in one collective before failing instead of hanging.

Generous because rank 0 may build the data cache (tokenising, reading vectors) while the others
wait in :func:`main_process_first`; lower it with ``RNNKIT_DIST_TIMEOUT=<seconds>``.
"""

_ERROR_KEY = "rnnkit/error_reporter"
_STORE_TIMEOUT = timedelta(seconds=10)
_claim_store: dist.Store | None = None


@dataclass(frozen=True)
class DistributedEnv:
    """Who this process is in the job, read from the variables ``torchrun`` sets."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    master_addr: str | None = None
    master_port: int | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def read_env(environ: Mapping[str, str] | None = None) -> DistributedEnv:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/... ; a plain ``python`` run is rank 0 of 1."""
    environ = os.environ if environ is None else environ

    def number(name: str, default: int | None) -> int | None:
        text = environ.get(name)
        if text is None or text == "":
            return default
        try:
            return int(text)
        except ValueError:
            raise RnnkitError(
                f"environment variable {name}={text!r} is not an integer; launch with torchrun"
            ) from None

    world_size = number("WORLD_SIZE", 1)
    rank = number("RANK", 0)
    assert world_size is not None and rank is not None
    if world_size < 1 or not 0 <= rank < world_size:
        raise RnnkitError(f"RANK={rank} and WORLD_SIZE={world_size} are inconsistent; launch with torchrun")
    local_rank = number("LOCAL_RANK", rank)
    local_world_size = number("LOCAL_WORLD_SIZE", world_size)
    assert local_rank is not None and local_world_size is not None
    return DistributedEnv(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        local_world_size=local_world_size,
        master_addr=environ.get("MASTER_ADDR") or None,
        master_port=number("MASTER_PORT", None),
    )


def timeout() -> timedelta:
    """The collective timeout (``RNNKIT_DIST_TIMEOUT`` seconds, default 30 minutes)."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise RnnkitError(f"{TIMEOUT_ENV}={text!r} must be a number of seconds, e.g. 600") from None
    if seconds <= 0:
        raise RnnkitError(f"{TIMEOUT_ENV}={text!r} must be a positive number of seconds")
    return timedelta(seconds=seconds)


def setup(requested_device: str = "auto") -> tuple[DistributedEnv, torch.device]:
    """Join the process group when launched by torchrun and return this rank's env and device.

    The backend follows the device: NCCL for GPUs, Gloo for CPUs. A single process returns at once
    without touching ``torch.distributed``.
    """
    env = read_env()
    device = resolve_device(requested_device, local_rank=env.local_rank, world_size=env.world_size)
    if not env.is_distributed or dist.is_initialized():
        return env, device
    if not dist.is_available():
        raise RnnkitError("WORLD_SIZE > 1 but this PyTorch has no torch.distributed; train in one process")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before joining, so NCCL binds this rank to its own GPU
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size, timeout=timeout())
    logger.debug("rank %d/%d joined the %s group on %s", env.rank, env.world_size, backend, device)
    return env, device


def cleanup() -> None:
    """Leave the process group (safe to call when none was joined)."""
    global _claim_store
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _claim_store = None


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on the one process that writes the run folder, logs and shows progress bars.

    Asks the process group once it exists, and before that (or without one) the ``RANK`` that
    torchrun set, so the answer is the same before and after :func:`setup`.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    try:
        return read_env().is_main
    except RnnkitError:  # a malformed RANK is reported by setup(); until then, speak
        return True


def barrier() -> None:
    if not is_distributed():
        return
    if dist.get_backend() == "nccl":  # name the GPU, or NCCL guesses one from the rank
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Run the body on rank 0 first, then on the others: rank 0 fills caches the others then read."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Wrap in DistributedDataParallel when there are several processes; otherwise return as is.

    ``find_unused_parameters`` stays off (it costs a graph walk per step): every trainable
    parameter of the zoo's models takes part in each forward pass, and frozen embeddings
    (``requires_grad=False``) are simply not synchronised.
    """
    if not is_distributed():
        return model
    device_ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=False)


def _collective_device() -> torch.device:
    """NCCL moves only GPU tensors; Gloo only CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def global_mean(local_sum: Tensor, local_count: Tensor | float) -> Tensor:
    """Loss whose DDP-averaged gradient is the gradient of the mean over the *global* batch.

    Each rank passes the sum of its examples' (weighted) losses and their (weighted) count. DDP
    averages gradients over ``W`` ranks, so the local loss is ``local_sum * W / global_count``:
    the average of these is ``global_sum / global_count``, exactly what one process computes on the
    whole batch, also when the ranks hold different numbers of examples.
    """
    count = torch.as_tensor(local_count, dtype=local_sum.dtype, device=local_sum.device).detach()
    if not is_distributed():
        return local_sum / count
    total = count.clone().to(_collective_device())
    dist.all_reduce(total)
    return local_sum * (dist.get_world_size() / total.to(local_sum.device))


def all_reduce_sum(value: Tensor) -> Tensor:
    """Sum of ``value`` over ranks (a copy; ``value`` itself is untouched)."""
    if not is_distributed():
        return value.clone()
    total = value.detach().clone().to(_collective_device())
    dist.all_reduce(total)
    return total.to(value.device)


def broadcast_flag(flag: bool, src: int = 0) -> bool:
    """Rank ``src``'s ``flag`` on every rank, so a decision such as "stop early" is identical."""
    if not is_distributed():
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int32, device=_collective_device())
    dist.broadcast(value, src=src)
    return bool(value.item())


def gather_objects(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's ``obj`` (picklable) on rank ``dst`` in rank order, ``None`` on the others.

    Used for per-rank state such as random generators, which a checkpoint must hold for every rank
    so that a resumed run draws the same dropout masks on each of them.
    """
    if not is_distributed():
        return [obj]
    gathered: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == dst else None
    dist.gather_object(obj, gathered, dst=dst)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (picklable) on every rank, e.g. a run folder named after its clock."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into ``module`` on every rank, in place."""
    if not is_distributed():
        return
    for tensor in (*module.parameters(), *module.buffers()):
        dist.broadcast(tensor.data, src=src)


def gather_by_index(index: Tensor, columns: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """Collect per-example outputs from all ranks, each example once, ordered by ``index``.

    ``index`` holds the dataset position of each local example and every column holds one row per
    example (predictions, labels, losses, probabilities...). Ranks may hold different numbers of
    rows, and an example may appear on several ranks (a padded shard): rows are deduplicated by
    index, keeping the first. The result is identical on every rank, so metrics computed from it
    equal those of a single-process evaluation.
    """
    index = index.reshape(-1)
    for name, column in columns.items():
        if column.shape[0] != index.shape[0]:
            raise ValueError(f"column {name!r} has {column.shape[0]} rows for {index.shape[0]} indices")
    if is_distributed():
        sizes = _gather_sizes(index.shape[0])
        index = _gather_rows(index, sizes)
        columns = {name: _gather_rows(column, sizes) for name, column in columns.items()}
    order = torch.argsort(index, stable=True)
    ordered = index[order]
    keep = torch.ones_like(ordered, dtype=torch.bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    chosen = order[keep]
    return index[chosen], {name: column[chosen] for name, column in columns.items()}


def _gather_sizes(rows: int) -> list[int]:
    device = _collective_device()
    mine = torch.tensor([rows], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, mine)
    return [int(size.item()) for size in sizes]


def _gather_rows(tensor: Tensor, sizes: list[int]) -> Tensor:
    """all_gather for tensors whose first dimension differs between ranks: pad, gather, trim."""
    device = _collective_device()
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]), device=device)
    padded[: tensor.shape[0]] = tensor.to(device)
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)]).to(tensor.device)


def claim_error_report() -> bool:
    """Whether this process should print the error that is ending the run.

    When one rank fails, torchrun stops the others, which may fail in turn (a collective whose
    peer vanished) or may all hit the same error (a bad config). The first rank to claim the
    report in the job's key-value store prints it; the others stay silent, so the cause is shown
    once. A single process, or one that cannot reach the store, always reports.
    """
    try:
        env = read_env()
    except RnnkitError:  # the malformed variable is the error being reported
        return True
    if not env.is_distributed:
        return True
    try:
        store = _store()
        if store is None:
            return True
        key = f"{_ERROR_KEY}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        winner = store.compare_set(key, "", str(env.rank))
    except Exception:  # the store may be gone with the failing rank: report rather than hide
        return True
    return winner.decode() == str(env.rank)


def _store() -> dist.Store | None:
    """A client of the job's TCP store (hosted by torchrun's agent, or by rank 0 once joined)."""
    global _claim_store
    if _claim_store is not None:
        return _claim_store
    env = read_env()
    agent_hosts_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    if env.master_addr is None or env.master_port is None or not (agent_hosts_store or dist.is_initialized()):
        return None
    _claim_store = dist.TCPStore(env.master_addr, env.master_port, is_master=False, timeout=_STORE_TIMEOUT)
    return _claim_store
