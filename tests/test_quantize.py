"""Dynamic int8 inference: ``open_run(..., quantize=True)``, ``rnnkit predict/evaluate --quantize``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_trainer import train_tiny_run
from torch import nn

import rnnkit
from rnnkit.cli import main
from rnnkit.errors import ConfigError
from rnnkit.models.encoders import RecurrentLayer
from rnnkit.models.kernels import INT8, cpp_loop
from rnnkit.models.quantize import quantize_dynamic_int8
from rnnkit.runs import open_run

TEXTS = ["nasa launch orbit moon", "puck goal playoff", "peace treaty land", ""]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("quantize")
    return train_tiny_run(root, **{"train.epochs": 4, "train.lr": 0.03, "model.bidirectional": True})


@pytest.fixture(autouse=True)
def private_cache(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNKIT_CACHE", str(run_dir.parent / "cache"))


def test_the_recurrent_and_linear_layers_go_int8_and_the_float_model_is_untouched(run_dir):
    float_run, int8_run = open_run(run_dir), open_run(run_dir, quantize=True)
    int8_types = {type(m) for m in int8_run.model.modules()}
    int8 = torch.ao.nn.quantized.dynamic
    assert int8.Linear in int8_types and nn.Linear not in int8_types
    layers = [m for m in int8_run.model.modules() if isinstance(m, RecurrentLayer)]
    gru = next(m for m in float_run.model.modules() if isinstance(m, nn.GRU))
    if cpp_loop.supports_int8(gru):  # the GRU runs the compiled loop with int8 step products
        assert {layer.kernel for layer in layers} == {INT8}
    else:  # torch's int8 GRU
        assert int8.GRU in int8_types and nn.GRU not in int8_types
    assert int8_run.quantized and not float_run.quantized
    assert any(isinstance(m, nn.GRU) for m in float_run.model.modules())
    model = open_run(run_dir).model
    quantize_dynamic_int8(model)
    assert any(isinstance(m, nn.GRU) for m in model.modules())  # a copy was quantised


def test_int8_probabilities_stay_close_to_the_float_models(run_dir):
    exact = rnnkit.load(run_dir).predict_proba(TEXTS)
    int8 = rnnkit.load(run_dir, quantize=True).predict_proba(TEXTS)
    assert int8.shape == exact.shape
    np.testing.assert_allclose(int8.sum(axis=1), 1.0, rtol=1e-5)
    assert np.abs(int8 - exact).max() < 0.05


def test_quantisation_is_refused_off_the_cpu_in_one_line(run_dir, capsys):
    with pytest.raises(ConfigError, match="int8 quantisation runs on the CPU"):
        open_run(run_dir, torch.device("cuda"), quantize=True)
    assert main(["predict", "--run-dir", str(run_dir), "--quantize", "--device", "cuda", "x"]) == 2
    assert "--quantize runs the model on the CPU" in capsys.readouterr().err


def test_the_cli_predicts_and_evaluates_with_int8_weights(run_dir, capsys):
    assert main(["predict", "--run-dir", str(run_dir), "--quantize", *TEXTS[:2]]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = rnnkit.load(run_dir, quantize=True).predict_top_k(TEXTS[:2], 1)
    assert [line.split("\t")[0] for line in lines] == [top[0][0] for top in expected]
    scores = {}
    for flag in ([], ["--quantize"]):
        assert main(["evaluate", "--run-dir", str(run_dir), "--json", *flag]) == 0
        scores[bool(flag)] = json.loads(capsys.readouterr().out)["metrics"]
    assert scores[True].keys() == scores[False].keys()
    assert abs(scores[True]["loss"] - scores[False]["loss"]) < 0.05
