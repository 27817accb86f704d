"""rnnkit's Python loop computes exactly what the torch modules compute (``nn.LSTM``, ``nn.RNN``).

Tolerances: float32 outputs and gradients within atol 1e-5 / rtol 1e-4 of ``nn.LSTM``/``nn.RNN``
(the same maths, summed in a different order); float64 within 1e-10.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnkit.models.kernels import python_loop

CELLS = {
    "lstm": lambda i, h, **kw: nn.LSTM(i, h, batch_first=True, **kw),
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
def test_python_loop_outputs_and_gradients_match_the_torch_module(cell, shape, dtype):
    torch.manual_seed(0)
    batch, steps, features, hidden = shape
    module = CELLS[cell](features, hidden).to(dtype)
    inputs = torch.randn(batch, steps, features, dtype=dtype)
    grad_out = torch.randn(batch, steps, hidden, dtype=dtype)

    ref_out, ref_grads = _outputs_and_grads(lambda m, x: m(x)[0], module, inputs, grad_out)
    out, grads = _outputs_and_grads(python_loop.run, module, inputs, grad_out)

    torch.testing.assert_close(out, ref_out, **TOLERANCE[dtype])
    names = ["inputs", *(name for name, _ in module.named_parameters())]
    for name, got, expected in zip(names, grads, ref_grads, strict=True):
        torch.testing.assert_close(got, expected, **TOLERANCE[dtype], msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("cell", ["lstm", "rnn_tanh"])
def test_python_loop_matches_without_bias(cell):
    torch.manual_seed(1)
    module = CELLS[cell](3, 4, bias=False)
    inputs, grad_out = torch.randn(2, 6, 3), torch.randn(2, 6, 4)
    ref_out, ref_grads = _outputs_and_grads(lambda m, x: m(x)[0], module, inputs, grad_out)
    out, grads = _outputs_and_grads(python_loop.run, module, inputs, grad_out)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4)
    for got, expected in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", CELLS)
def test_python_loop_gradients_pass_gradcheck_in_float64(cell):
    torch.manual_seed(2)
    module = CELLS[cell](3, 4).double()
    inputs = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    # gradcheck perturbs the module's own parameters in place, so they are passed as inputs too.
    assert torch.autograd.gradcheck(lambda x, *_: python_loop.run(module, x), (inputs, *module.parameters()))


def test_python_loop_skips_gradients_that_are_not_needed():
    module = CELLS["lstm"](3, 4)
    module.weight_ih_l0.requires_grad_(False)
    inputs = torch.randn(2, 5, 3)  # e.g. a frozen embedding: no gradient w.r.t. the inputs
    python_loop.run(module, inputs).sum().backward()
    assert module.weight_ih_l0.grad is None
    assert module.weight_hh_l0.grad is not None


def test_right_padding_does_not_change_states_before_the_length():
    torch.manual_seed(3)
    module = CELLS["lstm"](3, 4)
    short = torch.randn(1, 4, 3)
    padded = torch.cat([short, torch.zeros(1, 6, 3)], dim=1)
    torch.testing.assert_close(python_loop.run(module, padded)[:, :4], python_loop.run(module, short))


def test_long_padded_sequences_stay_finite_forwards_and_backwards():
    torch.manual_seed(4)
    module = CELLS["lstm"](5, 8)
    inputs = torch.cat([torch.randn(2, 3, 5) * 10, torch.zeros(2, 300, 5)], dim=1).requires_grad_()
    out = python_loop.run(module, inputs)
    out[:, 2].sum().backward()  # the encoder reads only positions before each length
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())
    assert torch.isfinite(inputs.grad).all()


def test_python_loop_refuses_modules_it_cannot_reproduce():
    assert not python_loop.supports(nn.GRU(3, 4, batch_first=True), torch.randn(1, 2, 3))  # no GRU loop
    bidirectional = nn.LSTM(3, 4, batch_first=True, bidirectional=True)
    assert not python_loop.supports(bidirectional, torch.randn(1, 2, 3))
    assert not python_loop.supports(nn.GRU(3, 4, num_layers=2, batch_first=True), torch.randn(1, 2, 3))
    assert not python_loop.supports(nn.LSTM(3, 4, batch_first=True, proj_size=2), torch.randn(1, 2, 3))
    assert not python_loop.supports(nn.RNN(3, 4), torch.randn(1, 2, 3))  # time-major
    with pytest.raises(ValueError, match="single-layer"):
        python_loop.run(bidirectional, torch.randn(1, 2, 3))
