"""``rnnkit export``: ONNX and TorchScript folders that classify exactly like rnnkit, without rnnkit."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cli import fails_with
from test_trainer import train_tiny_run

import rnnkit
from rnnkit.cli import main
from rnnkit.export import ExportError, export_run, formats
from rnnkit.runs import open_run

TEXTS = [
    "nasa launch orbit moon",
    "puck",
    "",
    "peace treaty land " * 20,  # longer than max_length (30 tokens)
    "zebra <pad> unknown words only",
    "The PUCK, the goal; the playoff!",
    "israel arab land war treaty peace and the moon",
]
BLOCK_RNNKIT = "import sys; sys.modules['rnnkit'] = None; "  # importing rnnkit would fail


@pytest.fixture(scope="module", params=["bilstm2-mean-regex", "gru-last-char"])
def run_dir(request, tmp_path_factory) -> Path:
    settings = {
        "bilstm2-mean-regex": {
            "model.name": "lstm",
            "model.bidirectional": True,
            "model.num_layers": 2,
            "model.pooling": "mean",
        },
        "gru-last-char": {"model.pooling": "last", "data.tokenizer": "char", "data.char_ngrams": 2},
    }[request.param]
    return train_tiny_run(tmp_path_factory.mktemp(request.param), **{"train.epochs": 3, **settings})


@pytest.fixture(scope="module")
def exports(run_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    for fmt in ("onnx", "torchscript"):
        assert (
            main(["export", "-q", "--run-dir", str(run_dir), "--format", fmt, "--out", str(root / fmt)]) == 0
        )
    return {fmt: root / fmt for fmt in ("onnx", "torchscript")}


def exported_classifier(folder: Path):
    spec = importlib.util.spec_from_file_location(f"classify_{folder.name}", folder / "classify.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Classifier(folder)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_probabilities_equal_rnnkits_in_batches_of_mixed_lengths(run_dir, exports, fmt):
    expected = rnnkit.load(run_dir).predict_proba(TEXTS)
    classifier = exported_classifier(exports[fmt])
    for batch_size in (1, 3, len(TEXTS)):  # unsorted: short and long texts share a padded batch
        got = classifier.predict_proba(TEXTS, batch_size=batch_size, sort=False)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert classifier.predict(TEXTS) == rnnkit.load(run_dir).predict(TEXTS)


def test_the_folder_holds_model_vocabulary_tokenizer_labels_script_and_readme(run_dir, exports):
    run = open_run(run_dir)
    folder = exports["onnx"]
    assert {p.name for p in folder.iterdir()} == {
        "model.onnx",
        "vocab.json",
        "tokenizer.json",
        "labels.json",
        "classify.py",
        "README.md",
        "export.json",
    }
    assert json.loads((folder / "vocab.json").read_text()) == run.vocab.itos
    assert json.loads((folder / "labels.json").read_text()) == run.label_names
    settings = json.loads((folder / "tokenizer.json").read_text())
    assert settings == {**run.tokenizer.to_dict(), "max_length": 30, "pad_id": 0, "unk_id": 1}
    manifest = json.loads((folder / "export.json").read_text())
    assert manifest["format"] == "onnx" and manifest["checked_max_difference"] <= 1e-5
    assert (exports["torchscript"] / "model.pt").is_file()


def test_the_onnx_model_has_a_free_batch_size_and_length(exports):
    import onnx

    graph = onnx.load(str(exports["onnx"] / "model.onnx")).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims == {"token_ids": ["batch", "length"], "lengths": ["batch"]}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_classify_py_runs_without_rnnkit(exports, fmt):
    folder = exports[fmt]
    code = BLOCK_RNNKIT + "import runpy; runpy.run_path('classify.py', run_name='__main__')"
    result = subprocess.run(
        [sys.executable, "-c", code, "nasa launch orbit", "puck goal"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    )
    labels = json.loads((folder / "labels.json").read_text())
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(line.split("\t")[0] in labels for line in lines)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_readme_code_runs_without_rnnkit(exports, fmt):
    readme = (exports[fmt] / "README.md").read_text()
    (snippet,) = [
        block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "without rnnkit" in block
    ]
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_RNNKIT + "\n" + snippet],
        cwd=exports[fmt],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(result.stdout.splitlines()) == 2


def test_an_export_that_disagrees_with_the_model_is_refused_and_leaves_nothing(
    run_dir, tmp_path, monkeypatch
):
    load_runner = formats.load_runner

    def off_by_a_little(fmt, path):
        run = load_runner(fmt, path)
        return lambda ids, lengths: run(ids, lengths) + 1e-3

    monkeypatch.setattr(formats, "load_runner", off_by_a_little)
    with pytest.raises(ExportError, match="differ from the model's"):
        export_run(open_run(run_dir), "torchscript", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_export_is_replaced_only_with_overwrite(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["export", "-q", "--run-dir", str(run_dir), "--format", "torchscript", "--out", str(out)]
    assert main(argv) == 0
    fails_with(capsys, argv, "already holds an export", "--overwrite")
    assert main([*argv, "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_folder_with_other_files_is_never_used(run_dir, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    argv = ["export", "--run-dir", str(run_dir), "--format", "onnx", "--out", str(tmp_path), "--overwrite"]
    fails_with(capsys, argv, "holds no rnnkit export")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_without_onnx_the_cli_names_the_pip_command(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)
    argv = ["export", "--run-dir", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "out")]
    fails_with(capsys, argv, "pip install 'rnnkit[export]'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_export_folder_whose_name_is_not_utf8_is_written_and_named(finished_run, tmp_path, capsys, fmt):
    out = tmp_path / "\udcff"  # a byte that is not UTF-8, as Python decodes a command line
    assert main(["export", "--run-dir", str(finished_run), "--format", fmt, "--out", str(out)]) == 0
    assert (out / json.loads((out / "export.json").read_text())["model_file"]).is_file()
    assert "\\udcff" in capsys.readouterr().out  # printed escaped, as Python's stderr does
