"""Property-based fuzzing of the command line and the HTTP server: a result, or one line saying what to fix.

Users type paths that are folders, files, missing or under a file, point options at files of every
kind (empty, binary, UTF-16, malformed CSV and JSON lines, one huge line) and give numbers that
are not numbers. Each example runs ``rnnkit.cli.main`` in-process on a tiny finished run, an
untouched copy of it and an ensemble of the two, and checks the rule of :mod:`rnnkit.errors`:
exit status 0 with well-formed output, or 2 with one short ``rnnkit: error:`` line and no
traceback. Either way the runs are byte for byte what they were; after a failure every file the
example started with is too, and no temporary file is left behind. ``rnnkit serve`` answers any
request body with a 200 or a 4xx JSON error of one line, never a 500.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fuzzing import fuzz
from hypothesis import HealthCheck, event, given
from hypothesis import strategies as st
from test_fuzz_text import any_text, file_bytes, file_text, json_values

from rnnkit.cli import main

ERROR = "rnnkit: error: "
LONGEST_ERROR = 300
"""Characters of an error line, with the example's folder written as ``<tmp>``."""

Files = dict[str, bytes]
"""Relative path in the example's folder -> contents (a name ending in ``/`` is an empty folder)."""


@dataclass(frozen=True, repr=False)
class Runs:
    """The finished runs every example may read and none may change."""

    root: Path
    run: Path
    other: Path
    ensemble: Path
    labels: list[str]
    contents: dict[Path, Files]

    def __repr__(self) -> str:  # hypothesis shows it with each failing example
        return f"Runs({self.root})"

    def placeholders(self) -> dict[str, str]:
        return {"<run>": str(self.run), "<other>": str(self.other), "<ensemble>": str(self.ensemble)}


@pytest.fixture(scope="module")
def runs(finished_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Two copies of the session's finished run and an ensemble of them, made once for the module."""
    root = tmp_path_factory.mktemp("fuzz-cli")
    run, other, ensemble = root / "run", root / "other", root / "ensemble"
    shutil.copytree(finished_run, run)
    shutil.copytree(finished_run, other)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RNNKIT_CACHE", str(root / "cache"))
        assert main(["ensemble", "-q", str(run), str(other), "--run-dir", str(ensemble)]) == 0
    labels = json.loads((run / "labels.json").read_text(encoding="utf-8"))
    return Runs(root, run, other, ensemble, labels, {path: snapshot(path) for path in (run, other, ensemble)})


@pytest.fixture(autouse=True)
def shared_cache(runs: Runs, monkeypatch: pytest.MonkeyPatch) -> None:
    """One tokenised-corpus cache for every example: the runs' data is read once."""
    monkeypatch.setenv("RNNKIT_CACHE", str(runs.root / "cache"))


def snapshot(folder: Path) -> Files:
    """Every file under ``folder`` with its bytes."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()
    }


# ------------------------------------------------------------------------------------ what users give

BOMS = [codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE]
HUGE_LINE = b"nasa " * 40_000


@st.composite
def text_files(draw: st.DrawFn, labels: list[str]) -> bytes:
    """A document file as people make them: text, binary, UTF-16, one huge line, blank lines."""
    kind = draw(st.sampled_from(["text", "bytes", "bom", "huge", "labels"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "bom":
        bom = draw(st.sampled_from(BOMS))
        codec = {2: "utf-16-le", 3: "utf-8"}.get(len(bom), "utf-32-le")
        codec = "utf-16-be" if bom == codecs.BOM_UTF16_BE else codec
        return bom + draw(st.text(max_size=40)).encode(codec) + draw(st.binary(max_size=5))
    if kind == "huge":
        return HUGE_LINE + draw(file_bytes)
    if kind == "labels":
        return "\n".join(
            draw(st.lists(st.sampled_from([*labels, "nasa launch", "", " "]), max_size=6))
        ).encode()
    return draw(file_bytes)


@st.composite
def csv_files(draw: st.DrawFn, labels: list[str]) -> bytes:
    """A labelled CSV: the run's labels or others, any header, odd quoting, or not CSV at all."""
    if draw(st.booleans()):
        return draw(text_files(labels))
    header = draw(st.sampled_from([["text", "label"], ["label", "text"], ["text"], ["body", "y"], []]))
    rows = draw(
        st.lists(
            st.lists(file_text | st.sampled_from(labels) | st.text(max_size=5), min_size=0, max_size=3),
            max_size=8,
        )
    )
    buffer = io.StringIO(newline="")
    csv.writer(buffer, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))).writerows(
        [header, *rows] if header else rows
    )
    return buffer.getvalue().encode("utf-8", "surrogatepass")


