"""Data-parallel training: the helpers on two real Gloo processes, and torchrun runs of the CLI."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_trainer import cli_args, tiny_settings, write_corpus
from torch import nn

from rnnkit import distributed
from rnnkit.config import load_config
from rnnkit.errors import CheckpointError, ConfigError, RnnkitError
from rnnkit.runs.checkpoint import load_checkpoint
from rnnkit.runtime import resolve_device
from rnnkit.training import experiment


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(args: list[str], cache: Path, *, script: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m torch.distributed.run --nproc_per_node=2 -m rnnkit ARGS`` on this machine's CPUs."""
    target = [str(script)] if script else ["-m", "rnnkit"]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        *target,
        *args,
    ]
    env = {**os.environ, "RNNKIT_CACHE": str(cache), "OMP_NUM_THREADS": "1", "RNNKIT_DIST_TIMEOUT": "60"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)


def test_a_plain_process_is_rank_0_of_1_and_every_helper_is_a_no_op():
    env = distributed.read_env({})
    assert (env.rank, env.world_size, env.is_distributed, env.is_main) == (0, 1, False, True)
    assert distributed.is_main_process() and distributed.get_world_size() == 1
    index, columns = distributed.gather_by_index(torch.tensor([2, 0, 2]), {"pred": torch.tensor([7, 5, 9])})
    assert index.tolist() == [0, 2] and columns["pred"].tolist() == [5, 7]
    assert distributed.broadcast_flag(True) is True
    assert distributed.global_mean(torch.tensor(6.0), 3).item() == 2.0
    assert distributed.claim_error_report() is True
    model = nn.Linear(2, 2)
    assert distributed.wrap_model(model, torch.device("cpu")) is model


def test_torchrun_variables_are_read_and_nonsense_is_a_one_line_error():
    env = distributed.read_env(
        {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}
    )
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port) == (
        3,
        4,
        1,
        "node0",
        29500,
    )
    assert not env.is_main
    with pytest.raises(RnnkitError, match="RANK=4 and WORLD_SIZE=4"):
        distributed.read_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(RnnkitError, match="WORLD_SIZE='two'"):
        distributed.read_env({"WORLD_SIZE": "two"})


def test_each_rank_gets_its_own_device_and_a_pinned_gpu_is_refused_under_ddp():
    two = {"local_rank": 1, "world_size": 2}
    assert resolve_device("cpu", **two) == torch.device("cpu")
    if torch.cuda.is_available():
        with pytest.raises(ConfigError, match="pins one GPU"):
            resolve_device("cuda:0", **two)
    else:
        assert resolve_device("auto", **two) == torch.device("cpu")
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda", **two)


HELPERS_ON_TWO_RANKS = """
import sys
from pathlib import Path

import torch
from torch import nn

from rnnkit import distributed

env, device = distributed.setup("cpu")
results = {"is_main": distributed.is_main_process()}
# Uneven shards, and rank 1 repeats example 0 as padding.
index = torch.tensor([[4, 0, 2, 6], [1, 5, 3, 0]][env.rank])
probs = torch.stack([index.float(), -index.float()], dim=1)
results["gathered"] = distributed.gather_by_index(index, {"pred": index * 10, "prob": probs})
results["flag"] = distributed.broadcast_flag(env.rank == 0)
results["objects"] = distributed.gather_objects(f"rank {env.rank}")
results["broadcast"] = distributed.broadcast_object(f"from rank {env.rank}")
torch.manual_seed(env.rank)
other = nn.Linear(2, 2)
distributed.broadcast_module(other)
results["weights"] = other.weight
# One global batch of 4 examples split 3 + 1: DDP must give the gradient of the full batch's mean.
torch.manual_seed(0)
model = nn.Linear(3, 2)
inputs, targets = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
shard = slice(0, 3) if env.rank == 0 else slice(3, 4)
ddp = distributed.wrap_model(model, device)  # kept alive: its hooks average the gradients
losses = nn.functional.cross_entropy(ddp(inputs[shard]), targets[shard], reduction="none")
distributed.global_mean(losses.sum(), losses.numel()).backward()
results["grad"] = model.weight.grad
results["claimed"] = distributed.claim_error_report()  # as if both ranks failed
torch.save(results, Path(sys.argv[1]) / f"rank{env.rank}.pt")
distributed.cleanup()
"""


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    """The helpers' results on each of two Gloo ranks started by torchrun."""
    root = tmp_path_factory.mktemp("helpers")
    script = root / "helpers.py"
    script.write_text(HELPERS_ON_TWO_RANKS, encoding="utf-8")
    done = torchrun([str(root)], root / "cache", script=script)
    assert done.returncode == 0, done.stderr
    return [torch.load(root / f"rank{rank}.pt", weights_only=False) for rank in range(2)]


@pytest.mark.slow
def test_only_rank_0_is_the_main_process(two_ranks):
    assert [result["is_main"] for result in two_ranks] == [True, False]


