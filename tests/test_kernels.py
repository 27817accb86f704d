"""rnnkit's Python fused kernels compute exactly what the torch modules compute; ``auto`` picks a path.

Tolerances: float32 outputs and gradients within atol 1e-5 / rtol 1e-4 of ``nn.LSTM``/``nn.GRU``/
``nn.RNN`` (the same maths, summed in a different order); float64 within 1e-10.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnkit.errors import ConfigError
from rnnkit.models.kernels import choose_kernel, fused_recurrent, run_recurrent, supports_fused

CELLS = {
    "lstm": lambda i, h, **kw: nn.LSTM(i, h, batch_first=True, **kw),
    "gru": lambda i, h, **kw: nn.GRU(i, h, batch_first=True, **kw),
    "rnn_tanh": lambda i, h, **kw: nn.RNN(i, h, batch_first=True, **kw),
    "rnn_relu": lambda i, h, **kw: nn.RNN(i, h, batch_first=True, nonlinearity="relu", **kw),
}
SHAPES = [
    (3, 5, 4, 6),
    (1, 1, 3, 2),
    (4, 1, 3, 5),
    (1, 7, 3, 4),
    (8, 40, 10, 16),
]  # batch, time, input, hidden
TOLERANCE = {torch.float32: {"atol": 1e-5, "rtol": 1e-4}, torch.float64: {"atol": 1e-10, "rtol": 1e-10}}


def _outputs_and_grads(run, module: nn.RNNBase, inputs: torch.Tensor, grad_out: torch.Tensor):
    x = inputs.clone().requires_grad_()
    out = run(module, x)
    grads = torch.autograd.grad(out, [x, *module.parameters()], grad_out)
    return out, grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-T{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("cell", CELLS)
def test_fused_outputs_and_gradients_match_the_torch_module(cell, shape, dtype):
    torch.manual_seed(0)
    batch, steps, features, hidden = shape
    module = CELLS[cell](features, hidden).to(dtype)
    inputs = torch.randn(batch, steps, features, dtype=dtype)
    grad_out = torch.randn(batch, steps, hidden, dtype=dtype)

    ref_out, ref_grads = _outputs_and_grads(lambda m, x: m(x)[0], module, inputs, grad_out)
    out, grads = _outputs_and_grads(fused_recurrent, module, inputs, grad_out)

    torch.testing.assert_close(out, ref_out, **TOLERANCE[dtype])
    names = ["inputs", *(name for name, _ in module.named_parameters())]
    for name, got, expected in zip(names, grads, ref_grads, strict=True):
        torch.testing.assert_close(got, expected, **TOLERANCE[dtype], msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_fused_matches_without_bias(cell):
    torch.manual_seed(1)
    module = CELLS[cell](3, 4, bias=False)
    inputs, grad_out = torch.randn(2, 6, 3), torch.randn(2, 6, 4)
    ref_out, ref_grads = _outputs_and_grads(lambda m, x: m(x)[0], module, inputs, grad_out)
    out, grads = _outputs_and_grads(fused_recurrent, module, inputs, grad_out)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4)
    for got, expected in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", CELLS)
def test_fused_gradients_pass_gradcheck_in_float64(cell):
    torch.manual_seed(2)
    module = CELLS[cell](3, 4).double()
    inputs = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    # gradcheck perturbs the module's own parameters in place, so they are passed as inputs too.
    assert torch.autograd.gradcheck(lambda x, *_: fused_recurrent(module, x), (inputs, *module.parameters()))


def test_fused_skips_gradients_that_are_not_needed():
    module = CELLS["lstm"](3, 4)
    module.weight_ih_l0.requires_grad_(False)
    inputs = torch.randn(2, 5, 3)  # e.g. a frozen embedding: no gradient w.r.t. the inputs
    fused_recurrent(module, inputs).sum().backward()
    assert module.weight_ih_l0.grad is None
    assert module.weight_hh_l0.grad is not None


def test_right_padding_does_not_change_states_before_the_length():
    torch.manual_seed(3)
    module = CELLS["gru"](3, 4)
    short = torch.randn(1, 4, 3)
    padded = torch.cat([short, torch.zeros(1, 6, 3)], dim=1)
    torch.testing.assert_close(fused_recurrent(module, padded)[:, :4], fused_recurrent(module, short))


def test_long_padded_sequences_stay_finite_forwards_and_backwards():
    torch.manual_seed(4)
    module = CELLS["lstm"](5, 8)
    inputs = torch.cat([torch.randn(2, 3, 5) * 10, torch.zeros(2, 300, 5)], dim=1).requires_grad_()
    out = fused_recurrent(module, inputs)
    out[:, 2].sum().backward()  # the encoder reads only positions before each length
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())
    assert torch.isfinite(inputs.grad).all()


def test_native_kernel_always_calls_the_module(monkeypatch):
    module = CELLS["rnn_tanh"](3, 4)
    calls = []
    monkeypatch.setattr(module, "forward", lambda x: calls.append(x) or (torch.zeros(1, 2, 4), None))
    run_recurrent(module, torch.randn(1, 2, 3, requires_grad=True), kernel="native")
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("cell", "flush", "expected"),
    [
        ("rnn_tanh", True, "compiled"),
        ("rnn_tanh", False, "compiled"),
        ("lstm", True, "native"),  # oneDNN's LSTM, fastest while denormals are flushed
        ("lstm", False, "compiled"),
        ("gru", True, "compiled"),
        ("gru", False, "compiled"),
    ],
)
def test_auto_kernel_trains_with_the_path_measured_fastest_on_cpu(monkeypatch, cell, flush, expected):
    monkeypatch.setattr("rnnkit.models.compiled.extension", lambda: object())
    torch.set_flush_denormal(flush)  # conftest puts the default back
    assert choose_kernel(CELLS[cell](3, 4), torch.randn(2, 5, 3)) == expected


@pytest.mark.parametrize(
    ("cell", "expected"), [("lstm", "native"), ("gru", "compiled"), ("rnn_tanh", "compiled")]
)
def test_bfloat16_autocast_trains_with_the_same_paths(monkeypatch, cell, expected):
    monkeypatch.setattr("rnnkit.models.compiled.extension", lambda: object())
    torch.set_flush_denormal(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert choose_kernel(CELLS[cell](3, 4), torch.randn(2, 5, 3)) == expected


@pytest.mark.parametrize("cell", CELLS)
def test_auto_kernel_runs_the_module_for_inference(monkeypatch, cell):
    monkeypatch.setattr("rnnkit.models.compiled.extension", lambda: object())
    with torch.no_grad():
        assert choose_kernel(CELLS[cell](3, 4), torch.randn(2, 5, 3)) == "native"
    with torch.inference_mode():
        assert choose_kernel(CELLS[cell](3, 4), torch.randn(2, 5, 3)) == "native"


def test_frozen_modules_over_frozen_inputs_run_the_module(monkeypatch):
    monkeypatch.setattr("rnnkit.models.compiled.extension", lambda: object())
    module = CELLS["gru"](3, 4).requires_grad_(False)
    assert choose_kernel(module, torch.randn(2, 5, 3)) == "native"


@pytest.mark.parametrize(
    ("cell", "flush", "expected"),
    [
        ("rnn_tanh", True, "fused"),
        ("rnn_tanh", False, "fused"),
        ("lstm", True, "native"),
        ("lstm", False, "fused"),
        ("gru", True, "native"),
        ("gru", False, "native"),
    ],
)
def test_without_a_compiler_auto_trains_with_the_python_loop_where_it_wins(
    monkeypatch, cell, flush, expected
):
    monkeypatch.setattr("rnnkit.models.compiled.extension", lambda: None)
    torch.set_flush_denormal(flush)
    assert choose_kernel(CELLS[cell](3, 4), torch.randn(2, 5, 3)) == expected
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the Python loop is full precision only
        assert choose_kernel(CELLS[cell](3, 4), torch.randn(2, 5, 3)) == "native"


def test_auto_kernel_runs_what_it_chooses(monkeypatch):
    called = []
    monkeypatch.setattr("rnnkit.models.kernels.choose_kernel", lambda m, x: "fused")
    monkeypatch.setattr("rnnkit.models.kernels.fused_recurrent", lambda m, x: called.append(x) or x)
    run_recurrent(CELLS["rnn_tanh"](3, 4), torch.randn(2, 5, 3), kernel="auto")
    assert len(called) == 1


def test_float64_never_takes_the_float32_compiled_loop(monkeypatch):
    monkeypatch.setattr("rnnkit.models.compiled.extension", lambda: object())
    module = CELLS["rnn_tanh"](3, 4).double()
    assert choose_kernel(module, torch.randn(2, 5, 3, dtype=torch.float64)) == "fused"


def test_auto_and_native_kernels_agree():
    torch.manual_seed(5)
    module = CELLS["rnn_tanh"](3, 4)
    inputs = torch.randn(2, 5, 3, requires_grad=True)
    torch.testing.assert_close(run_recurrent(module, inputs, "auto"), run_recurrent(module, inputs, "native"))


def test_unknown_kernel_names_are_a_config_error():
    with pytest.raises(ConfigError, match=r"model\.kernel"):
        run_recurrent(CELLS["lstm"](3, 4), torch.randn(1, 2, 3), kernel="fast")


def test_fused_refuses_modules_it_cannot_reproduce():
    bidirectional = nn.LSTM(3, 4, batch_first=True, bidirectional=True)
    assert not supports_fused(bidirectional, torch.randn(1, 2, 3))
    assert not supports_fused(nn.GRU(3, 4, num_layers=2, batch_first=True), torch.randn(1, 2, 3))
    assert not supports_fused(nn.LSTM(3, 4, batch_first=True, proj_size=2), torch.randn(1, 2, 3))
    assert not supports_fused(nn.RNN(3, 4), torch.randn(1, 2, 3))  # time-major
    with pytest.raises(ValueError, match="single-layer"):
        fused_recurrent(bidirectional, torch.randn(1, 2, 3))
