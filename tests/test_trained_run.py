"""Opening a trained run for explain, export and serve: one door, and the torch-module path."""

from __future__ import annotations

import pytest
import torch
from test_cli import fake_run
from test_trainer import train_tiny_run

from rnnkit.errors import CheckpointError
from rnnkit.models import GRUClassifier
from rnnkit.trained_run import module_path, open_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("trained_run"))


def test_a_run_opens_with_its_model_vocabulary_labels_and_config(run_dir):
    run = open_run(run_dir)
    assert run.label_names == ["hockey", "mideast", "space"]
    assert not run.model.training and run.max_length == run.config.data.max_length == 30
    assert run.predictor().predict(["nasa orbit"])[0] in run.label_names


def test_a_run_without_checkpoints_is_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError):
        open_run(fake_run(tmp_path / "empty"))


def test_the_module_path_copy_gives_the_same_logits_and_runs_the_torch_modules():
    torch.manual_seed(0)
    model = GRUClassifier(20, 3, embedding_dim=4, hidden_size=5, bidirectional=True, kernel="auto").eval()
    native = module_path(model)
    assert native.hparams["kernel"] == "native" and model.hparams["kernel"] == "auto"
    token_ids, lengths = torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([3, 2])
    torch.testing.assert_close(native(token_ids, lengths), model(token_ids, lengths))
    assert module_path(native) is native


def test_models_that_are_not_rnnkit_classifiers_are_left_as_they_are():
    model = torch.nn.Sequential(torch.nn.Embedding(5, 2))
    assert module_path(model) is model
