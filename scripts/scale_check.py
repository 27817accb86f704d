"""Corpora larger than memory: prepare and train on 20 Newsgroups replicated to millions of documents.

For each size, writes a JSONL corpus (the 18,846 bydate posts with headers, footers and quotes
removed, empty ones skipped, repeated in order; labels are the newsgroup names), then in fresh
processes, each with its own cache folder:

* ``prepare``: ``prepare_data`` from the JSONL file to the cached token store (read, tokenise
  with ``data.num_workers`` processes, count, encode): wall time and peak resident memory of the
  main process and of the largest worker;
* ``epoch``: ``rnnkit train`` for one epoch on the cached corpus (``--train-set`` picks the model;
  the default is a small one, so the check measures the data path rather than the recurrence):
  the epoch's time (training and validation) from ``history.csv``, the whole command's wall time
  and peak memory.

    python scripts/scale_check.py --archive 20news-bydate.tar.gz --documents 1000000 5000000
    python scripts/scale_check.py --archive 20news-bydate.tar.gz --documents 20000 --no-epoch   # quick

Needs about 1.2 KB of disk per document for the JSONL file and 2 KB during preparation (removed
with ``--clean``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

PREPARE = """
import json, resource, sys, time
from rnnkit.config import load_config
from rnnkit.data import prepare_data
start = time.perf_counter()
data = prepare_data(load_config(None, sys.argv[1:]))
seconds = time.perf_counter() - start
print(json.dumps({
    "seconds": seconds,
    "main_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "worker_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    "tokens": int(data.train.store.lengths.sum()),  # every document of the corpus
    "stats": data.stats,
}))
"""

SMALL_MODEL = [
    "model.name=gru",
    "model.hidden_size=64",
    "model.bidirectional=false",
    "model.pooling=max",
    "embeddings.source=random",
    "embeddings.dim=50",
    "data.max_length=128",
    "train.batch_size=128",
    "train.eval_batch_size=512",
    "train.baseline=false",  # the TF-IDF baseline's own fit grows with the corpus: not the data path
]


def write_corpus(archive: str, documents: int, path: Path) -> None:
    """``documents`` lines of ``{"text", "label"}``: the cleaned 20 Newsgroups posts, repeated."""
    from rnnkit.data.newsgroups import load_20newsgroups

    posts = load_20newsgroups("all", archive=archive, remove=("headers", "footers", "quotes"))
    lines = [
        json.dumps({"text": text, "label": posts.label_names[label]}) + "\n"
        for text, label in zip(posts.texts, posts.labels, strict=True)
        if text.strip()
    ]
    partial = path.with_suffix(".partial")
    with open(partial, "w", encoding="utf-8") as out:
        for index in range(documents):
            out.write(lines[index % len(lines)])
    partial.rename(path)


def run_json(command: list[str]) -> tuple[dict, float]:
    started = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def epoch(corpus: Path, cache: Path, run_dir: Path, overrides: list[str]) -> dict[str, float]:
    """One training epoch in a fresh process: epoch seconds, command seconds, peak memory."""
    command = [
        sys.executable,
        "-m",
        "rnnkit",
        "train",
        "--run-dir",
        str(run_dir),
        "--overwrite",
        *(arg for o in overrides for arg in ("--set", o)),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "RNNKIT_CACHE": str(cache)}
    )
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(run_dir / "history.csv", encoding="utf-8") as handle:
        record = list(csv.DictReader(handle))[-1]
    return {
        "epoch_s": float(record["epoch_time_s"]),
        "train_command_s": wall,
        # ru_maxrss of children is the largest child so far: exact when it grew with this run
        "train_rss_gb": peak / 1e6 if peak > before else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archive", required=True, help="20news-bydate.tar.gz")
    parser.add_argument("--documents", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--workdir", default="scale-check", help="corpora, caches and runs go here")
    parser.add_argument("--workers", type=int, default=0, help="data.num_workers (0: one per core)")
    parser.add_argument("--no-epoch", action="store_true", help="only prepare the data")
    parser.add_argument(
        "--train-set",
        nargs="*",
        default=SMALL_MODEL,
        metavar="KEY=VALUE",
        help=f"overrides for the epoch run (default: {' '.join(SMALL_MODEL)})",
    )
    parser.add_argument("--clean", action="store_true", help="delete each size's files when done")
    parser.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    args = parser.parse_args(argv)
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{os.cpu_count()} CPU cores; data.num_workers={args.workers}", flush=True)
    for documents in args.documents:
        corpus = work / f"newsgroups-{documents}.jsonl"
        if not corpus.exists():
            print(f"writing {corpus} ...", flush=True)
            write_corpus(args.archive, documents, corpus)
        cache = work / f"cache-{documents}"
        subprocess.run(["rm", "-rf", str(cache)], check=True)
        data = [
            "data.dataset=jsonl",
            f"data.path={corpus}",
            f"data.cache_dir={cache}",
            f"data.num_workers={args.workers}",
        ]
        overrides = [*data, *args.train_set, "train.epochs=1", "train.progress=false"]
        prepared, _ = run_json([sys.executable, "-c", PREPARE, *overrides])
        row: dict[str, float | int] = {
            "documents": documents,
            "corpus_gb": corpus.stat().st_size / 1e9,
            "tokens_m": (prepared["tokens"]) / 1e6,
            "prepare_s": prepared["seconds"],
            "prepare_main_rss_gb": prepared["main_rss_kb"] / 1e6,
            "prepare_worker_rss_gb": prepared["worker_rss_kb"] / 1e6,
        }
        print(json.dumps(row), flush=True)
        if not args.no_epoch:
            row.update(epoch(corpus, cache, work / f"run-{documents}", overrides))
            print(json.dumps(row), flush=True)
        rows.append(row)
        if args.clean:
            subprocess.run(["rm", "-rf", str(cache), str(corpus), str(work / f"run-{documents}")], check=True)
    print(markdown(rows, args))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "| documents | JSONL | tokens | prepare | prepare peak RSS (main / worker) "
        "| epoch (train + validation) | train command | train peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        epoch_cells = (
            f"{r['epoch_s']:,.0f} s | {r['train_command_s']:,.0f} s | {r['train_rss_gb']:.2f} GB"
            if "epoch_s" in r
            else "- | - | -"
        )
        lines.append(
            f"| {r['documents']:,} | {r['corpus_gb']:.2f} GB | {r['tokens_m']:,.0f} M "
            f"| {r['prepare_s']:,.0f} s "
            f"| {r['prepare_main_rss_gb']:.2f} / {r['prepare_worker_rss_gb']:.2f} GB | {epoch_cells} |"
        )
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        scale = last["documents"] / first["documents"]
        lines.append(
            f"\n{last['documents']:,} / {first['documents']:,} documents = {scale:.1f}x: prepare time "
            f"{last['prepare_s'] / first['prepare_s']:.2f}x"
            + (f", epoch time {last['epoch_s'] / first['epoch_s']:.2f}x" if "epoch_s" in last else "")
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
