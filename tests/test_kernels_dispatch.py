"""``kernel="auto"`` picks, per cell and phase, the path measured fastest; ``native`` is the module."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnkit.errors import ConfigError
from rnnkit.models.kernels import choose_kernel, run_layer, run_recurrent

CELLS = {
    "lstm": lambda i, h, **kw: nn.LSTM(i, h, batch_first=True, **kw),
    "gru": lambda i, h, **kw: nn.GRU(i, h, batch_first=True, **kw),
    "rnn_tanh": lambda i, h, **kw: nn.RNN(i, h, batch_first=True, **kw),
    "rnn_relu": lambda i, h, **kw: nn.RNN(i, h, batch_first=True, nonlinearity="relu", **kw),
}
EXTENSION = "rnnkit.models.kernels.cpp_loop.extension"


def test_native_kernel_always_calls_the_module(monkeypatch):
    module = CELLS["rnn_tanh"](3, 4)
    calls = []
    monkeypatch.setattr(module, "forward", lambda x: calls.append(x) or (torch.zeros(1, 2, 4), None))
    run_recurrent(module, torch.randn(1, 2, 3, requires_grad=True), kernel="native")
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("cell", "flush", "expected"),
    [
        ("rnn_tanh", True, "cpp_loop"),
        ("rnn_tanh", False, "cpp_loop"),
        ("lstm", True, "native"),  # oneDNN's LSTM, fastest while denormals are flushed
        ("lstm", False, "cpp_loop"),
        ("gru", True, "cpp_loop"),
        ("gru", False, "cpp_loop"),
    ],
)
def test_auto_kernel_trains_with_the_path_measured_fastest_on_cpu(monkeypatch, cell, flush, expected):
    monkeypatch.setattr(EXTENSION, lambda: object())
    torch.set_flush_denormal(flush)  # conftest puts the default back
    assert choose_kernel(CELLS[cell](3, 4), torch.randn(2, 5, 3)) == expected


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_bfloat16_autocast_trains_every_cell_on_the_loop_and_predicts_lstm_on_onednn(monkeypatch, cell):
    monkeypatch.setattr(EXTENSION, lambda: object())
    torch.set_flush_denormal(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the loop's bfloat16 step product wins
        assert choose_kernel(CELLS[cell](3, 4), torch.randn(2, 5, 3)) == "cpp_loop"
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():  # inference: oneDNN's LSTM
        assert choose_kernel(CELLS[cell](3, 4), torch.randn(2, 5, 3)) == (
            "native" if cell == "lstm" else "cpp_loop"
        )


def test_a_bidirectional_layer_trains_both_directions_in_one_loop_call_under_bfloat16(monkeypatch):
    monkeypatch.setattr(EXTENSION, lambda: object())
    calls = []

    def run_directions(modules, inputs, dtype, positions):
        calls.append((len(modules), positions[0], positions[1].tolist()))
        return torch.zeros(2, 3, 8)

    monkeypatch.setattr("rnnkit.models.kernels.cpp_loop.run_directions", run_directions)
    torch.set_flush_denormal(True)
    modules = [CELLS["lstm"](3, 4), CELLS["lstm"](3, 4)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        run_layer(modules, torch.randn(2, 3, 3), torch.tensor([3, 2]))
    # The reverse direction's states go back to reading order: step t of a text of length n to n-1-t.
    assert calls == [(2, None, [[2, 1, 0], [1, 0, 2]])]


@pytest.mark.parametrize(
    ("cell", "flush", "expected"),
    [
        ("lstm", True, "native"),  # oneDNN's forward pass beats the loop
        ("lstm", False, "native"),  # denormals slow down its backward, and inference has none
        ("gru", True, "cpp_loop"),  # the loop keeping no gates: 2.5x the module in bfloat16
        ("rnn_tanh", True, "cpp_loop"),
        ("rnn_relu", False, "cpp_loop"),
    ],
)
def test_auto_kernel_predicts_with_the_path_measured_fastest(monkeypatch, cell, flush, expected):
    monkeypatch.setattr(EXTENSION, lambda: object())
    torch.set_flush_denormal(flush)
    with torch.no_grad():
        assert choose_kernel(CELLS[cell](3, 4), torch.randn(2, 5, 3)) == expected
    with torch.inference_mode():
        assert choose_kernel(CELLS[cell](3, 4), torch.randn(2, 5, 3)) == expected
    frozen = CELLS[cell](3, 4).requires_grad_(False)  # frozen weights over frozen inputs: no backward
    assert choose_kernel(frozen, torch.randn(2, 5, 3)) == expected


@pytest.mark.parametrize("cell", CELLS)
def test_inference_without_a_compiler_runs_the_module(monkeypatch, cell):
    monkeypatch.setattr(EXTENSION, lambda: None)
    with torch.no_grad():
        assert choose_kernel(CELLS[cell](3, 4), torch.randn(2, 5, 3)) == "native"


@pytest.mark.parametrize(
    ("cell", "flush", "expected"),
    [
        ("rnn_tanh", True, "python_loop"),
        ("rnn_tanh", False, "python_loop"),
        ("lstm", True, "native"),
        ("lstm", False, "python_loop"),
        ("gru", True, "native"),
        ("gru", False, "native"),
    ],
)
def test_without_a_compiler_auto_trains_with_the_python_loop_where_it_wins(
    monkeypatch, cell, flush, expected
):
    monkeypatch.setattr(EXTENSION, lambda: None)
    torch.set_flush_denormal(flush)
    assert choose_kernel(CELLS[cell](3, 4), torch.randn(2, 5, 3)) == expected
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the Python loop is full precision only
        assert choose_kernel(CELLS[cell](3, 4), torch.randn(2, 5, 3)) == "native"


def test_auto_kernel_runs_what_it_chooses(monkeypatch):
    called = []
    monkeypatch.setattr("rnnkit.models.kernels.dispatch.choose_kernel", lambda m, x: "python_loop")
    monkeypatch.setattr("rnnkit.models.kernels.python_loop.run", lambda m, x: called.append(x) or x)
    run_recurrent(CELLS["rnn_tanh"](3, 4), torch.randn(2, 5, 3), kernel="auto")
    assert len(called) == 1


def test_float64_never_takes_the_float32_compiled_loop(monkeypatch):
    monkeypatch.setattr(EXTENSION, lambda: object())
    module = CELLS["rnn_tanh"](3, 4).double()
    assert choose_kernel(module, torch.randn(2, 5, 3, dtype=torch.float64)) == "python_loop"


def test_auto_and_native_kernels_agree():
    torch.manual_seed(5)
    module = CELLS["rnn_tanh"](3, 4)
    inputs = torch.randn(2, 5, 3, requires_grad=True)
    torch.testing.assert_close(run_recurrent(module, inputs, "auto"), run_recurrent(module, inputs, "native"))


def test_unknown_kernel_names_are_a_config_error():
    with pytest.raises(ConfigError, match=r"model\.kernel"):
        run_recurrent(CELLS["lstm"](3, 4), torch.randn(1, 2, 3), kernel="fast")


def test_a_trace_records_the_module_never_the_loop(monkeypatch):
    """``rnnkit export`` traces the model: the C++ loop is no operator ONNX or TorchScript knows."""
    monkeypatch.setattr(EXTENSION, lambda: object())
    module, chosen = CELLS["gru"](3, 4), []

    def forward(inputs):
        chosen.append(choose_kernel(module, inputs))
        return inputs * 2

    with torch.no_grad():
        torch.jit.trace(forward, torch.randn(2, 5, 3), check_trace=False)
    assert chosen == ["native"]
