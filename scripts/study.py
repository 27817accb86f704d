"""LSTM or GRU, and how big? The controlled study the seed article's FAQ could not give, in one script.

Design: one factor at a time around a base config (``configs/study.yaml``: bidirectional LSTM,
hidden 128, one layer, max pooling, GloVe 6B 50-d vectors trained along, 300 tokens per post, up
to 12 epochs with early stopping; pinned apart from the shipped configs so the study's cost and
numbers stay put when those change) on 20 Newsgroups, bydate split, headers, footers and quotes
removed. Each question changes one key of the base and keeps everything else:

=========  ===================  ==============================
question   key                  levels (base first)
=========  ===================  ==============================
cell       model.name           lstm, rnn, gru
hidden     model.hidden_size    128, 32, 64, 256, 512
layers     model.num_layers     1, 2
direction  model.bidirectional  true, false
pooling    model.pooling        max, last, mean, attention
=========  ===================  ==============================

That is 12 distinct configurations (the base is shared by every question) x 3 seeds = 36 runs. A
seed changes the initial weights, the batch order and the validation part carved from the training
posts; the test set is always the full bydate test split. Every run is trained by the same runner
as an ``rnnkit tune`` trial (:func:`rnnkit.tune.runner.run_or_resume`) into
``RUNS/<configuration>/seed-<k>`` and read back with ``rnnkit compare``'s loader, so the study is
resumable: a finished run is read, a killed one continues from its checkpoint, and a run folder
made with another config is refused. Seeds come outermost (every configuration once, then the next
seed), so a study stopped early still covers every question.

Cost on this project's 2-core CPU, measured (quiet machine, 2 threads): 28 minutes per seed, of
which 7.7 for hidden 512 alone, so **about 1.5 hours** for 3 seeds.

Outputs ``docs/study.md`` (the design, a table per question with mean ± std over the seeds, training
time and accuracy per second beside accuracy, and plain-language conclusions written from the
numbers) and one PNG per question in ``docs/study/``::

    nice -n 10 python scripts/study.py --archive /path/to/20news-bydate.tar.gz
    python scripts/study.py --archive ... --dry-run          # the plan, and which runs are done
    python scripts/study.py --smoke --runs-dir /tmp/smoke --out /tmp/smoke.md   # 1 epoch on the sample
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from rnnkit import tables
from rnnkit.compare import RunRecord, load_run
from rnnkit.config import Config, load_config
from rnnkit.figures import save_png
from rnnkit.runs import RunDir
from rnnkit.training.experiment import absolute_paths, as_used
from rnnkit.tune.runner import quiet_training, run_or_resume
from rnnkit.tune.space import apply
from rnnkit.tune.studydir import NOT_COMPARED, first_difference

logger = logging.getLogger("study")
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Question:
    name: str
    title: str
    key: str
    levels: tuple[Any, ...]  # the base's level first
    noun: str = ""  # for levels on a scale (sizes, depths): what the level measures


QUESTIONS = (
    Question("cell", "SimpleRNN, LSTM or GRU?", "model.name", ("lstm", "rnn", "gru")),
    Question("hidden", "How big? (hidden size)", "model.hidden_size", (128, 32, 64, 256, 512), "hidden size"),
    Question("layers", "How deep? (recurrent layers)", "model.num_layers", (1, 2), "number of layers"),
    Question("direction", "Uni- or bidirectional?", "model.bidirectional", (True, False)),
    Question(
        "pooling", "Which pooling over the time steps?", "model.pooling", ("max", "last", "mean", "attention")
    ),
)
CELL_NAMES = {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}
SMOKE = {
    "data.archive": str(ROOT / "data" / "20news-sample.tar.gz"),
    "data.max_length": 60,
    "embeddings.source": "random",
    "embeddings.dim": 16,
    "train.epochs": 1,
}


@dataclass
class Level:
    """One level of a question: its runs over the seeds, summarised."""

    value: Any
    runs: list[RunRecord]

    @property
    def label(self) -> str:
        if isinstance(self.value, bool):  # before any lookup: 1 == True, so a 1-layer level is no direction
            return "bidirectional" if self.value else "unidirectional"
        return CELL_NAMES.get(self.value, str(self.value))

    def values(self, name: str) -> list[float]:
        getters = {
            "accuracy": lambda m: 100 * m["test"]["accuracy"],
            "macro_f1": lambda m: 100 * m["test"]["macro_f1"],
            "time": lambda m: m["train_time_s"],
            "epochs": lambda m: m["epochs_trained"],
            "per_second": lambda m: m["test"]["accuracy"] / m["train_time_s"],
        }
        return [getters[name](run.metrics) for run in self.runs]

    def mean(self, name: str) -> float:
        return statistics.fmean(self.values(name))

    def std(self, name: str) -> float:
        values = self.values(name)
        return statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base = base_config(args)
    questions = [q for q in QUESTIONS if not args.only or q.name in args.only]
    plan = cells(base, questions)
    seeds = list(range(1, args.seeds + 1))
    logger.info(
        "%d configurations x %d seeds = %d runs in %s",
        len(plan),
        len(seeds),
        len(plan) * len(seeds),
        args.runs_dir,
    )
    if args.dry_run:
        for name in plan:
            done = sum(run_dir(args.runs_dir, name, seed).metrics_file.is_file() for seed in seeds)
            print(f"{name:32s} {done}/{len(seeds)} done")
        return 0
    started = time.perf_counter()
    for seed in seeds:
        for name, cfg in plan.items():
            train_cell(cfg, name, seed, args.runs_dir)
    logger.info(
        "all runs done in %.0f s (finished runs were read, not retrained)", time.perf_counter() - started
    )
    write_report(questions, plan, seeds, args, base)
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archive", help="20news-bydate.tar.gz (or its extracted folder)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "study.yaml"), help="the base config")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/study"))
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "study.md", help="the report; PNGs beside it"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=[q.name for q in QUESTIONS], help="some questions only")
    parser.add_argument("--threads", type=int, help="train.num_threads of every run")
    parser.add_argument(
        "--smoke", action="store_true", help="the shipped 4-group sample, 1 epoch: a test run"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan and what is done, train nothing"
    )
    args = parser.parse_args(argv)
    if not args.smoke and not args.archive:
        parser.error("--archive is required (or --smoke for a test run on the shipped sample)")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    return args


def base_config(args: argparse.Namespace) -> Config:
    overrides = ["train.progress=false", "data.remove=[headers, footers, quotes]"]
    overrides += (
        [f"{key}={value}" for key, value in SMOKE.items()] if args.smoke else [f"data.archive={args.archive}"]
    )
    overrides += [f"train.num_threads={args.threads}"] if args.threads else []
    return absolute_paths(load_config(args.config, overrides))


def cells(base: Config, questions: Sequence[Question]) -> dict[str, Config]:
    """Configuration name -> config: ``base`` and one changed key per non-base level."""
    plan = {"base": base}
    for question in questions:
        for value in question.levels[1:]:
            plan[cell_name(question, value)] = apply(base, {question.key: value})
    return plan


def cell_name(question: Question, value: Any) -> str:
    if value == question.levels[0]:
        return "base"
    return f"{question.key}={str(value).lower() if isinstance(value, bool) else value}"


def run_dir(runs_dir: Path, name: str, seed: int) -> RunDir:
    return RunDir(runs_dir / name / f"seed-{seed}")


def train_cell(cfg: Config, name: str, seed: int, runs_dir: Path) -> None:
    folder = run_dir(runs_dir, name, seed)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
    if folder.config_file.is_file():
        saved = load_config(folder.config_file)
        requested = as_used(cfg, saved.embeddings.dim)  # the saved config says what was used
        difference = first_difference(requested.to_dict(), saved.to_dict(), NOT_COMPARED)
        if difference:
            sys.exit(
                f"{folder.path} was trained with another config ({difference}); "
                "remove it or use another --runs-dir"
            )
    finished = folder.metrics_file.is_file()
    started = time.perf_counter()
    with quiet_training():
        metrics = run_or_resume(cfg, folder.path)
    logger.info(
        "%-30s seed %d: test accuracy %.4f, train time %.0f s%s",
        name,
        seed,
        metrics["test"]["accuracy"],
        metrics["train_time_s"],
        " (done before)" if finished else f" ({time.perf_counter() - started:.0f} s wall)",
    )


def levels_of(question: Question, runs: dict[str, list[RunRecord]]) -> list[Level]:
    """The question's levels, from ``runs``: configuration name -> its runs, one per seed."""
    return [Level(value, runs[cell_name(question, value)]) for value in question.levels]


