"""The README's 20 Newsgroups results: every shipped config on both protocols, 3 seeds each, with the
built-in TF-IDF baseline beside it, ensembles of the seeds, and the learning curve.

Each run is ``rnnkit train`` in a subprocess (its wall time is what a user waits, vectors and the
baseline included) into ``RUNS/<config>-<protocol>-s<seed>``; a finished run is read back, so the
script is resumable and can be run one cell at a time (``--configs gru --protocols removed
--seeds 42``). Protocols: ``removed`` (headers, footers and quotes removed, the configs' default)
and ``full`` (``--set data.remove=[]``).

    python scripts/results_20ng.py --archive 20news-bydate.tar.gz            # all 18 runs, then tables
    python scripts/results_20ng.py --archive ... --learning-curve             # + 500 / 2,000 / all docs
    python scripts/results_20ng.py --archive ... --table-only                 # tables from finished runs

Writes ``RUNS/results.md`` (the tables) and, with ``--learning-curve``, ``docs/learning_curve.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOCOLS = {"removed": [], "full": ["--set", "data.remove=[]"]}
CURVE_SIZES = (500, 2000, None)  # None: every training document


def run_dir(runs: Path, config: str, protocol: str, seed: int, docs: int | None = None) -> Path:
    size = f"-n{docs}" if docs else ""
    return runs / f"{config}-{protocol}{size}-s{seed}"


def train(folder: Path, config: str, protocol: str, seed: int, archive: str, docs: int | None = None) -> None:
    """One ``rnnkit train``, unless the folder already holds a finished run; wall time saved beside it."""
    if (folder / "metrics.json").exists():
        return
    command = [sys.executable, "-m", "rnnkit", "train", "--config", str(ROOT / "configs" / f"{config}.yaml")]
    command += ["--run-dir", str(folder), "--set", f"data.archive={archive}", "--set", f"train.seed={seed}"]
    command += ["--set", "train.progress=false", *PROTOCOLS[protocol]]
    if docs:
        command += ["--set", f"data.train_docs={docs}"]
    if folder.exists():
        command.append("--overwrite")  # an unfinished run: start it again
    print(" ".join(command[1:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    (folder / "wall_time.json").write_text(json.dumps({"wall_s": time.perf_counter() - started}))


def read(folder: Path) -> dict | None:
    if not (folder / "metrics.json").exists():
        return None
    metrics = json.loads((folder / "metrics.json").read_text())
    wall = folder / "wall_time.json"
    metrics["wall_s"] = json.loads(wall.read_text())["wall_s"] if wall.exists() else float("nan")
    return metrics


def ensemble(runs: Path, members: list[Path], name: str, with_baseline: bool = False) -> dict | None:
    """``rnnkit ensemble`` of finished runs (at least two members), written once."""
    folder = runs / name
    if len(members) + with_baseline < 2:
        return None
    if not (folder / "metrics.json").exists():
        command = [sys.executable, "-m", "rnnkit", "ensemble", *map(str, members), "--run-dir", str(folder)]
        subprocess.run(command + (["--with-baseline"] if with_baseline else []), check=True)
    return json.loads((folder / "metrics.json").read_text())


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(runs: Path, configs: list[str], seeds: list[int]) -> str:
    lines = [
        "| config | protocol | test accuracy | test macro-F1 | seeds | wall time per run "
        "| TF-IDF baseline (same split) |",
        "|---|---|---|---|---|---|---|",
    ]
    ensembles = []
    for protocol in PROTOCOLS:
        for config in configs:
            folders = {seed: run_dir(runs, config, protocol, seed) for seed in seeds}
            metrics = {seed: read(folder) for seed, folder in folders.items()}
            done = [(folders[seed], m) for seed, m in metrics.items() if m is not None]
            done_seeds = ", ".join(str(seed) for seed, m in metrics.items() if m is not None)
            if not done:
                continue
            accuracy = [m["test"]["accuracy"] for _, m in done]
            macro_f1 = [m["test"]["macro_f1"] for _, m in done]
            wall = statistics.mean(m["wall_s"] for _, m in done)
            baseline = [m["baseline"]["test"]["accuracy"] for _, m in done if m.get("baseline")]
            lines.append(
                f"| `configs/{config}.yaml` | {protocol} | {spread(accuracy)} | {spread(macro_f1)} | "
                f"{done_seeds} | {wall / 60:.1f} min | {spread(baseline)} |"
            )
            members = [folder for folder, _ in done]
            hybrids = [
                ensemble(runs, [folder], f"{folder.name}-x1b", with_baseline=True) for folder in members
            ]
            ensembles.append(
                (f"each `{config}` run + its own TF-IDF baseline", protocol, hybrids, baseline, done_seeds)
            )
            if len(done) > 1:
                name = f"{config}-{protocol}-x{len(done)}"
                for label, with_baseline in (
                    (f"ensemble of the {len(done)} `{config}` runs", False),
                    (f"ensemble of the {len(done)} `{config}` runs + the first one's baseline", True),
                ):
                    combined = ensemble(runs, members, name + "b" * with_baseline, with_baseline)
                    ensembles.append((label, protocol, [combined], baseline[:1], ""))
    for label, protocol, results, baseline, seeds_used in ensembles:
        accuracy = [result["test"]["accuracy"] for result in results]
        macro_f1 = [result["test"]["macro_f1"] for result in results]
        lines.append(
            f"| {label} | {protocol} | {spread(accuracy)} | {spread(macro_f1)} | {seeds_used} | "
            f"| {spread(baseline)} |"
        )
    return "\n".join(lines)


def learning_curve(runs: Path, config: str, seed: int, archive: str, out: Path) -> str:
    """Test accuracy of ``config`` and of its baseline vs the number of training documents (removed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for docs in CURVE_SIZES:
        folder = run_dir(runs, config, "removed", seed, docs)
        train(folder, config, "removed", seed, archive, docs)
        metrics = read(folder)
        hybrid = ensemble(runs, [folder], f"{folder.name}-x1b", with_baseline=True)
        rows.append(
            (
                metrics["data"]["train_docs"],
                metrics["test"]["accuracy"],
                metrics["baseline"]["test"]["accuracy"],
                hybrid["test"]["accuracy"],
            )
        )
    sizes, network, baseline, hybrid = zip(*rows, strict=True)
    figure, axes = plt.subplots(figsize=(5.5, 3.6))
    axes.plot(sizes, network, "o-", label=f"configs/{config}.yaml")
    axes.plot(sizes, baseline, "s--", label="TF-IDF baseline (same split)")
    axes.plot(sizes, hybrid, "^-", label="the two combined (--with-baseline)")
    axes.set_xscale("log")
    axes.set_xticks(sizes, [f"{n:,}" for n in sizes])
    axes.set_xlabel("training documents")
    axes.set_ylabel("test accuracy (7,532 posts)")
    axes.set_title("20 Newsgroups, headers/footers/quotes removed")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    lines = [
        "| training documents | " + " | ".join(f"{n:,}" for n in sizes) + " |",
        "|---" * (len(sizes) + 1) + "|",
    ]
    lines.append(f"| `configs/{config}.yaml` | " + " | ".join(f"{a:.3f}" for a in network) + " |")
    lines.append("| TF-IDF baseline | " + " | ".join(f"{a:.3f}" for a in baseline) + " |")
    lines.append("| the two combined | " + " | ".join(f"{a:.3f}" for a in hybrid) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", required=True, help="20news-bydate.tar.gz")
    parser.add_argument("--runs", type=Path, default=Path("runs/results-20ng"))
    parser.add_argument("--configs", nargs="+", default=["rnn", "lstm", "gru"])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2])
    parser.add_argument("--table-only", action="store_true", help="no training: tables from finished runs")
    parser.add_argument("--learning-curve", action="store_true", help="also 500 / 2,000 / all documents")
    parser.add_argument("--curve-config", default="gru")
    parser.add_argument("--curve-out", type=Path, default=ROOT / "docs" / "learning_curve.png")
    args = parser.parse_args()
    archive = str(Path(args.archive).expanduser().resolve())
    if not args.table_only:
        for protocol in args.protocols:
            for config in args.configs:
                for seed in args.seeds:
                    train(run_dir(args.runs, config, protocol, seed), config, protocol, seed, archive)
    report = table(args.runs, args.configs, args.seeds)
    if args.learning_curve:
        report += "\n\n" + learning_curve(
            args.runs, args.curve_config, args.seeds[0], archive, args.curve_out
        )
    (args.runs / "results.md").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
