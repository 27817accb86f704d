"""The ``rnnkit`` command line: argument parsing and exit codes, no logic of its own.

Exit status: 0 on success; 2 with one line ``rnnkit: error: ...`` on stderr for anything the user
can fix (bad arguments, config, data, run folder, diverged training); 130 when interrupted, after
saying how to resume. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from rnnkit import __version__
from rnnkit.errors import RnnkitError, environment_fault, shorten
from rnnkit.openmp import choose_wait_policy

logger = logging.getLogger("rnnkit")

EXAMPLES = """examples:
  rnnkit train --config configs/quickstart.yaml
  rnnkit train --config configs/lstm.yaml --set data.archive=20news-bydate.tar.gz --set train.epochs=5
  rnnkit train --resume runs/lstm-20250101-120000
  rnnkit evaluate --run-dir runs/lstm-20250101-120000
  rnnkit predict --run-dir runs/lstm-20250101-120000 "The shuttle launch was delayed again."
  rnnkit predict --run-dir runs/lstm-20250101-120000 --quantize --file posts.txt
  rnnkit predict --run-dir runs/lstm-20250101-120000 --amp --file posts.txt
  rnnkit explain --run-dir runs/lstm-20250101-120000 "The shuttle launch was delayed again." --html why.html
  rnnkit compare runs/lstm-20250101-120000 runs/gru-20250101-130000 --plot curves.png
  rnnkit export --run-dir runs/lstm-20250101-120000 --format onnx --out exported/lstm
  rnnkit serve --run-dir runs/lstm-20250101-120000 --port 8000
"""

QUANTIZE_HELP = "run the model with int8 weights on the CPU (faster; scores may move slightly)"
AMP_HELP = (
    "run the matrix products in bfloat16 on CPUs that have it natively, float16 on CUDA "
    "(faster; scores may move slightly)"
)


class _UsageError(Exception):
    """A command line argparse cannot accept; reported like any other user error."""


def _path(text: str) -> str:
    """A path option's value: an empty one would silently mean the current folder, or nothing."""
    if not text:
        raise argparse.ArgumentTypeError("needs a path, got an empty string")
    return text