def question_table(levels: Sequence[Level]) -> tuple[list[str], list[list[Any]]]:
    base_time = levels[0].mean("time")
    headers = ["level", "test accuracy %", "test macro-F1 %", "train time s", "x base time", "epochs"]
    headers += ["parameters", "accuracy / s"]
    rows = []
    for level in levels:
        rows.append(
            [
                level.label + (" (base)" if level is levels[0] else ""),
                f"{level.mean('accuracy'):.2f} ± {level.std('accuracy'):.2f}",
                f"{level.mean('macro_f1'):.2f} ± {level.std('macro_f1'):.2f}",
                f"{level.mean('time'):.0f} ± {level.std('time'):.0f}",
                f"{level.mean('time') / base_time:.2f}x",
                f"{level.mean('epochs'):.1f}",
                level.runs[0].metrics["num_parameters"],
                f"{level.mean('per_second'):.2e}",
            ]
        )
    return headers, rows


def paired_difference(level: Level, other: Level) -> tuple[float, float, bool]:
    """Accuracy points ``level`` minus ``other``, seed by seed: mean, std, whether all seeds agree."""
    differences = [a - b for a, b in zip(level.values("accuracy"), other.values("accuracy"), strict=True)]
    spread = statistics.stdev(differences) if len(differences) > 1 else 0.0
    agree = len(differences) > 1 and (all(d > 0 for d in differences) or all(d < 0 for d in differences))
    return statistics.fmean(differences), spread, agree


