"""The speed limit of training an LSTM layer: its matrix products alone, as torch runs them.

One training batch of a single-layer LSTM needs, per time step, ``h @ W_hh^T`` forwards and
``dgates @ W_hh`` backwards (small products that cannot be batched over time), plus four products
over all steps at once (input projection, input gradient, both weight gradients). This script times
only those products, in float32 and bfloat16, and prints the tokens/s they allow: no element-wise
gate maths, embedding, loss or optimiser. A real training step cannot beat it by much.

    python scripts/matmul_floor.py                      # the benchmark's LSTM: T=280, B=64, E=100, H=128
    python scripts/matmul_floor.py --steps 400 --hidden 256
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import torch

from rnnkit.runtime import reuse_large_allocations


def seconds(run: Callable[[], object], repeats: int) -> float:
    run()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - start) / repeats


def product_seconds(dtype: torch.dtype, args: argparse.Namespace) -> tuple[float, float]:
    """(per-step products of one batch, all-step products of one batch), in seconds."""
    steps, batch, features, hidden = args.steps, args.batch, args.input, args.hidden

    def make(*shape: int) -> torch.Tensor:
        return torch.randn(*shape).to(dtype)

    h, w_hh_t, dgates, w_hh = (
        make(batch, hidden),
        make(hidden, 4 * hidden),
        make(batch, 4 * hidden),
        make(4 * hidden, hidden),
    )
    x, w_ih_t = make(steps * batch, features), make(features, 4 * hidden)
    dpre, states = make(steps * batch, 4 * hidden), make(steps * batch, hidden)

    def per_step() -> None:
        for _ in range(steps):
            torch.mm(h, w_hh_t)
            torch.mm(dgates, w_hh)

    def all_steps() -> None:
        torch.mm(x, w_ih_t)
        torch.mm(dpre.t(), x)
        torch.mm(dpre, w_ih_t.t())
        torch.mm(dpre.t(), states)

    return seconds(per_step, args.repeats), seconds(all_steps, args.repeats)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, default=280, help="time steps (20 Newsgroups posts average ~280)"
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input", type=int, default=100, help="embedding size")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    reuse_large_allocations(True)
    tokens = args.steps * args.batch
    flops = 2 * tokens * 3 * (args.input + args.hidden) * 4 * args.hidden  # forward, backward twice that
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, T={args.steps} B={args.batch}")
    print(f"E={args.input} H={args.hidden}: {flops / tokens / 1e6:.2f} MFLOP per training token")
    for dtype in (torch.float32, torch.bfloat16):
        step_s, all_s = product_seconds(dtype, args)
        total = step_s + all_s
        limit, rate = tokens / total, flops / total / 1e9
        print(
            f"{dtype!s:15s} per-step {step_s * 1e3:6.1f} ms + all-step {all_s * 1e3:6.1f} ms = "
            f"{total * 1e3:6.1f} ms: at most {limit:,.0f} tokens/s ({rate:,.0f} GFLOP/s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
