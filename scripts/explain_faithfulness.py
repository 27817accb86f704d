"""Are the attributions faithful? Delete the top-k attributed tokens vs k random ones.

For each of ``--docs`` test documents (seeded sample, at least ``2k`` tokens) the model's
predicted class is explained with integrated gradients; then the ``k`` tokens with the highest
attribution are deleted from the text, and separately ``k`` random tokens (``--draws`` draws,
averaged). If the attributions point at what the model uses, the first deletion lowers the
predicted class's probability more. Also reports the completeness error of every explanation.

    python scripts/explain_faithfulness.py --run-dir runs/gru --docs 200 --k 5
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from rnnkit.data import EncodedDataset, collate
from rnnkit.explain import Explainer
from rnnkit.explain.command import sample
from rnnkit.runs import open_run


def probabilities(model: torch.nn.Module, sequences: list[np.ndarray], classes: np.ndarray) -> np.ndarray:
    """The probability of ``classes[i]`` for ``sequences[i]`` (one padded batch)."""
    batch = collate([(seq, 0, i) for i, seq in enumerate(sequences)])
    with torch.no_grad():
        probs = model(batch.token_ids, batch.lengths).softmax(dim=1).numpy()
    return probs[np.arange(len(sequences)), classes]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--draws", type=int, default=5, help="random deletions averaged per document")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    run = open_run(args.run_dir)
    explainer = Explainer(run, args.steps)
    split = run.load_split(args.split)
    long_enough = np.flatnonzero(split.lengths >= 2 * args.k)
    eligible = EncodedDataset(
        [split.sequences[i] for i in long_enough], split.labels[long_enough], run.max_length
    )
    documents = sample(eligible, min(args.docs, len(eligible)), args.seed)
    rng = np.random.default_rng(args.seed)

    drops_top, drops_random, errors, deltas = [], [], [], []
    started = time.perf_counter()
    for batch, result in explainer.attribute_dataset(documents, args.batch_size):
        lengths = batch.lengths.numpy()
        targets = result.targets.numpy()
        original = result.logits.softmax(dim=1).numpy()[np.arange(len(lengths)), targets]
        gaps = (result.logits - result.baseline_logits)[np.arange(len(lengths)), targets].numpy()
        errors.extend(np.abs(result.deltas.numpy()) / np.maximum(np.abs(gaps), 1e-12))
        deltas.extend(np.abs(result.deltas.numpy()))
        kept_top, kept_random = [], []
        for row, length in enumerate(lengths):
            ids = batch.token_ids[row, :length].numpy()
            top = np.argsort(-result.attributions[row, :length].numpy(), kind="stable")[: args.k]
            kept_top.append(np.delete(ids, top))
            kept_random += [
                np.delete(ids, rng.choice(length, args.k, replace=False)) for _ in range(args.draws)
            ]
        drops_top.extend(original - probabilities(explainer.model, kept_top, targets))
        after_random = probabilities(explainer.model, kept_random, np.repeat(targets, args.draws))
        drops_random.extend(original - after_random.reshape(-1, args.draws).mean(axis=1))
    drops_top_array, drops_random_array = np.array(drops_top), np.array(drops_random)
    figures = {
        "run": str(run.path),
        "documents": len(documents),
        "k": args.k,
        "steps": args.steps,
        "random_draws": args.draws,
        "mean_drop_top_k": float(drops_top_array.mean()),
        "mean_drop_random_k": float(drops_random_array.mean()),
        "share_top_k_drop_larger": float((drops_top_array > drops_random_array).mean()),
        "completeness_relative_error_mean": float(np.mean(errors)),
        "completeness_relative_error_median": float(np.median(errors)),
        "completeness_relative_error_p90": float(np.percentile(errors, 90)),
        "completeness_relative_error_max": float(np.max(errors)),
        "completeness_share_under_1_percent": float(np.mean(np.array(errors) < 0.01)),
        "completeness_abs_delta_mean": float(np.mean(deltas)),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(
        f"{figures['documents']} documents of {args.split}, k={args.k}: predicted-class probability drops by "
        f"{figures['mean_drop_top_k']:.4f} on average when the top-{args.k} attributed tokens are deleted, "
        f"by {figures['mean_drop_random_k']:.4f} for {args.k} random tokens ({args.draws} draws); the top-k "
        f"drop is larger for {100 * figures['share_top_k_drop_larger']:.1f}% of the documents"
    )
    print(
        f"completeness error ({args.steps} steps): "
        f"mean {100 * figures['completeness_relative_error_mean']:.3f}%, "
        f"median {100 * figures['completeness_relative_error_median']:.3f}%, "
        f"90th percentile {100 * figures['completeness_relative_error_p90']:.3f}%, "
        f"max {100 * figures['completeness_relative_error_max']:.3f}% of the logit difference "
        f"(under 1% for {100 * figures['completeness_share_under_1_percent']:.1f}% of the documents); "
        f"mean |delta| {figures['completeness_abs_delta_mean']:.2e}; {figures['seconds']} s"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
