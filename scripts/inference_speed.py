"""Inference speed of a run, float against dynamic int8, measured side by side in one process.

For one split of the run's own data (already tokenised: the tokenizer costs the same for every
variant), it times the whole split in batches of ``train.eval_batch_size`` and single documents,
for these variants of the same weights:

* ``float32, torch modules``: the recurrent layers run by torch's own modules (``model.kernel:
  native``), as every prediction ran before rnnkit's compiled loops took over GRU and SimpleRNN
  inference: the baseline of the speed-up column;
* ``float32``: what ``rnnkit predict`` runs (no mixed precision);
* ``float, amp``: what ``rnnkit evaluate`` runs when ``train.amp`` is on and the CPU computes
  bfloat16 natively (the same as float32 elsewhere);
* ``int8``: ``--quantize`` (:mod:`rnnkit.models.quantize`): LSTM, GRU and tanh SimpleRNN layers on
  the compiled loop with int8 step products where the CPU has AVX512-VNNI;
* ``int8, torch modules``: the same weights through ``torch.ao.quantization.quantize_dynamic``'s
  int8 GRU/LSTM modules, what ``--quantize`` ran before the int8 loop.

The variants take turns, ``--repeats`` times, and the best pass of each is reported (other
processes on the machine slow single passes down, never speed them up). Accuracy (multi-label:
micro-F1) is on the whole split. Runs under the run's own runtime settings (threads, denormals).

    python scripts/inference_speed.py --run-dir runs/quickstart
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from rnnkit.data import EncodedDataset
from rnnkit.inference import Predictions, predict_dataset
from rnnkit.models.quantize import quantize_dynamic_int8
from rnnkit.runs import TrainedRun, open_run
from rnnkit.runtime import amp_dtype, configure_runtime
from rnnkit.tasks import MULTILABEL
from rnnkit.training.metrics import summarize


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--split", default="test", choices=("test", "validation", "train"))
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per variant (best one kept)")
    parser.add_argument("--latency-docs", type=int, default=100, help="documents timed one at a time")
    args = parser.parse_args()

    cpu = torch.device("cpu")
    exact, int8 = open_run(args.run_dir, cpu), open_run(args.run_dir, cpu, quantize=True)
    modules = open_run(args.run_dir, cpu)
    for layer in modules.model.modules():
        if hasattr(layer, "kernel"):  # rnnkit's RecurrentLayer: "auto" or "native"
            layer.kernel = "native"
    int8_modules = dataclasses.replace(modules, model=quantize_dynamic_int8(modules.model), quantized=True)
    train_cfg = exact.config.train
    with configure_runtime(train_cfg):
        dataset = exact.load_split(args.split)
        amp = amp_dtype(cpu) is not None
        variants: dict[str, tuple[TrainedRun, bool]] = {
            "float32, torch modules": (modules, False),
            "float32": (exact, False),
        }
        if amp:
            variants[f"float, amp ({amp_dtype(cpu)})"] = (exact, True)
        variants["int8 (--quantize)"] = (int8, False)
        variants["int8, torch modules"] = (int8_modules, False)
        batch, threads = train_cfg.eval_batch_size, torch.get_num_threads()
        singles = [dataset.subset([i]) for i in range(min(args.latency_docs, len(dataset)))]
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        latency: dict[str, list[np.ndarray]] = {name: [] for name in variants}
        scored: dict[str, Predictions] = {}
        for _ in range(args.repeats):
            for name, (run, autocast) in variants.items():
                took, scored[name] = _timed_pass(run, dataset, batch, autocast)
                seconds[name].append(took)
                latency[name].append(np.array([_timed_pass(run, one, 1, autocast)[0] for one in singles]))
    print(
        f"{exact.path}: {args.split} split, {len(dataset)} documents (max_length {exact.max_length}, "
        f"batch {batch}), {threads} threads, best of {args.repeats} passes\n"
    )
    print("| variant | docs/s | speed-up | latency p50 (ms) | latency p90 (ms) | accuracy |")
    print("|---|---:|---:|---:|---:|---:|")
    base = min(seconds["float32, torch modules"])
    for name, (run, _) in variants.items():
        best = min(seconds[name])
        single = min(latency[name], key=np.median) * 1000
        metrics = summarize(scored[name], len(run.label_names))
        score = metrics["micro_f1"] if run.task == MULTILABEL else metrics["accuracy"]
        print(
            f"| {name} | {len(dataset) / best:,.0f} | {base / best:.2f}x | {np.median(single):.1f} | "
            f"{np.percentile(single, 90):.1f} | {score:.4f} |"
        )


def _timed_pass(
    run: TrainedRun, dataset: EncodedDataset, batch: int, autocast: bool
) -> tuple[float, Predictions]:
    started = time.perf_counter()
    predictions = predict_dataset(run.model, dataset, batch, torch.device("cpu"), autocast)
    took = time.perf_counter() - started
    predictions.thresholds = run.thresholds
    return took, predictions


if __name__ == "__main__":
    main()
