"""open_run: the one path from a run folder to its config, vocabulary, labels and best model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_cli import fake_run
from test_trainer import train_tiny_run

from rnnkit.errors import CheckpointError
from rnnkit.predict import Predictor
from rnnkit.runs import open_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("runs"))


def test_an_opened_run_holds_the_config_vocabulary_tokenizer_labels_and_best_epoch(run_dir):
    run = open_run(run_dir)
    assert run.path == run_dir
    assert run.config.model.name == "gru" and run.max_length == run.config.data.max_length == 30
    assert run.label_names == json.loads((run_dir / "labels.json").read_text())
    assert run.tokenizer == run.vocab.tokenizer and run.tokenizer("Orbit, moon!") == [
        "orbit",
        ",",
        "moon",
        "!",
    ]
    assert run.record["epoch"] == json.loads((run_dir / "metrics.json").read_text())["best_epoch"]


def test_the_model_is_the_best_checkpoint_in_eval_mode_on_the_device(run_dir):
    run = open_run(run_dir, device="cpu")
    assert not run.model.training and run.device == torch.device("cpu")
    assert all(p.device == run.device for p in run.model.parameters())
    ids = run.vocab.encode_tokens(run.tokenizer("nasa launch orbit"))
    logits = run.model(torch.as_tensor(ids).long().unsqueeze(0), torch.tensor([len(ids)]))
    assert logits.shape == (1, len(run.label_names))


def test_the_predictor_shares_the_runs_pieces_and_its_eval_batch_size(run_dir):
    run = open_run(run_dir)
    predictor = run.predictor()
    assert isinstance(predictor, Predictor)
    assert predictor.model is run.model and predictor.vocab is run.vocab
    assert predictor.label_names == run.label_names and predictor.max_length == run.max_length
    assert predictor.batch_size == run.config.train.eval_batch_size
    assert run.predictor(batch_size=7).batch_size == 7


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="not an rnnkit run folder") as error:
        open_run(tmp_path)
    assert "\n" not in str(error.value)


def test_a_run_opens_with_its_model_vocabulary_labels_and_config(run_dir):
    run = open_run(run_dir)
    assert run.label_names == ["hockey", "mideast", "space"]
    assert not run.model.training and run.max_length == run.config.data.max_length == 30
    assert run.predictor().predict(["nasa orbit"])[0] in run.label_names


def test_a_run_without_checkpoints_is_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError):
        open_run(fake_run(tmp_path / "empty"))


def test_a_split_is_the_runs_own_data_as_it_was_trained_on(run_dir):
    run = open_run(run_dir)
    test = run.load_split("test")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(test) == metrics["data"]["test_docs"]
    assert len(run.load_split("validation")) == metrics["data"]["validation_docs"]
