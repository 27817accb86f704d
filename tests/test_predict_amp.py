"""Mixed-precision prediction: ``rnnkit.load(run, amp=True)`` and ``rnnkit predict --amp``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_trainer import train_tiny_run

import rnnkit
import rnnkit.predict
from rnnkit.cli import main

TEXTS = ["nasa launch orbit moon", "puck goal playoff", "peace treaty land", ""]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("amp")
    return train_tiny_run(root, **{"train.epochs": 4, "train.lr": 0.03, "model.bidirectional": True})


@pytest.fixture(autouse=True)
def private_cache(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNKIT_CACHE", str(run_dir.parent / "cache"))


def test_amp_reaches_the_prediction_loop_and_is_off_by_default(run_dir, monkeypatch):
    seen = []
    real = rnnkit.predict.predict_dataset

    def spy(model, dataset, batch_size, device, amp=False):
        seen.append(amp)
        return real(model, dataset, batch_size, device, amp)

    monkeypatch.setattr(rnnkit.predict, "predict_dataset", spy)
    rnnkit.load(run_dir).predict_proba(TEXTS)
    rnnkit.load(run_dir, amp=True).predict_proba(TEXTS)
    assert seen == [False, True]


def test_amp_probabilities_stay_close_to_float32(run_dir):
    exact = rnnkit.load(run_dir).predict_proba(TEXTS)
    mixed = rnnkit.load(run_dir, amp=True).predict_proba(TEXTS)
    assert mixed.shape == exact.shape
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-5)
    assert np.abs(mixed - exact).max() < 0.05  # bfloat16 keeps 8 significant bits


def test_the_cli_predicts_with_amp_and_refuses_it_beside_quantize(run_dir, capsys):
    assert main(["predict", "--run-dir", str(run_dir), "--amp", *TEXTS[:2]]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = rnnkit.load(run_dir, amp=True).predict_top_k(TEXTS[:2], 1)
    assert [line.split("\t")[0] for line in lines] == [top[0][0] for top in expected]
    assert main(["predict", "--run-dir", str(run_dir), "--amp", "--quantize", "x"]) == 2
    assert "choose --quantize or --amp, not both" in capsys.readouterr().err
