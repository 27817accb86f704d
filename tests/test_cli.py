"""The command line: every mistake a user can make ends with status 2 and one line saying what to fix."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_runs_checkpoint import Payload
from test_trainer import cli_args, tiny_settings, write_corpus

from rnnkit import cli
from rnnkit.cli import main
from rnnkit.config import Config
from rnnkit.training import experiment


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))


def fails_with(capsys, argv: list[str], *fragments: str) -> str:
    """Run the CLI in-process: exit 2, and the error is one ``rnnkit: error:`` line containing ``fragments``.

    Progress messages logged before the error (at INFO) may precede it; a traceback may not.
    """
    assert main(argv) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("rnnkit: error: ")]
    assert len(errors) == 1 and captured.err.endswith(errors[0] + "\n"), captured.err
    assert "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in errors[0]
    return errors[0]


def fake_run(folder: Path) -> Path:
    """A run folder with valid setup files and no checkpoints."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(Config().to_yaml(), encoding="utf-8")
    (folder / "labels.json").write_text('["a", "b"]', encoding="utf-8")
    return folder


def test_invalid_yaml_is_one_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("train: [epochs\n", encoding="utf-8")
    fails_with(capsys, ["train", "--config", str(config)], "is not valid YAML at line")


def test_an_unknown_key_suggests_the_right_one(capsys):
    fails_with(capsys, ["train", "--set", "train.epoch=3"], "did you mean 'train.epochs'")


def test_an_unknown_model_lists_the_available_ones(tmp_path, capsys):
    fails_with(
        capsys,
        ["train", "--run-dir", str(tmp_path / "r"), "--set", "model.name=transformer"],
        "gru, lstm, rnn",
    )


def test_a_missing_archive_is_named(tmp_path, capsys):
    missing = tmp_path / "nowhere.tar.gz"
    fails_with(
        capsys, ["train", "--run-dir", str(tmp_path / "r"), "--set", f"data.archive={missing}"], str(missing)
    )