def conclusions(question: Question, levels: Sequence[Level]) -> list[str]:
    """Plain sentences from the numbers: the winner, each level against the base, the cost."""
    by_accuracy = sorted(levels, key=lambda level: level.mean("accuracy"), reverse=True)
    best, runner_up = by_accuracy[0], by_accuracy[1]
    sentences = [compare_sentence(best, runner_up, "is the most accurate: it beats")]
    base = levels[0]
    for level in levels[1:]:
        if {id(level), id(base)} != {id(best), id(runner_up)}:  # said already
            sentences.append(compare_sentence(level, base, "against the base"))
    fastest = max(levels, key=lambda level: level.mean("per_second"))
    sentences.append(
        f"Most accuracy per second of training: {fastest.label} "
        f"({fastest.mean('accuracy'):.1f}% in {fastest.mean('time'):.0f} s)."
    )
    if question.noun:
        close = [level for level in levels if not paired_difference(best, level)[2] or level is best]
        smallest = min(close, key=lambda level: level.value)
        if smallest is not best:
            sentences.append(
                f"The smallest {question.noun} whose gap to the best is within "
                f"seed noise is {smallest.label}, "
                f"at {smallest.mean('time') / best.mean('time'):.2f}x the best's time."
            )
    return sentences


def compare_sentence(level: Level, other: Level, verb: str) -> str:
    mean, spread, agree = paired_difference(level, other)
    seeds = len(level.runs)
    verdict = (
        f"all {seeds} seeds agree"
        if agree
        else "within seed noise: the seeds disagree"
        if seeds > 1
        else "one seed"
    )
    ratio = level.mean("time") / other.mean("time")
    if verb == "against the base":
        return (
            f"{level.label} against {other.label} (the base): {mean:+.1f} ± {spread:.1f} points "
            f"at {ratio:.2f}x the training time ({verdict})."
        )
    return (
        f"{level.label} {verb} {other.label} by {mean:.1f} ± {spread:.1f} points "
        f"at {ratio:.2f}x the training time ({verdict})."
    )


