"""Mixed-precision prediction: ``rnnkit.load(run, amp=True)`` and ``rnnkit predict --amp``."""

from __future__ import annotations

import numpy as np

import rnnkit
from rnnkit.cli import main

TEXTS = ["nasa launch orbit moon", "puck goal playoff", "peace treaty land", ""]


def test_amp_reaches_the_prediction_loop_and_is_off_by_default(finished_run, amp_of_predictions):
    rnnkit.load(finished_run).predict_proba(TEXTS)
    rnnkit.load(finished_run, amp=True).predict_proba(TEXTS)
    assert amp_of_predictions == [False, True]


def test_amp_probabilities_stay_close_to_float32(finished_run):
    exact = rnnkit.load(finished_run).predict_proba(TEXTS)
    mixed = rnnkit.load(finished_run, amp=True).predict_proba(TEXTS)
    assert mixed.shape == exact.shape
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-5)
    assert np.abs(mixed - exact).max() < 0.05  # bfloat16 keeps 8 significant bits


def test_the_cli_predicts_with_amp_and_refuses_it_beside_quantize(finished_run, capsys):
    assert main(["predict", "--run-dir", str(finished_run), "--amp", *TEXTS[:2]]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = rnnkit.load(finished_run, amp=True).predict_top_k(TEXTS[:2], 1)
    assert [line.split("\t")[0] for line in lines] == [top[0][0] for top in expected]
    assert main(["predict", "--run-dir", str(finished_run), "--amp", "--quantize", "x"]) == 2
    assert "choose --quantize or --amp, not both" in capsys.readouterr().err
