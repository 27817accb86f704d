"""The speed limit of training a recurrent layer: its matrix products alone, as torch runs them.

One training batch of a single-layer LSTM, GRU or SimpleRNN (4, 3 or 1 gate blocks) needs, per
time step and direction, ``h @ W_hh^T`` forwards and ``dgates @ W_hh`` backwards (small products
that cannot be batched over time), plus four products over all steps at once (input projection,
input gradient, both weight gradients). This script times only those products and prints the
tokens/s they allow: no element-wise gate maths, embedding, loss or optimiser. A real training
step cannot beat it by much.

The per-step products are timed two ways and the faster counts: each product on all threads,
one after the other; or the batch rows (and a bidirectional layer's two directions) split among
the threads, each thread running its own products single-threaded, as independent rows allow.
A bidirectional token costs both directions' products.

    python scripts/matmul_floor.py                      # the benchmark's layer: T=280, B=64, E=100, H=128
    python scripts/matmul_floor.py --cells lstm --directions uni --steps 400 --hidden 256
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rnnkit.runtime import reuse_large_allocations

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
DTYPES = (torch.float32, torch.bfloat16)


@dataclass(frozen=True)
class Layer:
    """The shape of one training batch of one recurrent layer."""

    cell: str
    bidirectional: bool
    steps: int = 280
    batch: int = 64
    input: int = 100
    hidden: int = 128

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def tokens(self) -> int:
        return self.steps * self.batch

    @property
    def flops(self) -> int:
        """Forward (one product) and backward (two) over inputs and states, every direction."""
        width = GATES[self.cell] * self.hidden
        return 2 * self.tokens * 3 * (self.input + self.hidden) * width * self.directions


@dataclass(frozen=True)
class Floor:
    layer: Layer
    dtype: torch.dtype
    per_step_s: float  # the per-step products of one batch, the faster way
    all_step_s: float  # the all-step products of one batch
    split: bool  # the rows split among threads were the faster way

    @property
    def seconds(self) -> float:
        return self.per_step_s + self.all_step_s

    @property
    def tokens_per_s(self) -> float:
        return self.layer.tokens / self.seconds


def _seconds(run: Callable[[], object], repeats: int) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):  # the best of the repeats: a floor, not a typical time
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _per_step(layer: Layer, rows: int, dtype: torch.dtype) -> Callable[[], None]:
    width = GATES[layer.cell] * layer.hidden
    h, w_hh_t = torch.randn(rows, layer.hidden).to(dtype), torch.randn(layer.hidden, width).to(dtype)
    dgates, w_hh = torch.randn(rows, width).to(dtype), torch.randn(width, layer.hidden).to(dtype)

    def run() -> None:
        for _ in range(layer.steps):
            torch.mm(h, w_hh_t)
            torch.mm(dgates, w_hh)

    return run


def _all_steps(layer: Layer, dtype: torch.dtype) -> Callable[[], None]:
    width, rows = GATES[layer.cell] * layer.hidden, layer.tokens
    x, w_ih_t = torch.randn(rows, layer.input).to(dtype), torch.randn(layer.input, width).to(dtype)
    dpre, states = torch.randn(rows, width).to(dtype), torch.randn(rows, layer.hidden).to(dtype)

    def run() -> None:
        for _ in range(layer.directions):
            torch.mm(x, w_ih_t)
            torch.mm(dpre.t(), x)
            torch.mm(dpre, w_ih_t.t())
            torch.mm(dpre.t(), states)

    return run


def measure(layer: Layer, dtype: torch.dtype, repeats: int = 5) -> Floor:
    """The products' time for one batch of ``layer`` in ``dtype``, on this process's threads."""
    threads = torch.get_num_threads()
    shared = _seconds(_per_step(layer, layer.batch, dtype), repeats) * layer.directions
    # Split: every thread runs directions * batch / threads rows alone, all threads at once.
    rows = max(1, -(-layer.directions * layer.batch // threads))
    try:
        torch.set_num_threads(1)
        split = _seconds(_per_step(layer, rows, dtype), repeats)
    finally:
        torch.set_num_threads(threads)
    all_steps = _seconds(_all_steps(layer, dtype), repeats)
    return Floor(layer, dtype, min(shared, split), all_steps, split < shared)


def bfloat16_or_float32() -> torch.dtype:
    """The dtype of rnnkit's training products on this CPU (bfloat16 where it is native)."""
    from rnnkit.runtime import amp_dtype

    return amp_dtype(torch.device("cpu")) or torch.float32


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", default="lstm,gru,rnn", help="comma-separated subset of lstm,gru,rnn")
    parser.add_argument("--directions", choices=("uni", "bi", "both"), default="both")
    parser.add_argument(
        "--steps", type=int, default=280, help="time steps (20 Newsgroups posts average ~280)"
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input", type=int, default=100, help="embedding size")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    if not cells or set(cells) - set(GATES):
        parser.error(f"--cells takes a comma-separated subset of {', '.join(GATES)}")
    reuse_large_allocations(True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, T={args.steps} B={args.batch}")
    print(f"E={args.input} H={args.hidden}; per-step products: 'split' = rows split among threads")
    print("| cell | dir | dtype | MFLOP/token | per-step ms | all-step ms | at most tokens/s | GFLOP/s |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for cell in cells:
        for bidirectional in {"uni": (False,), "bi": (True,), "both": (False, True)}[args.directions]:
            layer = Layer(cell, bidirectional, args.steps, args.batch, args.input, args.hidden)
            for dtype in DTYPES:
                floor = measure(layer, dtype, args.repeats)
                print(
                    f"| {cell} | {'bi' if bidirectional else 'uni'} | {str(dtype).removeprefix('torch.')} "
                    f"| {layer.flops / layer.tokens / 1e6:.2f} "
                    f"| {floor.per_step_s * 1e3:.1f}{' split' if floor.split else ''} "
                    f"| {floor.all_step_s * 1e3:.1f} | {floor.tokens_per_s:,.0f} "
                    f"| {layer.flops / floor.seconds / 1e9:,.0f} |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
