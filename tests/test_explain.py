"""``rnnkit explain``: integrated-gradients attributions per token, for one text or a whole split."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli import fails_with
from test_trainer import train_tiny_run

from rnnkit.cli import main
from rnnkit.config import Config
from rnnkit.data import Tokenizer, Vocabulary, collate
from rnnkit.explain import Explainer, backward_context
from rnnkit.models import GRUClassifier, LSTMClassifier, RNNClassifier
from rnnkit.runs import TrainedRun, open_run

WORDS = ["orbit", "rocket", "puck", "goal", "peace", "land", "the", "a"]
CLASSES = {"rnn": RNNClassifier, "lstm": LSTMClassifier, "gru": GRUClassifier}


def untrained_run(cell: str, pooling: str, bidirectional: bool, num_layers: int = 1) -> TrainedRun:
    """A run around a freshly initialised model: attributions are maths, not a trained skill."""
    torch.manual_seed(0)
    vocab = Vocabulary(["<pad>", "<unk>", *WORDS])
    model = CLASSES[cell](
        len(vocab),
        3,
        embedding_dim=6,
        hidden_size=5,
        num_layers=num_layers,
        bidirectional=bidirectional,
        pooling=pooling,
    ).eval()
    return TrainedRun(
        path=Path("untrained"),
        config=Config(),
        vocab=vocab,
        tokenizer=Tokenizer(),
        label_names=["x", "y", "z"],
        model=model,
        max_length=12,
        device=torch.device("cpu"),
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    settings = {"train.epochs": 3, "model.bidirectional": True, "model.pooling": "attention"}
    return train_tiny_run(tmp_path_factory.mktemp("explain"), **settings)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_attributions_add_up_to_the_logit_difference_for_every_cell_and_pooling(cell, pooling, bidirectional):
    explanation = Explainer(untrained_run(cell, pooling, bidirectional, num_layers=2), steps=50).explain(
        "the rocket and the puck land on a goal"
    )
    assert len(explanation.attributions) == len(explanation.tokens) == 9
    total, gap = sum(explanation.attributions), explanation.logit_difference
    assert total - gap == pytest.approx(explanation.convergence_delta, abs=1e-6)
    # Max pooling switches its argmax along the integration path: the integrand has jumps.
    assert abs(explanation.convergence_delta) <= 0.02 * abs(gap) + 1e-5


def test_fewer_integration_steps_give_a_larger_completeness_error():
    run = untrained_run("gru", "max", bidirectional=True)
    coarse = Explainer(run, steps=2).explain("orbit rocket the goal")
    fine = Explainer(run, steps=50).explain("orbit rocket the goal")
    assert abs(fine.convergence_delta) < abs(coarse.convergence_delta)


def test_a_text_in_a_padded_batch_gets_the_attributions_it_gets_alone_and_padding_gets_none():
    run = untrained_run("lstm", "mean", bidirectional=True)
    explainer = Explainer(run)
    texts = ["orbit rocket the goal land", "puck"]
    rows = [(run.vocab.encode(text).astype(np.int64), 0, i) for i, text in enumerate(texts)]
    together = explainer.attribute(collate(rows)).attributions
    alone = explainer.attribute(collate(rows[1:])).attributions
    np.testing.assert_allclose(together[1, :1], alone[0], atol=1e-5)
    assert torch.all(together[1, 1:] == 0)


def test_the_target_class_can_be_chosen_and_the_prediction_is_still_reported():
    explainer = Explainer(untrained_run("gru", "last", bidirectional=False))
    explanation = explainer.explain("orbit rocket", target="z")
    assert explanation.target == "z"
    assert explanation.predicted == max(explanation.probabilities, key=explanation.probabilities.get)


def test_only_the_first_max_length_tokens_are_explained_and_unknown_words_are_marked():
    explanation = Explainer(untrained_run("rnn", "max", bidirectional=False)).explain(
        "zebra " + "orbit " * 20
    )
    assert len(explanation.tokens) == 12
    assert explanation.known == [False] + [True] * 11


def test_attention_weights_come_with_attention_pooling_only():
    text = "the rocket and the goal"
    with_attention = Explainer(untrained_run("gru", "attention", bidirectional=True)).explain(text)
    assert len(with_attention.attention) == 5 and sum(with_attention.attention) == pytest.approx(1.0)
    assert Explainer(untrained_run("gru", "max", bidirectional=True)).explain(text).attention is None


def test_cudnn_is_switched_off_for_the_backward_pass_on_cuda_only():
    """cuDNN's RNN backward refuses eval mode (Captum #564). Checked without a GPU: the switch only."""
    before = torch.backends.cudnn.enabled
    with backward_context(torch.device("cuda")):
        assert torch.backends.cudnn.enabled is False
    with backward_context(torch.device("cpu")):
        assert torch.backends.cudnn.enabled is before
    assert torch.backends.cudnn.enabled is before