@pytest.mark.slow
def test_gathered_outputs_hold_every_example_once_in_index_order_on_every_rank(two_ranks):
    for result in two_ranks:
        index, columns = result["gathered"]
        pred, prob = columns["pred"], columns["prob"]
        assert index.tolist() == [0, 1, 2, 3, 4, 5, 6]
        assert pred.tolist() == [0, 10, 20, 30, 40, 50, 60]
        assert prob[:, 0].tolist() == [float(i) for i in range(7)]


@pytest.mark.slow
def test_a_flag_decided_on_rank_0_is_the_same_on_every_rank(two_ranks):
    assert [result["flag"] for result in two_ranks] == [True, True]
    assert [result["broadcast"] for result in two_ranks] == ["from rank 0", "from rank 0"]


@pytest.mark.slow
def test_every_rank_gets_rank_0s_weights_when_only_rank_0_read_them(two_ranks):
    torch.manual_seed(0)
    expected = nn.Linear(2, 2).weight
    for result in two_ranks:
        torch.testing.assert_close(result["weights"], expected, atol=0, rtol=0)


@pytest.mark.slow
def test_rank_0_gathers_every_ranks_object_in_rank_order(two_ranks):
    assert [result["objects"] for result in two_ranks] == [["rank 0", "rank 1"], None]


@pytest.mark.slow
def test_when_every_rank_fails_exactly_one_reports_the_error(two_ranks):
    assert sorted(result["claimed"] for result in two_ranks) == [False, True]


@pytest.mark.slow
def test_uneven_shards_of_a_global_batch_give_the_single_process_gradient(two_ranks):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    inputs, targets = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    nn.functional.cross_entropy(model(inputs), targets).backward()
    for result in two_ranks:
        torch.testing.assert_close(result["grad"], model.weight.grad, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- torchrun runs of `rnnkit train`

EXACT = {"model.embedding_dropout": 0.0, "model.head_dropout": 0.0, "model.dropout": 0.0, "train.amp": False}
"""No dropout (each rank draws its own masks) and float32 (bfloat16 mixed precision rounds each
rank's partial gradient sums apart): only such a run can equal one process."""


def train_args(run_dir: Path, corpus: Path, **extra: object) -> list[str]:
    return ["train", "--run-dir", str(run_dir), *cli_args(tiny_settings(corpus, **extra))]


def weights(run_dir: Path, name: str = "last") -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / f"{name}.safetensors").section("model")


def history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.csv")


@pytest.fixture(scope="module")
def vectors(corpus) -> Path:
    """A GloVe-format text file with a 6-dim vector for every word of the corpus."""
    with corpus.open(encoding="utf-8") as handle:
        words = sorted({word for row in csv.DictReader(handle) for word in row["text"].split()})
    rows = torch.randn(len(words), 6, generator=torch.Generator().manual_seed(0)).tolist()
    lines = [" ".join([word, *(f"{x:.4f}" for x in row)]) for word, row in zip(words, rows, strict=True)]
    path = corpus.with_name("vectors.txt")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def single_and_ddp(corpus, vectors, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """The same training as one process with batch 16, and as two Gloo ranks with 8 each.

    The model runs rnnkit's own autograd kernel (``nn.RNN`` on CPU) over frozen pretrained vectors.
    """
    root = tmp_path_factory.mktemp("single_and_ddp")
    model = {"model.name": "rnn", "embeddings.source": str(vectors), "embeddings.freeze": True, **EXACT}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RNNKIT_CACHE", str(root / "cache"))
        experiment.train(
            load_config(overrides=tiny_settings(corpus, **model, **{"train.batch_size": 16})), root / "single"
        )
    done = torchrun(train_args(root / "ddp", corpus, **model, **{"train.batch_size": 8}), root / "cache")
    assert done.returncode == 0, done.stderr
    return root / "single", root / "ddp", done


@pytest.mark.slow
def test_two_gloo_ranks_train_the_same_weights_as_one_process_with_the_same_global_batch(single_and_ddp):
    single, ddp, _ = single_and_ddp
    for name in ("last", "best"):
        expected, actual = weights(single, name), weights(ddp, name)
        assert expected.keys() == actual.keys()
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], atol=1e-5, rtol=0, msg=key)


@pytest.mark.slow
def test_frozen_pretrained_vectors_stay_as_loaded_under_ddp(single_and_ddp, vectors):
    _, ddp, _ = single_and_ddp
    itos = json.loads((ddp / "vocab.json").read_text(encoding="utf-8"))["itos"]
    table = {
        line.split()[0]: [float(x) for x in line.split()[1:]] for line in vectors.read_text().splitlines()
    }
    embedding = weights(ddp)["embedder.embedding.weight"]
    for row, word in enumerate(itos[2:], start=2):
        assert embedding[row].tolist() == pytest.approx(table[word], abs=1e-6), word