@st.composite
def jsonl_files(draw: st.DrawFn, labels: list[str]) -> bytes:
    """JSON lines of records with labels of every type, broken lines and blank ones among them."""
    if draw(st.booleans()):
        return draw(text_files(labels))
    record = st.fixed_dictionaries(
        {},
        optional={
            "text": file_text | any_text | json_values,
            "label": st.sampled_from(labels) | json_values | st.lists(st.sampled_from(labels), max_size=2),
        },
    )
    lines = draw(
        st.lists(record.map(json.dumps) | st.sampled_from(["", "{", "[1, 2]", "null", "  "]), max_size=8)
    )
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@st.composite
def example_files(draw: st.DrawFn, labels: list[str]) -> Files:
    """The example's folder: inputs of each kind, class folders, and earlier outputs to keep safe."""
    class_files = st.dictionaries(
        st.sampled_from([*labels, "other"]).map(lambda label: f"classes/{label}/")
        .flatmap(lambda folder: st.sampled_from(["a.txt", "b", ".hidden", "sub/c.txt"]).map(folder.__add__)),
        text_files(labels),
        max_size=5,
    )  # fmt: skip
    files = {
        "docs.txt": draw(text_files(labels)),
        "data.csv": draw(csv_files(labels)),
        "data.jsonl": draw(jsonl_files(labels)),
        "empty.txt": b"",
        "empty-folder/": b"",
        "earlier.csv": b"line,label\n1,space\n",
        "earlier.jsonl": b'{"line": 1, "label": "space"}\n',
        "earlier.png": b"\x89PNG earlier",
        "earlier.html": b"<p>earlier</p>",
        "earlier-export/export.json": b"{}",
    }
    return files | draw(class_files)


def materialise(folder: Path, files: Files) -> None:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_bytes(data)


ODD_NAMES = ["", ".", "-", "..", "~", "space", "a b", "ünï\tcödé", "line\nbreak", "x" * 300, "\udcff"]
RUN_PATHS = ["<run>", "<other>", "<ensemble>", "<run>/", "<run>/config.yaml", "<run>/checkpoints",
             "<run>/metrics.json", "<run>/history.csv", "<ensemble>/ensemble.json"]  # fmt: skip
LOCAL_PATHS = ["docs.txt", "data.csv", "data.jsonl", "empty.txt", "empty-folder", "classes", "earlier.csv",
               "earlier-export", "missing.txt", "missing.csv", "missing/", "docs.txt/below.csv",
               "<tmp>"]  # fmt: skip
INPUT_PATHS = [*LOCAL_PATHS, "/dev/null"]  # not "/": a folder of documents or runs is walked whole
OUTPUT_NAMES = ["out", "earlier", "empty-folder", "classes", "docs.txt/out", "new/deeper/out", "missing/"]


def names(suffixes: list[str]) -> st.SearchStrategy[str]:
    """A file or folder name with one of ``suffixes``: plain, odd, or any text."""
    stem = st.sampled_from(OUTPUT_NAMES + ODD_NAMES) | st.text(max_size=12)
    return st.builds("{}{}".format, stem, st.sampled_from(suffixes))


def paths(suffixes: list[str]) -> st.SearchStrategy[str]:
    """Where a path option may point: a run or its files, the example's inputs, odd names."""
    return st.sampled_from(RUN_PATHS + INPUT_PATHS) | names(suffixes) | names(suffixes).map("<tmp>/{}".format)


def outputs(suffixes: list[str]) -> st.SearchStrategy[str]:
    """Where an output option may point: the example's folder, never a run (whose files are the
    user's to overwrite) nor anything outside (a bug could replace /dev/null or empty a folder)."""
    inside = names(suffixes).filter(lambda name: name.rstrip("/") != "..")
    return inside | inside.map("<tmp>/{}".format) | st.sampled_from(LOCAL_PATHS)