def _device(text: str) -> str:
    """A ``--device`` value, checked where the user typed it (the config's check names train.device)."""
    from rnnkit.runtime import DEVICE_NAMES, is_device_name

    if not is_device_name(text):
        raise argparse.ArgumentTypeError(f"{shorten(repr(text), 40)} is not a device; use {DEVICE_NAMES}")
    return text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # argparse's prints usage and exits
        raise _UsageError(f"{shorten(message, 200)} (see '{self.prog} --help')")  # it quotes the bad value


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand and return the process exit status."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(lambda record: _is_main_process())
    logger.addHandler(handler)
    escaping = contextlib.ExitStack()
    for stream in (sys.stdout, sys.stderr):
        escaping.enter_context(_unencodable_escaped(stream))
    try:
        args = build_parser().parse_args(argv)
        logger.setLevel(logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO)
        if choose_wait_policy():  # before any subcommand (or included package) imports torch
            logger.debug("other processes keep the CPUs busy: OpenMP threads sleep when idle (PASSIVE)")
        _include_packages(args.include_package)
        return args.handler(args)
    except (RnnkitError, _UsageError) as error:
        _report(" ".join(str(error).split()))
        return 2
    except OSError as error:  # a full disk, a read-only folder: one line; any other keeps its traceback
        fault = environment_fault(error)
        if fault is None:
            raise
        _report(" ".join(str(fault).split()))
        return 2
    except Exception:
        if _another_rank_reported():
            return 1
        raise
    finally:
        logger.removeHandler(handler)
        escaping.close()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rnnkit",
        description="Text classification with recurrent networks (SimpleRNN, LSTM, GRU).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    common = _Parser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    common.add_argument("-v", "--verbose", action="store_true", help="debug messages")
    common.add_argument(
        "--include-package",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, e.g. one that registers a model with @register_model (repeatable)",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND", parser_class=_Parser)

    train = commands.add_parser("train", parents=[common], help="train a model into a run folder")
    train.add_argument(
        "--config", type=_path, help="YAML config (see configs/); defaults apply to keys it leaves out"
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable)",
    )
    train.add_argument(
        "--run-dir", type=_path, help="where to write the run (default: runs/<config name>-<date>-<time>)"
    )
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint"
    )
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --run-dir")
    train.add_argument(
        "--init-from",
        metavar="RUN",
        help="start from a trained run's weights (same model settings; shared words keep their vectors, "
        "a different label list gets a new head); the same as --set train.init_from=RUN",
    )
    train.add_argument(
        "--callback",
        action="append",
        default=[],
        metavar="MODULE:NAME",
        help="add a rnnkit.training.Callback: the class (or function) NAME of MODULE, called without "
        "arguments (repeatable)",
    )
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", parents=[common], help="score a run's best model on a split")
    evaluate.add_argument("--run-dir", type=_path, required=True, help="a folder written by 'rnnkit train'")
    evaluate.add_argument("--split", choices=("test", "validation", "train"), help="default: test")
    evaluate.add_argument(
        "--data",
        type=_path,
        metavar="PATH",
        help="score labelled data instead: a folder per class, a .csv or a .jsonl",
    )
    evaluate.add_argument("--text-column", help="with --data: the text column (default: the run's)")
    evaluate.add_argument("--label-column", help="with --data: the label column (default: the run's)")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument("--quantize", action="store_true", help=QUANTIZE_HELP)
    evaluate.set_defaults(handler=_evaluate)

    predict = commands.add_parser(
        "predict",
        parents=[common],
        help="classify new texts",
        description="Print one line per document: LABEL<TAB>PROBABILITY (the K best pairs with --top-k), "
        "preceded by the line number of --file, or the file name when --file is a folder. A blank "
        "document keeps its row, with empty label fields. A multi-label run prints the pair of every "
        "label it predicts (none after the line number or file name when it predicts none), or the K "
        "best with --top-k.",
    )
    predict.add_argument("--run-dir", type=_path, required=True, help="a folder written by 'rnnkit train'")
    predict.add_argument("texts", nargs="*", metavar="TEXT", help="documents to classify")
    predict.add_argument(
        "--file",
        type=_path,
        help="a text file with one document per line (- reads standard input), or a folder of documents",
    )
    predict.add_argument("--top-k", type=int, metavar="K", help="show the K most probable classes")
    predict.add_argument("--device", type=_device, default="cpu", help="cpu (default), cuda, cuda:N or auto")
    predict.add_argument(
        "--output",
        type=_path,
        metavar="FILE",
        help="write one row per document to FILE (.jsonl or .csv) instead",
    )
    predict.add_argument("--with-text", action="store_true", help="include each document's text in --output")
    predict.add_argument("--quantize", action="store_true", help=QUANTIZE_HELP)
    predict.add_argument("--amp", action="store_true", help=AMP_HELP)
    predict.set_defaults(handler=_predict)

    ensemble = commands.add_parser(
        "ensemble",
        parents=[common],
        help="combine finished runs into one classifier (their probabilities averaged)",
        description="Score the runs' averaged class probabilities on their shared test split and write "
        "an ensemble folder that 'rnnkit predict', 'rnnkit evaluate' and rnnkit.load use like a run.",
    )
    ensemble.add_argument("runs", nargs="+", metavar="RUN", help="runs with the same labels and test data")
    ensemble.add_argument("--run-dir", type=_path, required=True, help="the ensemble folder to write")
    ensemble.add_argument(
        "--with-baseline",
        action="store_true",
        help="add the first run's TF-IDF baseline as one more member (one run is then enough)",
    )
    ensemble.add_argument("--overwrite", action="store_true", help="replace what is in --run-dir")
    ensemble.set_defaults(handler=_ensemble)

    explain = commands.add_parser(
        "explain",
        parents=[common],
        help="show which words made the model choose a class",
        description="Integrated-gradients attributions per token (Captum) for one text, or the words "
        "that drive each class over a split of the run's data. Needs: pip install 'rnnkit[explain]'.",
    )
    explain.add_argument("--run-dir", type=_path, required=True, help="a folder written by 'rnnkit train'")
    explain.add_argument("text", nargs="?", metavar="TEXT", help="the text to explain")
    explain.add_argument("--target", metavar="LABEL", help="explain this class instead of the predicted one")
    explain.add_argument("--html", type=_path, metavar="FILE", help="also write a self-contained HTML page")
    explain.add_argument("--json", action="store_true", help="print the result as JSON")
    explain.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    explain.add_argument("--split", choices=("test", "validation", "train"), help="explain a split instead")
    explain.add_argument("--top-words", type=int, default=20, metavar="K", help="words per class (--split)")
    explain.add_argument("--limit", type=int, metavar="N", help="explain N random documents of the split")
    explain.add_argument(
        "--png", type=_path, metavar="FILE", help="bar charts of --split (default top_words_SPLIT.png)"
    )
    explain.add_argument("--steps", type=int, help="integration steps (default 200)")
    explain.add_argument("--device", type=_device, default="cpu", help="cpu (default), cuda, cuda:N or auto")
    explain.set_defaults(handler=_explain)

    compare = commands.add_parser(
        "compare",
        parents=[common],
        help="compare runs side by side",
        description="One row per run: the config keys that differ, test and validation accuracy and "
        "macro-F1, parameters, train time, epochs. A tune study or a folder of runs stands for its runs.",
    )
    compare.add_argument(
        "runs", nargs="+", metavar="RUN", help="run folders, tune studies or folders of runs"
    )
    compare.add_argument(
        "--plot", type=_path, metavar="PNG", help="also draw every run's validation curves into PNG"
    )
    compare.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    compare.set_defaults(handler=_compare)

    tune = commands.add_parser(
        "tune",
        parents=[common],
        help="search hyperparameters with Optuna (pip install 'rnnkit[tune]')",
        description="Run trials (ordinary runs in STUDY_DIR/trials/N) until --trials have finished, "
        "pruning unpromising ones; write the trials table, best.yaml and plots into STUDY_DIR.",
    )
    tune.add_argument("--config", type=_path, help="the base YAML config the space's keys are set in")
    tune.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override")
    tune.add_argument("--space", type=_path, help="YAML search space, e.g. configs/tune-space.yaml")
    tune.add_argument("--trials", type=int, help="trials to finish (complete or pruned) in the study")
    tune.add_argument("--timeout", type=float, metavar="SECONDS", help="start no new trial after this")
    tune.add_argument(
        "--study-dir", type=_path, required=True, help="folder of the study (SQLite storage, trials)"
    )
    tune.add_argument("--resume", action="store_true", help="continue the study in --study-dir")
    tune.add_argument("--jobs", type=int, default=1, help="trials in parallel processes (default 1)")
    tune.add_argument("--pruner", choices=("median", "none"), default="median", help="default: median")
    tune.set_defaults(handler=_tune)

    export = commands.add_parser(
        "export",
        parents=[common],
        help="write a run's model as ONNX or TorchScript, to use without rnnkit",
        description="Write the model (dynamic batch and length), its vocabulary, tokenizer settings and "
        "labels as JSON, classify.py and a README into --out. ONNX needs: pip install 'rnnkit[export]'.",
    )
    export.add_argument("--run-dir", type=_path, required=True, help="a folder written by 'rnnkit train'")
    export.add_argument("--format", choices=("onnx", "torchscript"), required=True)
    export.add_argument("--out", type=_path, required=True, metavar="DIR", help="the folder to write")
    export.add_argument("--overwrite", action="store_true", help="replace an export already in --out")
    export.set_defaults(handler=_export)

    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="classify texts over HTTP (POST /predict, GET /health, GET /labels, /docs)",
        description="Serve a run with FastAPI + uvicorn, the model loaded once; requests that arrive "
        "together are classified in one batch. Needs: pip install 'rnnkit[serve]'.",
    )
    serve.add_argument("--run-dir", type=_path, required=True, help="a folder written by 'rnnkit train'")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--device", type=_device, default="cpu", help="cpu (default), cuda, cuda:N or auto")
    serve.add_argument("--amp", action="store_true", help=AMP_HELP)
    serve.add_argument("--quantize", action="store_true", help=QUANTIZE_HELP)
    serve.add_argument("--max-texts", type=int, default=64, help="texts per request (default 64)")
    serve.add_argument("--max-text-chars", type=int, default=100_000, help="characters per text")
    serve.add_argument("--max-body-bytes", type=int, default=2_000_000, help="request size (default 2 MB)")
    serve.add_argument("--batch-window-ms", type=float, default=2.0, help="how long a batch waits for more")
    serve.add_argument("--max-batch-texts", type=int, default=256, help="texts per forward pass")
    serve.add_argument("--no-batching", action="store_true", help="one forward pass per request")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(handler=_serve)
    return parser