@pytest.mark.slow
def test_validation_and_test_metrics_gathered_across_ranks_equal_a_single_process_evaluation(single_and_ddp):
    single, ddp, _ = single_and_ddp
    expected, actual = (json.loads((run / "metrics.json").read_text()) for run in (single, ddp))
    for split in ("validation", "test"):
        assert actual[split] == pytest.approx(expected[split], abs=1e-5)
    assert actual["steps"] == expected["steps"] and actual["best_epoch"] == expected["best_epoch"]
    for row_single, row_ddp in zip(history(single), history(ddp), strict=True):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1"):
            assert float(row_ddp[key]) == pytest.approx(float(row_single[key]), abs=1e-5)


@pytest.mark.slow
def test_only_rank_0_logs_prints_and_writes_the_run_folder(single_and_ddp):
    single, ddp, done = single_and_ddp
    assert done.stdout.count("test accuracy") == 1
    assert done.stderr.count("epoch 1/2") == 1 and done.stderr.count("epoch 2/2") == 1
    files = {path.relative_to(ddp) for path in ddp.rglob("*") if path.is_file()}
    assert files == {path.relative_to(single) for path in single.rglob("*") if path.is_file()}


@pytest.mark.slow
def test_a_ddp_run_killed_mid_epoch_resumes_under_ddp_to_the_same_weights(corpus, tmp_path, monkeypatch):
    """Dropout is on, so every rank must get back its own random state and running sums."""
    # 108 training documents in global batches of 16: 7 steps per epoch. Checkpoints at steps
    # 5, 7 (epoch end), 10 and 14 (end): ``previous`` is the state after step 10, mid-epoch 2.
    settings = {
        "train.batch_size": 8,
        "train.checkpoint_every": 5,
        "model.name": "lstm",
        "model.pooling": "attention",
        "model.bidirectional": True,
    }
    full = torchrun(train_args(tmp_path / "full", corpus, **settings), tmp_path / "cache")
    assert full.returncode == 0, full.stderr
    interrupted = tmp_path / "interrupted"
    shutil.copytree(tmp_path / "full", interrupted)
    (interrupted / "checkpoints" / "last.safetensors").unlink()  # as if killed before the final save
    (interrupted / "metrics.json").unlink()
    shutil.copytree(interrupted, tmp_path / "copy")
    resumed = torchrun(["train", "--resume", str(interrupted)], tmp_path / "cache")
    assert resumed.returncode == 0, resumed.stderr
    assert "at epoch 2, batch 3" in resumed.stderr
    expected, actual = weights(tmp_path / "full"), weights(interrupted)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=1e-6, rtol=0, msg=key)
    timeless = [
        {k: v for k, v in row.items() if k != "epoch_time_s"}
        for run in (tmp_path / "full", interrupted)
        for row in history(run)
    ]
    assert timeless[:2] == timeless[2:]
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="mid-epoch by 2 process"):  # its batches need 2 ranks
        experiment.resume(tmp_path / "copy")


@pytest.mark.slow
def test_a_user_error_on_every_rank_is_shown_once(corpus, tmp_path):
    done = torchrun(train_args(tmp_path / "run", corpus, **{"model.name": "nope"}), tmp_path / "cache")
    assert done.returncode != 0
    assert done.stderr.count("rnnkit: error: model.name 'nope'") == 1


FAIL_ON_RANK_1 = """
import os, sys
from rnnkit.errors import DataError
from rnnkit.training import experiment
original = experiment.prepare_data
def prepare_data(cfg, *args, **kwargs):
    if os.environ["RANK"] == "1":
        raise DataError("rank 1 cannot read its data")
    return original(cfg, *args, **kwargs)
experiment.prepare_data = prepare_data
from rnnkit.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_failure_on_one_rank_ends_every_rank_and_is_shown_once(corpus, tmp_path):
    script = tmp_path / "fail_on_rank_1.py"
    script.write_text(FAIL_ON_RANK_1, encoding="utf-8")
    done = torchrun(train_args(tmp_path / "run", corpus), tmp_path / "cache", script=script)
    assert done.returncode != 0
    assert done.stderr.count("rnnkit: error: rank 1 cannot read its data") == 1
    assert "Connection closed by peer" not in done.stderr  # rank 0's knock-on failure stays silent


@pytest.mark.slow
def test_adversarial_training_under_ddp_trains_the_same_weights_as_one_process(corpus, tmp_path):
    """Each document's perturbation follows its own gradient only: sharding the batch changes nothing."""
    settings = {"model.name": "rnn", "train.adversarial_epsilon": 1.0, **EXACT}
    single = tiny_settings(corpus, **settings, **{"train.batch_size": 16})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))
        experiment.train(load_config(overrides=single), tmp_path / "single")
    ddp = train_args(tmp_path / "ddp", corpus, **settings, **{"train.batch_size": 8})
    done = torchrun(ddp, tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    expected, actual = weights(tmp_path / "single"), weights(tmp_path / "ddp")
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=1e-5, rtol=0, msg=key)