def numbers(low: int = -2, high: int = 6) -> st.SearchStrategy[str]:
    """A number option as typed: small, huge, or not a number."""
    typed = ["", "two", "1.5", "1e3", " 3", "３", "0x10", "-0", "nan", "9" * 30, "-" + "9" * 3000, "9x" * 999]
    return st.integers(low, high).map(str) | st.integers().map(str) | st.sampled_from(typed)


argv_text = st.text(max_size=40) | st.binary(max_size=20).map(os.fsdecode) | file_text
"""A command-line word: any text a shell can pass (bytes that are not UTF-8 arrive as surrogates)."""
devices = st.sampled_from(["cpu", "auto", "cuda", "cuda:0", "cuda:-1", "cpu:0", "CPU", "mps", "gpu", ""])
common = st.lists(st.sampled_from(["-q", "-v"]), max_size=1)


@st.composite
def options(draw: st.DrawFn, *groups: tuple[str, st.SearchStrategy[Any] | None]) -> list[str]:
    """Some of the options ``groups`` (a flag when its values are None), in any order."""
    chosen = draw(st.lists(st.sampled_from(groups), max_size=len(groups), unique_by=lambda g: g[0]))
    argv = []
    for flag, values in chosen:
        argv += [flag] if values is None else [flag, draw(values)]
    return argv


def run_dirs() -> st.SearchStrategy[str]:
    """Mostly the finished run, so that most examples get past opening it."""
    return st.sampled_from(["<run>"] * 6 + ["<ensemble>"] * 2) | paths(["", "/", ".csv"])


# -------------------------------------------------------------------------------------- the property


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str
    argv: list[str]
    folder: Path
    before: Files


def run_cli(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str], files: Files, argv: list[str]
) -> Outcome:
    """``rnnkit ARGV`` in a new folder holding ``files``, checked against the rule of rnnkit.errors."""
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    materialise(folder, files)
    argv = [resolve(arg, runs, folder) for arg in argv]
    before = snapshot(folder)
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        code = main(argv)
    out, err = capsys.readouterr()
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err, err
    for run, contents in runs.contents.items():
        assert snapshot(run) == contents, f"{run} changed: {argv}"
    leftovers = [path for path in [*folder.rglob(".*.tmp"), *runs.root.rglob(".*.tmp")] if path.is_file()]
    assert not leftovers, (argv, leftovers)
    if code == 2:
        event("exit 2")
        _assert_one_error_line(err, folder, argv)
        assert snapshot(folder) == before, f"a failed command changed files: {argv}"
    else:
        event("exit 0")
        assert ERROR not in err, err
    return Outcome(code, out, err, argv, folder, before)


def resolve(arg: str, runs: Runs, folder: Path) -> str:
    """``arg`` with its placeholders filled in: relative paths stay relative (to ``folder``)."""
    for placeholder, value in {**runs.placeholders(), "<tmp>": str(folder)}.items():
        arg = arg.replace(placeholder, value)
    return arg


def _assert_one_error_line(err: str, folder: Path, argv: list[str]) -> None:
    """Progress lines may come first; the error is the last line, alone, and short."""
    errors = [line for line in err.split("\n") if line.startswith(ERROR)]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n"), (argv, err)
    shown = errors[0].replace(str(folder), "<tmp>").replace(str(folder.parent.parent), "<tmp>")
    assert len(shown) <= LONGEST_ERROR, (argv, errors[0])


def unchanged_except(outcome: Outcome, *outputs: str | None) -> None:
    """After a success, the files the example started with are as they were, but for ``outputs``."""
    written = [Path(outcome.folder, path).absolute() for path in outputs if path]
    after = snapshot(outcome.folder)
    for name, data in outcome.before.items():
        path = (outcome.folder / name).absolute()
        if not any(path == out or out in path.parents for out in written):
            assert after.get(name) == data, f"{name} changed: {outcome.argv}"


def option(argv: list[str], flag: str) -> str | None:
    """The value of ``flag`` in ``argv`` (the last one given), or None."""
    values = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == flag]
    return values[-1] if values else None