def test_the_cli_explains_a_text_in_the_terminal_and_as_a_page(run_dir, tmp_path, capsys):
    page = tmp_path / "why.html"
    argv = [
        "explain",
        "--run-dir",
        str(run_dir),
        "nasa rocket launch",
        "--html",
        str(page),
        "--color",
        "always",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "\x1b[48;2;" in out and "completeness:" in out and "attention:" in out
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and ">rocket</span>" in html and "Probabilities" in html
    assert "<script" not in html and "http" not in html  # self-contained


def test_the_cli_prints_json_for_programs(run_dir, capsys):
    assert main(["explain", "--run-dir", str(run_dir), "puck goal", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tokens"] == ["puck", "goal"] and len(result["attributions"]) == 2
    assert result["target"] == result["predicted"] in ("hockey", "mideast", "space")
    assert abs(result["convergence_delta"]) < 1e-3


def test_the_cli_ranks_the_words_of_each_class_over_a_split(run_dir, tmp_path, capsys):
    png = tmp_path / "words.png"
    argv = ["explain", "--run-dir", str(run_dir), "--split", "test", "--top-words", "4", "--png", str(png)]
    assert main([*argv, "--limit", "12", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["documents"] == 12
    assert sum(entry["documents"] for entry in result["classes"].values()) == 12
    assert all(len(entry["words"]) <= 4 for entry in result["classes"].values())
    assert png.read_bytes().startswith(b"\x89PNG")


def test_an_unknown_target_names_the_labels(run_dir, capsys):
    fails_with(
        capsys, ["explain", "--run-dir", str(run_dir), "x", "--target", "spaec"], "did you mean 'space'"
    )


def test_a_text_and_a_split_together_are_refused(run_dir, capsys):
    fails_with(capsys, ["explain", "--run-dir", str(run_dir), "x", "--split", "test"], "not both")


def test_without_captum_the_cli_names_the_pip_command(run_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    fails_with(capsys, ["explain", "--run-dir", str(run_dir), "x"], "pip install 'rnnkit[explain]'")


def test_the_run_is_opened_with_the_torch_modules_for_gradients(run_dir):
    explainer = Explainer(open_run(run_dir))
    assert explainer.model.hparams["kernel"] == "native"


def test_a_text_that_is_not_utf8_is_explained_with_replacement_characters(run_dir, tmp_path, capsys):
    page = tmp_path / "why.html"
    assert main(["explain", "--run-dir", str(run_dir), "nasa \udc80", "--html", str(page)]) == 0
    assert "\ufffd" in page.read_text(encoding="utf-8")
    assert "TEXT had bytes that are not UTF-8" in capsys.readouterr().err


def test_a_number_of_steps_that_would_fill_the_memory_is_one_line(run_dir, capsys):
    argv = ["explain", "--run-dir", str(run_dir), "nasa", "--steps", "1000000000"]
    fails_with(capsys, argv, "--steps must be between 2 and 10000, got 1000000000")
