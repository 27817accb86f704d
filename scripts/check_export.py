"""Exported models against rnnkit: same probabilities on every test document, and their speed.

For each run (a 20 Newsgroups run, bydate split): export it as ONNX and TorchScript, classify all
test documents with the exported folder's own ``classify.py`` (its tokenizer, no rnnkit) in
batches of mixed lengths (shuffled order, no sorting), and compare with
``rnnkit.load(run).predict_proba``. Then time both on the same documents, side by side, in
length-sorted batches of the run's ``eval_batch_size``, tokenisation included.

    python scripts/check_export.py --run-dir runs/quickstart --run-dir runs/bilstm2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

import rnnkit
from rnnkit.data import load_20newsgroups
from rnnkit.export import export_run
from rnnkit.runs import TrainedRun, open_run

TOLERANCE = 1e-5


def test_texts(run: TrainedRun) -> list[str]:
    data = run.config.data
    if data.dataset != "20newsgroups" or data.split != "bydate":
        raise SystemExit(f"{run.path}: this script reads the 20 Newsgroups bydate test split only")
    test = load_20newsgroups(
        "test",
        categories=data.categories,
        remove=tuple(data.remove),
        data_home=data.data_home,
        archive=data.archive,
        cache_dir=data.cache_dir,
    )
    return list(test.texts)


def exported_classify(folder: Path) -> ModuleType:
    """The export's own ``classify.py``, imported from the folder."""
    spec = importlib.util.spec_from_file_location(f"classify_{folder.name}", folder / "classify.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def docs_per_second(predict: Callable[[list[str]], np.ndarray], texts: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        predict(texts)
        best = min(best, time.perf_counter() - started)
    return len(texts) / best


def check_run(run_dir: str, workdir: Path, batch_size: int, repeats: int, seed: int, threads: int) -> dict:
    run = open_run(run_dir)
    texts = test_texts(run)
    predictor = rnnkit.load(run_dir)
    reference = predictor.predict_proba(texts)
    order = np.random.default_rng(seed).permutation(len(texts))
    shuffled = [texts[i] for i in order]
    result: dict = {"run": run_dir, "documents": len(texts), "batch_size_check": batch_size, "formats": {}}
    classifiers = {}
    for fmt in ("onnx", "torchscript"):
        folder = workdir / f"{run.path.name}-{fmt}"
        export_run(run, fmt, folder, overwrite=True)
        classifier = exported_classify(folder).Classifier(folder, threads=threads)
        classifiers[fmt] = classifier
        probabilities = np.empty_like(reference)
        probabilities[order] = classifier.predict_proba(shuffled, batch_size=batch_size, sort=False)
        difference = np.abs(probabilities - reference).max(axis=1)
        lengths = np.array([len(classifier.encode(text)) for text in shuffled])
        spreads = [np.ptp(lengths[i : i + batch_size]) for i in range(0, len(lengths), batch_size)]
        result["formats"][fmt] = {
            "max_abs_difference": float(difference.max()),
            "documents_over_tolerance": int((difference > TOLERANCE).sum()),
            "same_label": float((probabilities.argmax(1) == reference.argmax(1)).mean()),
            "mean_length_spread_per_batch": float(np.mean(spreads)),
        }
    eval_batch = run.config.train.eval_batch_size
    speeds = {
        "rnnkit": docs_per_second(predictor.predict_proba, texts, repeats),
        "onnxruntime": docs_per_second(
            lambda t: classifiers["onnx"].predict_proba(t, eval_batch), texts, repeats
        ),
        "torchscript": docs_per_second(
            lambda t: classifiers["torchscript"].predict_proba(t, eval_batch), texts, repeats
        ),
    }
    result["docs_per_second"] = speeds
    result["batch_size_timing"] = eval_batch
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", action="append", required=True)
    parser.add_argument("--batch-size", type=int, default=64, help="batch size of the equality check")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the test set (best kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="for torch and onnxruntime"
    )
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, onnxruntime and torch on {args.threads} threads")
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for run_dir in args.run_dir:
            result = check_run(run_dir, Path(workdir), args.batch_size, args.repeats, args.seed, args.threads)
            results.append(result)
            for fmt, figures in result["formats"].items():
                print(
                    f"{run_dir} {fmt}: {result['documents']} test documents, max |p - rnnkit| "
                    f"{figures['max_abs_difference']:.2e}, {figures['documents_over_tolerance']} over "
                    f"{TOLERANCE}, same label {100 * figures['same_label']:.1f}%, batches of "
                    f"{args.batch_size} spanning {figures['mean_length_spread_per_batch']:.0f} tokens "
                    "on average"
                )
            speeds = result["docs_per_second"]
            print(
                f"{run_dir} docs/s (batches of {result['batch_size_timing']}, tokenising included): "
                + ", ".join(f"{name} {value:,.0f}" for name, value in speeds.items())
                + f"; onnxruntime / rnnkit {speeds['onnxruntime'] / speeds['rnnkit']:.2f}x"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