# ------------------------------------------------------------------------------------------ commands


LABELS = ["hockey", "mideast", "space"]
"""The finished run's labels (``test_trainer.TOPICS``), for strategies made before the fixture."""

files_strategy = example_files(LABELS)


@st.composite
def predict_argv(draw: st.DrawFn) -> list[str]:
    argv = ["predict", *draw(common), "--run-dir", draw(run_dirs())]
    source = draw(st.sampled_from(["texts", "file"] * 4 + ["both", "none"]))
    texts = draw(st.lists(argv_text, min_size=1, max_size=4))
    if source in ("file", "both"):
        argv += ["--file", draw(paths([".txt", "", "/"]))]
    argv += draw(
        options(
            ("--top-k", numbers()),
            ("--device", devices),
            ("--output", outputs([".csv", ".jsonl", ".CSV", ".txt", ""])),
            ("--with-text", None),
            ("--quantize", None),
            ("--amp", None),
        )
    )
    if source in ("texts", "both"):
        argv += ["--", *texts] if draw(st.booleans()) else texts
    return argv


@fuzz(120, HealthCheck.too_slow, HealthCheck.data_too_large)
@given(files=files_strategy, argv=predict_argv())
def test_predict_with_any_arguments_writes_a_row_per_document_or_one_error_line(
    runs, tmp_path, capsys, files, argv
):
    outcome = run_cli(runs, tmp_path, capsys, files, argv)
    if outcome.code == 0:
        output = option(outcome.argv, "--output")
        unchanged_except(outcome, output)
        rows = _output_rows(outcome.folder / output) if output else _printed_rows(outcome.out)
        _assert_predictions(rows, runs.labels)


def _printed_rows(out: str) -> list[list[tuple[str, float]]]:
    """The ``LABEL<TAB>PROBABILITY`` pairs of each printed line (after its line number or file name)."""
    rows = []
    for line in out.split("\n")[:-1]:
        fields = line.split("\t")
        pairs = fields[len(fields) % 2 :]
        rows.append([(label, float(p)) for label, p in zip(pairs[::2], pairs[1::2], strict=True) if label])
    return rows


