"""What the exact Adam update of the embedding costs, and what deferring it could save at most.

Adam moves every embedding row at every step (the moments of words outside the batch decay), so
the exact update streams the weights and both moments, 60 MB each way at 50,000 x 100 floats.
This script answers two questions:

1. Is that pass as fast as the memory allows? It times the pass (``adam_from_rows``, rnnkit's
   compiled kernel) beside an in-place scaling of the same three matrices, which moves the same
   bytes and does almost no arithmetic.
2. Would deferring it pay? Rows outside the batch could take their zero-gradient steps late, K at
   a time, in one pass (the same arithmetic in the same order, so the same numbers), if every row
   were brought up to date before a batch reads it. Here whole training steps run with the full
   pass only every K-th step and the batch's rows alone in between: the cost of that bookkeeping
   left out, so the saving is an upper bound.

    python scripts/exact_update_cost.py                       # one-way LSTM, the benchmark's sizes
    python scripts/exact_update_cost.py --bidirectional --steps 100,300
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.config import TrainConfig
from rnnkit.models.classifier import LSTMClassifier
from rnnkit.models.kernels import cpp_loop
from rnnkit.runtime import configure_runtime
from rnnkit.training.embedding_rows import RowAdam, clip_grad_norm, use_row_gradients

BATCH, CLASSES = 64, 20


class EveryKthPass(RowAdam):
    """The exact pass at every ``k``-th step, only the batch's rows between (timing only)."""

    k = 1

    def _update_every_row(self, weight: Tensor, grad: Tensor, group: dict) -> None:
        step = int(self.state[weight].get("step", 0)) + 1  # the step this update makes
        if step % self.k == 0:
            super()._update_every_row(weight, grad, group)
        else:
            self._update_rows(weight, grad, group)


def timed(work: Callable[[], None], repeats: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls, after one warm-up call."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def pass_against_memory(vocab: int, dim: int, repeats: int) -> None:
    kernels = cpp_loop.extension()
    if kernels is None:
        raise SystemExit("the compiled kernels are not available (a C++ compiler is needed)")
    weight, exp_avg, exp_avg_sq = torch.randn(vocab, dim), torch.zeros(vocab, dim), torch.rand(vocab, dim)
    rows = torch.unique(torch.randint(0, vocab, (3500,)))
    values = torch.randn(len(rows), dim)
    step = [0]

    def exact_pass() -> None:
        step[0] += 1
        kernels.adam_from_rows(
            weight, exp_avg, exp_avg_sq, rows, values, 1e-3, 0.9, 0.999, 1e-8, 0.0, False, step[0]
        )

    def scale_in_place() -> None:
        for matrix in (weight, exp_avg, exp_avg_sq):
            matrix.mul_(0.999)

    megabytes = 3 * vocab * dim * 4 / 1e6
    for name, work in (("exact Adam pass", exact_pass), ("in-place scaling, same bytes", scale_in_place)):
        times = timed(work, repeats)
        median = statistics.median(times)
        print(f"{name:30s} best {min(times):.2f} ms, median {median:.2f} ms ({megabytes:.0f} MB)")


def training_steps(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    labels = torch.randint(0, CLASSES, (BATCH,))
    for steps in args.steps:
        batches = [
            torch.from_numpy(np.minimum(rng.zipf(1.3, (BATCH, steps)), args.vocab - 1)) for _ in range(4)
        ]
        lengths = torch.full((BATCH,), steps)
        setups = {}
        for k in args.every:
            torch.manual_seed(0)
            model = LSTMClassifier(
                args.vocab, CLASSES, embedding_dim=args.dim, hidden_size=128, bidirectional=args.bidirectional
            )
            use_row_gradients(model)  # as build_optimizer does for Adam on CPU
            optimizer = EveryKthPass(model.parameters(), lazy=False, lr=1e-3, fused=True)
            optimizer.k = k
            setups[k] = (model, optimizer)

        def run(model: nn.Module, optimizer: torch.optim.Optimizer, batches=batches, lengths=lengths) -> None:
            for ids in batches * 4:
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = nn.functional.cross_entropy(model(ids, lengths), labels)
                loss.backward()
                clip_grad_norm(model.parameters(), 5.0)
                optimizer.step()

        times: dict[int, list[float]] = {k: [] for k in setups}
        for _ in range(args.rounds):  # alternating, so a busy moment hits every variant alike
            for k, (model, optimizer) in setups.items():
                times[k] += [t / 16 for t in timed(lambda m=model, o=optimizer: run(m, o), 1)]
        every_step = statistics.median(times[1])
        cells = []
        for k, ms in times.items():
            median = statistics.median(ms)
            cells.append(f"K={k}: {median:.2f} ms ({100 * (every_step - median) / every_step:+.1f}%)")
        print(f"{BATCH} x {steps} tokens, median ms per step, saving against K=1: " + ", ".join(cells))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vocab", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100, 200, 300])
    parser.add_argument("--every", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    if args.every[0] != 1:
        parser.error("--every must start with 1 (the exact pass at every step, the reference)")
    with configure_runtime(TrainConfig(device="cpu")):
        pass_against_memory(args.vocab, args.dim, args.repeats)
        training_steps(args)


if __name__ == "__main__":
    main()