def _train(args: argparse.Namespace) -> int:
    from rnnkit import distributed
    from rnnkit.config import load_config
    from rnnkit.runs import RunDir, default_run_dir
    from rnnkit.training import experiment
    from rnnkit.training.user_callbacks import load_callback

    if args.resume and (args.config or args.run_dir or args.overwrite or args.init_from):
        raise _UsageError(
            "--resume continues a run with its saved config; drop --config, --run-dir, --overwrite "
            "and --init-from"
        )
    run_dir = Path(args.resume or args.run_dir or default_run_dir(args.config))
    callbacks = [load_callback(spec) for spec in args.callback]
    try:
        if args.resume:
            metrics = experiment.resume(run_dir, args.set, callbacks)
        else:
            init = [f"train.init_from={args.init_from}"] if args.init_from else []
            cfg = load_config(args.config, [*args.set, *init])
            metrics = experiment.train(cfg, run_dir, overwrite=args.overwrite, callbacks=callbacks)
    except KeyboardInterrupt:
        latest = experiment.latest_checkpoint(run_dir)
        where = f"the last checkpoint is {latest}" if latest else "no checkpoint was written yet"
        _report(f"interrupted; {where}; continue with: rnnkit train --resume {run_dir}", prefix="rnnkit: ")
        return 130
    except OSError as error:  # a full disk mid-run: the run's setup is written, so it can continue
        resumable = RunDir(run_dir).config_file.exists()
        fault = environment_fault(error, then=f"continue with: rnnkit train --resume {run_dir}")
        if fault is None or not resumable:
            raise
        raise fault from None
    finally:
        distributed.cleanup()
    if distributed.is_main_process():
        baseline = metrics.get("baseline", {}).get("test")
        versus = (
            f"  (TF-IDF baseline {experiment.scores_text(baseline, metrics['task'])})" if baseline else ""
        )
        print(f"{experiment.headline(metrics)}{versus}  run folder: {run_dir}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from rnnkit.runs.ensemble import is_ensemble
    from rnnkit.training import ensemble, experiment, new_data

    if args.data and args.split:
        raise _UsageError("give --split or --data, not both")
    if not args.data and (args.text_column or args.label_column):
        raise _UsageError("--text-column and --label-column apply to --data")
    if is_ensemble(args.run_dir):
        if args.data:
            raise _UsageError("--data scores one run; give one of the ensemble's members as --run-dir")
        if args.quantize:
            raise _UsageError("--quantize scores one run; give one of the ensemble's members as --run-dir")
        result = ensemble.evaluate_ensemble(args.run_dir, args.split or "test")
        name = result["split"]
    elif args.data:
        result = new_data.evaluate_data(
            args.run_dir, args.data, args.text_column, args.label_column, quantize=args.quantize
        )
        name = args.data
    else:
        result = experiment.evaluate(args.run_dir, args.split or "test", quantize=args.quantize)
        name = result["split"]
    if args.json:
        print(json.dumps({key: value for key, value in result.items() if key != "report"}, indent=2))
        return 0
    metrics = result["metrics"]
    task = result["task"]
    scores = experiment.scores_text(metrics, task)
    if task == "multilabel":
        scores += f"  samples-F1 {metrics['samples_f1']:.4f}  Hamming loss {metrics['hamming_loss']:.4f}"
    of_what = f"best epoch {result['best_epoch']}" if result["best_epoch"] is not None else "ensemble"
    print(f"{name}: {scores}  loss {metrics['loss']:.4f}  ({of_what})")
    if result.get("unseen_labels"):
        print(new_data.unseen_summary(result))
    if "baseline" in result:
        baseline = result["baseline"]
        print(f"TF-IDF baseline ({baseline['model']}): {experiment.scores_text(baseline, task)}")
    print()
    print(result["report"])
    return 0


def _predict(args: argparse.Namespace) -> int:
    from rnnkit import load
    from rnnkit import prediction_io as pio

    if args.top_k is not None and args.top_k < 1:
        raise _UsageError(f"--top-k must be at least 1, got {shorten(str(args.top_k), 20)}")
    if args.file is not None and args.texts:
        raise _UsageError("give texts to classify or --file FILE, not both")
    if args.file is None and not args.texts:
        raise _UsageError("give texts to classify, or --file FILE (- for standard input)")
    if args.with_text and not args.output:
        raise _UsageError("--with-text applies to --output FILE")
    _check_int8(args)
    if args.output:
        pio.check_output(args.output)
    documents = pio.read_documents(args.texts, args.file)
    predictor = load(args.run_dir, device=args.device, quantize=args.quantize, amp=args.amp)
    label_sets = predictor.multilabel and args.top_k is None  # a multi-label run's own decision
    k = 0 if label_sets else min(args.top_k or 1, len(predictor.label_names))
    classify = predictor.predict_scored if label_sets else lambda texts: predictor.predict_top_k(texts, k)
    predicted = pio.predict_documents(documents, classify)
    if args.output:
        tally = pio.write_predictions(
            args.output, documents.source_name, predicted, args.with_text, k, label_sets=label_sets
        )
        logger.info("wrote %d predictions to %s", tally.rows, args.output)
    else:
        source_name = None if args.file is None else documents.source_name
        tally = pio.print_predictions(sys.stdout, source_name, predicted, k)
    if tally.blank:
        logger.info("%d blank documents (empty or only spaces) have a row without a prediction", tally.blank)
    pio.report_reading(documents, args.file)
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    from rnnkit.training.ensemble import create_ensemble

    metrics = create_ensemble(
        args.runs, args.run_dir, with_baseline=args.with_baseline, overwrite=args.overwrite
    )
    for member in metrics["members"]:
        print(f"member {member['run']}: test accuracy {member['test']['accuracy']:.4f}")
    baseline = metrics.get("baseline", {}).get("test")
    versus = f"  (TF-IDF baseline {baseline['accuracy']:.4f})" if baseline else ""
    test = metrics["test"]
    count = len(metrics["members"])
    members = f"{count} run{'s' if count > 1 else ''}" + (" and a baseline" if args.with_baseline else "")
    print(
        f"ensemble of {members}: test accuracy {test['accuracy']:.4f}  "
        f"macro-F1 {test['macro_f1']:.4f}{versus}  folder: {args.run_dir}"
    )
    return 0


def _explain(args: argparse.Namespace) -> int:
    from rnnkit.explain import command
    from rnnkit.prediction_io import without_surrogates

    if args.text is not None and args.split is not None:
        raise _UsageError("give a TEXT to explain or --split SPLIT, not both")
    if args.text is None and args.split is None:
        raise _UsageError("give a TEXT to explain, or --split SPLIT for the words that drive each class")
    if args.split is None:
        colour = args.color == "always" or (
            args.color == "auto" and sys.stdout.isatty() and "NO_COLOR" not in os.environ
        )
        text = without_surrogates(args.text)  # its tokens are printed and written as UTF-8
        if text != args.text:
            logger.warning(
                "TEXT had bytes that are not UTF-8 (replaced by U+FFFD); check your terminal's encoding"
            )
        print(
            command.explain_text(
                args.run_dir, text, args.target, args.steps, args.device, args.json, colour, args.html
            )
        )
        return 0
    png = args.png or f"top_words_{args.split}.png"
    print(
        command.explain_split(
            args.run_dir, args.split, args.top_words, args.limit, args.steps, args.device, args.json, png
        )
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    from rnnkit import compare, tables

    records = compare.load_runs(args.runs)
    print(tables.render(*compare.table(records), markdown=args.markdown))
    if args.plot:
        compare.plot_curves(records, args.plot)
        logger.info("validation curves of %d runs: %s", len(records), args.plot)
    return 0


def _tune(args: argparse.Namespace) -> int:
    from rnnkit.tune.study import tune

    try:
        result = tune(
            args.study_dir,
            config=args.config,
            overrides=args.set,
            space=args.space,
            trials=args.trials,
            timeout_s=args.timeout,
            jobs=args.jobs,
            pruner=args.pruner,
            resume=args.resume,
            verbose=args.verbose,
            packages=tuple(args.include_package),
        )
    except KeyboardInterrupt:
        _report(
            f"interrupted; continue with: rnnkit tune --resume --study-dir {args.study_dir}",
            prefix="rnnkit: ",
        )
        return 130
    print(result.table)
    print("\n".join(result.notes))
    return 0


def _export(args: argparse.Namespace) -> int:
    from rnnkit.export import export_run
    from rnnkit.runs import open_run

    manifest = export_run(open_run(args.run_dir), args.format, args.out, overwrite=args.overwrite)
    print(
        f"wrote {Path(args.out) / manifest['model_file']} and its vocabulary, tokenizer, labels, classify.py "
        f"and README.md (checked against the model: max difference {manifest['checked_max_difference']:.1e})"
    )
    return 0


def _check_int8(args: argparse.Namespace) -> None:
    """``--quantize`` (predict, serve): int8 runs on the CPU, with float32 inputs."""
    if args.quantize and args.device != "cpu":
        raise _UsageError(f"--quantize runs the model on the CPU; drop --device {args.device} or --quantize")
    if args.quantize and args.amp:
        raise _UsageError("choose --quantize or --amp, not both: int8 layers take float32 inputs")


def _serve(args: argparse.Namespace) -> int:
    from rnnkit.serve import ServeSettings, serve

    _check_int8(args)
    settings = ServeSettings(
        max_texts=args.max_texts,
        max_text_chars=args.max_text_chars,
        max_body_bytes=args.max_body_bytes,
        batch_window_ms=args.batch_window_ms,
        max_batch_texts=args.max_batch_texts,
        batching=not args.no_batching,
        amp=args.amp,
    )
    serve(args.run_dir, args.host, args.port, args.device, settings, args.access_log, quantize=args.quantize)
    return 0


def _report(message: str, prefix: str = "rnnkit: error: ") -> None:
    """Print on stderr once per job (under torchrun every rank may fail with the same error)."""
    from rnnkit import distributed

    if distributed.claim_error_report():
        print(f"{prefix}{message}", file=sys.stderr)


def _include_packages(modules: Sequence[str]) -> None:
    """Import user modules (from the current directory too) so their registered models exist."""
    if modules and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            raise RnnkitError(
                f"--include-package {module}: no module named {error.name!r}; "
                "give an importable module name (a file my_models.py in the current folder is my_models)"
            ) from None


@contextlib.contextmanager
def _unencodable_escaped(stream: TextIO) -> Iterator[None]:
    """Print what ``stream``'s encoding cannot hold as escapes (``\\udcff``), as Python's stderr does.

    A path that is not UTF-8 (Python holds its bytes as lone surrogates) would otherwise fail the
    line that names it, after all the work is done.
    """
    if not isinstance(stream, io.TextIOWrapper):
        yield
        return
    errors = stream.errors
    stream.reconfigure(errors="backslashreplace")
    try:
        yield
    finally:
        stream.reconfigure(errors=errors)


def _is_main_process() -> bool:
    """Under ``torchrun`` every rank runs this CLI; only global rank 0 logs and prints results.

    Imported on first use so that ``rnnkit --help`` does not load torch.distributed.
    """
    from rnnkit import distributed

    return distributed.is_main_process()


def _another_rank_reported() -> bool:
    """Under ``torchrun``, whether a peer already reported the failure that is ending the job.

    A rank whose collective broke because a peer died would otherwise add its own traceback.
    """
    from rnnkit import distributed

    return not distributed.claim_error_report()