def _output_rows(path: Path) -> list[list[tuple[str, float]]]:
    """The label and probability pairs of each row of a written ``--output`` file."""
    if path.suffix.lower() == ".jsonl":
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        return [[(pair["label"], pair["probability"]) for pair in record["top_k"]] for record in records]
    with path.open(newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    return [
        [
            (record[key], float(record[key.replace("label", "probability")]))
            for key in record
            if key.startswith("label") and record[key]
        ]
        for record in records
    ]


def _assert_predictions(rows: list[list[tuple[str, float]]], labels: list[str]) -> None:
    assert rows, "a successful predict has at least one row"
    for pairs in rows:
        assert all(label in labels and 0.0 <= p <= 1.0 and math.isfinite(p) for label, p in pairs), pairs
        probabilities = [p for _, p in pairs]
        assert probabilities == sorted(probabilities, reverse=True)


@st.composite
def evaluate_argv(draw: st.DrawFn) -> list[str]:
    argv = ["evaluate", *draw(common), "--run-dir", draw(run_dirs())]
    return argv + draw(
        options(
            ("--split", st.sampled_from(["test", "validation", "train", "dev", ""])),
            ("--data", paths([".csv", ".jsonl", ".txt", "/", ".CSV", ".JSONL"])),
            ("--text-column", st.sampled_from(["text", "label", "body", ""]) | argv_text),
            ("--label-column", st.sampled_from(["text", "label", "y", ""]) | argv_text),
            ("--json", None),
            ("--quantize", None),
        )
    )


@fuzz(120, HealthCheck.too_slow, HealthCheck.data_too_large)
@given(files=files_strategy, argv=evaluate_argv())
def test_evaluate_with_any_arguments_prints_scores_or_one_error_line(runs, tmp_path, capsys, files, argv):
    outcome = run_cli(runs, tmp_path, capsys, files, argv)
    if outcome.code == 0:
        unchanged_except(outcome)
        if "--json" in argv:
            result = json.loads(outcome.out)
            assert 0.0 <= result["metrics"]["accuracy"] <= 1.0
        else:
            assert "accuracy" in outcome.out.split("\n")[0]


@st.composite
def explain_argv(draw: st.DrawFn) -> list[str]:
    argv = ["explain", *draw(common), "--run-dir", draw(run_dirs())]
    mode = draw(st.sampled_from(["text", "split"] * 4 + ["both", "none"]))
    if mode in ("split", "both"):
        argv += ["--split", draw(st.sampled_from(["test", "validation", "train", "dev"]))]
    argv += draw(
        options(
            ("--target", st.sampled_from(LABELS) | argv_text),
            ("--html", outputs([".html", ".htm", ""])),
            ("--png", outputs([".png", ".PNG", ".jpg", ".svg", ""])),
            ("--json", None),
            ("--color", st.sampled_from(["auto", "always", "never", "sometimes"])),
            ("--top-words", numbers()),
            ("--limit", numbers(-1, 4)),
            ("--steps", numbers(-1, 8)),
            ("--device", devices),
        )
    )
    if mode in ("text", "both"):
        argv += ["--", draw(argv_text)] if draw(st.booleans()) else [draw(argv_text)]
    return argv


@fuzz(100, HealthCheck.too_slow, HealthCheck.data_too_large)
@given(files=files_strategy, argv=explain_argv())
def test_explain_with_any_arguments_writes_its_report_or_one_error_line(runs, tmp_path, capsys, files, argv):
    outcome = run_cli(runs, tmp_path, capsys, files, argv)
    if outcome.code == 0:
        html, png = option(outcome.argv, "--html"), option(outcome.argv, "--png")
        split = option(outcome.argv, "--split")
        default_png = f"top_words_{split}.png" if split and not png else None
        unchanged_except(outcome, html if not split else None, png if split else None, default_png)
        if "--json" in argv:
            assert isinstance(json.loads(outcome.out), dict)
        if split:
            assert (outcome.folder / (png or default_png)).read_bytes().startswith(b"\x89PNG")
        elif html:
            assert "<html" in (outcome.folder / html).read_text(encoding="utf-8")


@st.composite
def export_argv(draw: st.DrawFn) -> list[str]:
    argv = ["export", *draw(common), "--run-dir", draw(run_dirs())]
    argv += ["--format", draw(st.sampled_from(["torchscript", "onnx"] * 3 + ["pickle"]))]
    argv += ["--out", draw(outputs(["", "/", ".onnx"]))]
    return argv + draw(options(("--overwrite", None)))


@fuzz(60, HealthCheck.too_slow, HealthCheck.data_too_large)
@given(files=files_strategy, argv=export_argv())
def test_export_with_any_arguments_writes_a_whole_export_or_one_error_line(
    runs, tmp_path, capsys, files, argv
):
    outcome = run_cli(runs, tmp_path, capsys, files, argv)
    if outcome.code == 0:
        out = outcome.folder / option(outcome.argv, "--out")
        unchanged_except(outcome, str(out))
        manifest = json.loads((out / "export.json").read_text(encoding="utf-8"))
        for name in (manifest["model_file"], "vocab.json", "labels.json", "classify.py", "README.md"):
            assert (out / name).is_file()


@st.composite
def compare_argv(draw: st.DrawFn) -> list[str]:
    runs = draw(
        st.lists(
            st.sampled_from(["<run>", "<other>", "<ensemble>"]) | paths(["", "/"]), min_size=1, max_size=3
        )
    )
    argv = ["compare", *draw(common), *runs]
    return argv + draw(options(("--plot", outputs([".png", ".pdf", ""])), ("--markdown", None)))


@fuzz(60, HealthCheck.too_slow, HealthCheck.data_too_large)
@given(files=files_strategy, argv=compare_argv())
def test_compare_with_any_arguments_prints_a_table_or_one_error_line(runs, tmp_path, capsys, files, argv):
    outcome = run_cli(runs, tmp_path, capsys, files, argv)
    if outcome.code == 0:
        plot = option(outcome.argv, "--plot")
        unchanged_except(outcome, plot)
        assert outcome.out.strip()
        if plot:
            assert (outcome.folder / plot).read_bytes().startswith(b"\x89PNG")


@st.composite
def ensemble_argv(draw: st.DrawFn) -> list[str]:
    runs = draw(st.permutations(["<run>", "<other>"]))[: 1 if draw(st.integers(0, 3)) == 0 else 2]
    others = draw(st.lists(st.sampled_from(["<ensemble>", "<run>"]) | paths(["", "/"]), max_size=1))
    argv = ["ensemble", *draw(common), *draw(st.permutations(runs + others))]
    argv += ["--run-dir", draw(outputs(["", "/"]))]
    return argv + draw(options(("--with-baseline", None), ("--overwrite", None)))


@fuzz(60, HealthCheck.too_slow, HealthCheck.data_too_large)
@given(files=files_strategy, argv=ensemble_argv())
def test_ensemble_with_any_arguments_writes_an_ensemble_or_one_error_line(
    runs, tmp_path, capsys, files, argv
):
    outcome = run_cli(runs, tmp_path, capsys, files, argv)
    if outcome.code == 0:
        folder = outcome.folder / option(outcome.argv, "--run-dir")
        unchanged_except(outcome, str(folder))
        assert json.loads((folder / "ensemble.json").read_text(encoding="utf-8"))
        assert "ensemble of" in outcome.out


# ------------------------------------------------------------------------------------------- serve

SERVE_LIMITS = {"max_texts": 4, "max_text_chars": 300, "max_body_bytes": 20_000}
CONTENT_TYPES = ["application/json", "application/json; charset=utf-16", "text/plain",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "application/vnd.api+json", None]  # fmt: skip


@pytest.fixture(scope="module")
def client(runs: Runs) -> Any:
    """The app ``rnnkit serve`` runs, with small limits so that examples reach them."""
    from fastapi.testclient import TestClient

    from rnnkit.runs import open_run
    from rnnkit.serve import ServeSettings, create_app

    with TestClient(create_app(open_run(runs.run), ServeSettings(**SERVE_LIMITS))) as client:
        yield client


request_texts = st.lists(
    st.sampled_from(["", " ", "nasa launch", "x" * 301]) | any_text | file_text | json_values, max_size=6
)
valid_requests = st.fixed_dictionaries(
    {"texts": st.lists(st.text(max_size=40) | st.sampled_from(["", "nasa launch"]), min_size=1, max_size=4)},
    optional={"top_k": st.integers(1, 3)},
)
requests = (
    valid_requests
    | st.fixed_dictionaries(
        {},
        optional={
            "texts": request_texts | json_values,
            "top_k": st.integers(-1, 5) | json_values | st.sampled_from([10**400, 1.0, 2.5, "2", True]),
            "extra": json_values,
        },
    )
    | st.dictionaries(any_text, json_values, max_size=3)
)


def _encoded(value: Any, ensure_ascii: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


bodies = st.one_of(
    st.builds(_encoded, requests | json_values, st.booleans()),
    st.binary(max_size=200),
    st.integers(1, 30_000).map(lambda depth: b'{"texts": ' + b"[" * depth + b"]" * depth + b"}"),
    st.integers(1, 30_000).map(lambda digits: b'{"texts": ["a"], "top_k": ' + b"7" * digits + b"}"),
    st.just(b'{"texts": ["' + b"a" * 30_000 + b'"]}'),
)


@fuzz(200, HealthCheck.too_slow, HealthCheck.data_too_large)
@given(body=bodies, content_type=st.sampled_from(CONTENT_TYPES))
def test_serve_answers_any_request_body_with_predictions_or_a_one_line_4xx(runs, client, body, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/predict", content=body, headers=headers)
    event(f"status {response.status_code}")
    assert response.status_code == 200 or 400 <= response.status_code < 500, (body[:200], response.text)
    answer = response.json()
    if response.status_code != 200:
        assert isinstance(answer["error"], str) and "\n" not in answer["error"], answer
        assert len(answer["error"]) <= LONGEST_ERROR, answer
        return
    request = json.loads(body)
    assert len(answer["predictions"]) == len(request["texts"])
    for prediction in answer["predictions"]:
        assert prediction["label"] in runs.labels and 0.0 <= prediction["probability"] <= 1.0
        assert len(prediction["top_k"]) == int(request.get("top_k", 1))