def test_a_missing_vector_file_is_named(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.csv")
    missing = tmp_path / "vectors.vec"
    args = cli_args(tiny_settings(corpus, **{"embeddings.source": str(missing)}))
    fails_with(capsys, ["train", "--run-dir", str(tmp_path / "r"), *args], str(missing))


def test_unit_forget_bias_on_a_cell_without_a_forget_gate_is_one_line(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.csv")
    args = cli_args(tiny_settings(corpus, **{"model.name": "gru", "model.unit_forget_bias": "true"}))
    fails_with(
        capsys, ["train", "--run-dir", str(tmp_path / "r"), *args], "model.unit_forget_bias", "gru has none"
    )
    assert not (tmp_path / "r").exists()


def test_a_folder_that_holds_a_run_is_not_overwritten(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    before = (run / "config.yaml").read_text()
    fails_with(capsys, ["train", "--run-dir", str(run)], "already holds a run", "--resume", "--overwrite")
    assert (run / "config.yaml").read_text() == before


def test_a_non_empty_folder_that_is_not_a_run_is_never_used(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    fails_with(capsys, ["train", "--run-dir", str(tmp_path / "mine"), "--overwrite"], "holds no rnnkit run")
    assert (tmp_path / "mine" / "notes.txt").exists()


def test_overwrite_replaces_a_previous_run(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.csv")
    run = fake_run(tmp_path / "run")
    (run / "stale.txt").write_text("old")
    args = ["train", "-q", "--run-dir", str(run), "--overwrite", *cli_args(tiny_settings(corpus))]
    assert main(args) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert not (run / "stale.txt").exists() and (run / "metrics.json").exists()


def test_evaluating_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    fails_with(capsys, ["evaluate", "--run-dir", str(tmp_path)], "not an rnnkit run folder")


def test_a_run_without_a_finished_epoch_cannot_predict_yet(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    fails_with(capsys, ["predict", "--run-dir", str(run), "hello"], "has not finished an epoch", "--resume")


def test_a_checkpoint_carrying_a_pickle_payload_is_refused_and_never_runs(tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    marker = tmp_path / "pwned"
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "best.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    fails_with(capsys, ["predict", "--run-dir", str(run), "hello"], "not an rnnkit checkpoint")
    fails_with(capsys, ["evaluate", "--run-dir", str(run)])
    assert not marker.exists()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["predict", "--run-dir", "x"], "give texts to classify"),
        (["predict", "--run-dir", "x", "--top-k", "0", "hi"], "--top-k must be at least 1"),
        (["predict", "--run-dir", "x", "--top-k", "two", "hi"], "invalid int value"),
        (["train", "--resume", "runs/x", "--config", "c.yaml"], "drop --config"),
        (["train", "--no-such-flag"], "unrecognized arguments"),
        (["fly"], "invalid choice"),
    ],
)
def test_bad_command_lines_are_one_line_too(capsys, argv, fragment):
    fails_with(capsys, argv, fragment)


def test_a_missing_predict_file_is_named(tmp_path, capsys):
    fails_with(capsys, ["predict", "--run-dir", str(tmp_path), "--file", str(tmp_path / "no.txt")], "no.txt")


def test_an_interrupted_run_says_how_to_resume(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "train", interrupted)
    assert main(["train", "--run-dir", str(tmp_path / "run")]) == 130
    assert f"rnnkit train --resume {tmp_path / 'run'}" in capsys.readouterr().err


def test_the_installed_command_exits_2_with_one_line_and_no_traceback(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  nam: lstm\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "rnnkit", "train", "--config", str(config)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "rnnkit: error: unknown key 'model.nam'; did you mean 'model.name'?"
    ]


def test_a_model_registered_in_a_user_module_trains_from_the_command_line(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "from rnnkit.models import GRUClassifier, register_model\n"
        "@register_model('tiny_gru')\n"
        "def tiny_gru(cfg, *, vocab_size, num_classes, embedding_dim, embeddings, freeze_embeddings):\n"
        "    return GRUClassifier(vocab_size, num_classes, embedding_dim=embedding_dim, hidden_size=4)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    corpus = write_corpus(tmp_path / "corpus.csv")
    settings = [*tiny_settings(corpus), "model.name=tiny_gru"]
    argv = ["train", "-q", "--include-package", "my_models", "--run-dir", str(tmp_path / "run")]
    assert main([*argv, *cli_args(settings)]) == 0
    assert "tiny_gru" in (tmp_path / "run" / "config.yaml").read_text()


def test_an_unknown_include_package_is_one_line_exit_2(capsys):
    assert main(["train", "--include-package", "no_such_module_xyz"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rnnkit: error: --include-package no_such_module_xyz")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "setting",
    ["model.hidden_size=1000000", "model.num_layers=100000", "embeddings.dim=100000000000"],
)
def test_a_model_too_large_for_this_machine_is_refused_before_anything_is_written(tmp_path, capsys, setting):
    corpus = write_corpus(tmp_path / "corpus.csv")
    run = tmp_path / "run"
    argv = ["train", "--run-dir", str(run), *cli_args(tiny_settings(corpus)), "--set", setting]
    fails_with(capsys, argv, "training this model needs about", "GB of memory")
    assert not run.exists()


# Environment faults: a full disk, a read-only folder, an unusable or damaged cache. Each is one line
# (exit 2) naming the file and what to do; files already written stay whole.


def refuse_writes(patch: pytest.MonkeyPatch, matches, code: int) -> None:
    """Make the file system refuse, with ``code``, every write into a path for which ``matches`` holds.

    ``os.fsync`` of an atomic write's temporary file fails as a full disk's does; creating a file
    or folder (``os.open`` for writing, ``os.mkdir``) fails as a read-only file system's does, for
    root too.
    """
    real_fsync, real_open, real_mkdir = os.fsync, os.open, os.mkdir

    def refuse(path) -> None:
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    def fsync(fd):
        if matches(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(code, os.strerror(code))  # a failed flush names no file
        return real_fsync(fd)

    def open_(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and matches(os.fsdecode(path)):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if matches(os.fsdecode(path)):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    patch.setattr(os, "fsync", fsync)
    patch.setattr(os, "open", open_)
    patch.setattr(os, "mkdir", mkdir)


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")


@linux_only
def test_a_full_disk_mid_run_is_one_line_and_the_run_continues_once_there_is_space(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.csv")
    run = tmp_path / "run"
    argv = ["train", "--run-dir", str(run), *cli_args(tiny_settings(corpus))]
    with pytest.MonkeyPatch.context() as patch:
        refuse_writes(patch, lambda path: "last.safetensors" in path, errno.ENOSPC)
        fails_with(
            capsys,
            argv,
            f"no space left on the device ({run / 'checkpoints' / 'last.safetensors'})",
            f"free some space, then continue with: rnnkit train --resume {run}",
        )
    assert not list(run.rglob("*.tmp")) and (run / "config.yaml").exists()
    assert main(["train", "-q", "--resume", str(run)]) == 0
    assert (run / "metrics.json").exists()


@linux_only
@pytest.mark.parametrize("command", ["a new run", "--resume", "predict --output"])
def test_a_read_only_folder_is_one_line(finished_run, tmp_path, capsys, command):
    read_only = tmp_path / "read-only"
    shutil.copytree(finished_run, read_only / "run")
    output = ["--output", str(read_only / "predictions.jsonl")]
    argv = {
        "a new run": ["train", "--run-dir", str(read_only / "new")],
        "--resume": ["train", "--resume", str(read_only / "run")],
        "predict --output": ["predict", "--run-dir", str(read_only / "run"), "nasa launch", *output],
    }[command]
    with pytest.MonkeyPatch.context() as patch:
        refuse_writes(patch, lambda path: path.startswith(str(read_only)), errno.EROFS)
        fails_with(capsys, argv, "the file system is read-only", str(read_only), "fix its permissions")
    assert not (read_only / "predictions.jsonl").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_run_folder_without_write_permission_is_one_line(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    run.chmod(0o555)
    try:
        fails_with(capsys, ["train", "--resume", str(run)], "permission denied", str(run / ".lock"))
    finally:
        run.chmod(0o755)


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "--run-dir", "RUN", "--file", ""],
        ["explain", "--run-dir", "RUN", "--html", "", "text"],
        ["compare", "RUN", "--plot", ""],
        ["evaluate", "--run-dir", ""],
    ],
)
def test_an_empty_path_option_is_refused_naming_it(capsys, argv):
    option = argv[argv.index("") - 1]
    fails_with(capsys, argv, f"argument {option}: needs a path, got an empty string")


def test_an_unknown_device_is_refused_naming_the_option(capsys):
    fails_with(capsys, ["predict", "--run-dir", "RUN", "--device", "tpu", "text"], "argument --device: 'tpu'")


def test_a_data_path_with_a_name_too_long_for_the_file_system_is_one_short_line(tmp_path, capsys):
    path = tmp_path / ("x" * 300) / "corpus.csv"
    run = tmp_path / "run"
    argv = ["train", "--run-dir", str(run), "--set", "data.dataset=csv", "--set", f"data.path={path}"]
    line = fails_with(capsys, argv, "too long for the file system", "shorten it")
    assert "x" * 300 not in line
    assert not run.exists()


def test_an_unusable_cache_folder_is_one_line_before_the_run_folder_exists(tmp_path, monkeypatch, capsys):
    (tmp_path / "cache-file").write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache-file"))
    corpus = write_corpus(tmp_path / "corpus.csv")
    run = tmp_path / "run"
    argv = ["train", "--run-dir", str(run), *cli_args(tiny_settings(corpus))]
    fails_with(capsys, argv, f"RNNKIT_CACHE={tmp_path / 'cache-file'}", "cannot be used")
    assert not run.exists()


def test_evaluate_rebuilds_a_truncated_cache_entry_instead_of_failing(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert main(["evaluate", "--run-dir", str(run), "--json"]) == 0  # fills this test's cache
    first = capsys.readouterr().out
    for ids in (tmp_path / "cache" / "corpus").glob("*/ids.npy"):
        ids.write_bytes(ids.read_bytes()[:200])
    assert main(["evaluate", "--run-dir", str(run), "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.out == first
    assert "the tokenised corpus in the cache is damaged" in captured.err


def test_any_other_os_error_is_a_bug_and_keeps_its_traceback(monkeypatch):
    def broken(args):
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    monkeypatch.setattr(cli, "_compare", broken)
    with pytest.raises(OSError, match="Bad file descriptor"):
        main(["compare", "runs/x"])


def test_predict_writes_a_command_line_text_that_is_not_utf8_into_its_row(finished_run, tmp_path, capsys):
    out = tmp_path / "rows.jsonl"
    argv = ["predict", "--run-dir", str(finished_run), "bad \udc80", "--with-text", "--output", str(out)]
    assert main(argv) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["text"] == "bad \ufffd"
    assert "1 texts had bytes that are not UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["compare", "<run>", "--plot", "<folder>"], "this path is a folder, not a file (<folder>)"),
        (["compare", "<run>", "--plot", "<file>/x.png"], "a file stands where this path needs a folder"),
        (["predict", "--run-dir", "<run>", "nasa", "--output", "<folder>"], "is a folder, not a file"),
        (["explain", "--run-dir", "<run>", "nasa", "--html", "<folder>"], "is a folder, not a file"),
        (["export", "--run-dir", "<run>", "--format", "onnx", "--out", "<file>/out"], "a file stands where"),
        (["train", "--run-dir", "<file>/run"], "a file stands where this path needs a folder"),
    ],
)
def test_an_output_path_that_is_a_folder_or_goes_through_a_file_is_one_line(
    finished_run, tmp_path, capsys, argv, fragment
):
    folder, file = tmp_path / "out.csv", tmp_path / "docs.txt"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep", encoding="utf-8")
    file.write_text("keep", encoding="utf-8")
    places = {"<run>": str(finished_run), "<folder>": str(folder), "<file>": str(file)}
    for placeholder, path in places.items():
        argv = [arg.replace(placeholder, path) for arg in argv]
        fragment = fragment.replace(placeholder, path)
    fails_with(capsys, argv, fragment)
    assert file.read_text(encoding="utf-8") == (folder / "mine.txt").read_text(encoding="utf-8") == "keep"
    assert {p.name for p in tmp_path.iterdir()} - {"cache"} == {"docs.txt", "out.csv"}
    assert [p.name for p in folder.iterdir()] == ["mine.txt"]


@pytest.mark.parametrize("value", ["-" + "9" * 3000, "9x" * 999])
def test_a_very_long_bad_number_is_cut_in_the_one_line_error(capsys, value):
    line = fails_with(capsys, ["predict", "--run-dir", "x", "--top-k", value, "hi"], "--top-k")
    assert len(line) < 300