def plot_question(question: Question, levels: Sequence[Level], path: Path) -> None:
    figure = Figure(figsize=(11, 4), layout="constrained")
    bars, scatter = figure.subplots(1, 2)
    labels = [level.label for level in levels]
    accuracy = [level.mean("accuracy") for level in levels]
    bars.bar(labels, accuracy, yerr=[level.std("accuracy") for level in levels], capsize=4, color="tab:blue")
    low = min(accuracy) - 3 * max(level.std("accuracy") for level in levels) - 2
    bars.set_ylim(max(0.0, low), max(accuracy) + 2)
    bars.set_ylabel("test accuracy % (mean ± std over seeds)")
    bars.set_title(question.title)
    for level in levels:
        scatter.errorbar(
            level.mean("time"),
            level.mean("accuracy"),
            xerr=level.std("time"),
            yerr=level.std("accuracy"),
            fmt="o",
        )
        scatter.annotate(
            level.label,
            (level.mean("time"), level.mean("accuracy")),
            textcoords="offset points",
            xytext=(5, 5),
        )
    scatter.set_xlabel("training time s")
    scatter.set_ylabel("test accuracy %")
    scatter.set_title("accuracy against training time")
    for axes in (bars, scatter):
        axes.grid(alpha=0.3)
    save_png(figure, path)


def baseline_line(runs: Sequence[RunRecord]) -> list[str]:
    """The score to beat: the built-in TF-IDF baseline of the base runs (same splits), if they have one."""
    scores = [100 * run.metrics["baseline"]["test"]["accuracy"] for run in runs if "baseline" in run.metrics]
    if len(scores) != len(runs):
        return []
    spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
    return [
        f"- the score to beat: the built-in TF-IDF baseline, fitted on the base runs' own splits, "
        f"{statistics.fmean(scores):.2f} ± {spread:.2f}% test accuracy"
    ]


def write_report(
    questions: Sequence[Question],
    plan: dict[str, Config],
    seeds: Sequence[int],
    args: argparse.Namespace,
    base: Config,
) -> None:
    images = args.out.parent / args.out.stem
    runs = {name: [load_run(run_dir(args.runs_dir, name, seed).path) for seed in seeds] for name in plan}
    data = "the shipped 4-group sample, SMOKE TEST (1 epoch)" if args.smoke else "20 Newsgroups, bydate split"
    lines = [
        "# LSTM or GRU, and how big? A controlled study on 20 Newsgroups",
        "",
        "Generated by `scripts/study.py` (its docstring holds the design and the cost); rerun it to",
        "reproduce or extend this page: finished runs are read back, not retrained.",
        "",
        f"- data: {data}, headers, footers and quotes removed",
        f"- base: `{Path(args.config).name}`: {base.model.name} hidden {base.model.hidden_size}, "
        f"{base.model.num_layers} layer(s), {'bi' if base.model.bidirectional else 'uni'}directional, "
        f"{base.model.pooling} pooling, {base.embeddings.source} embeddings, "
        f"up to {base.train.epochs} epochs (patience {base.train.patience} on {base.train.monitor})",
        f"- {len(plan)} configurations x {len(seeds)} seeds (train.seed {', '.join(map(str, seeds))}) = "
        f"{len(plan) * len(seeds)} runs; one factor changed at a time",
        f"- machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; generated {time.strftime('%Y-%m-%d')}",
        "- accuracy and macro-F1 on the test split in % (mean ± std over seeds); train time is the sum",
        "  of the epochs' times (training and validation); accuracy / s is test accuracy per second of it;",
        "  differences are paired by seed.",
        *baseline_line(runs["base"]),
        "",
    ]
    for question in questions:
        levels = levels_of(question, runs)
        headers, rows = question_table(levels)
        plot_question(question, levels, images / f"{question.name}.png")
        lines += [f"## {question.title}", "", f"`{question.key}`, one run per seed and level.", ""]
        lines += [tables.render(headers, rows, markdown=True), ""]
        lines += [f"![{question.name}]({images.name}/{question.name}.png)", ""]
        lines += ["**Conclusions** (written by the script from the numbers above):", ""]
        lines += [f"- {sentence}" for sentence in conclusions(question, levels)]
        lines += [""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    logger.info("wrote %s and %s/*.png", args.out, images)


if __name__ == "__main__":
    sys.exit(main())
