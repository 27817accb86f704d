"""rnnkit's compiled CPU loops compute what the torch modules compute.

Tolerances: float32 outputs and gradients within atol 1e-5 / rtol 1e-4 of ``nn.LSTM``/``nn.GRU``/
``nn.RNN`` (the same maths, summed in a different order). With bfloat16 matrix products (mixed
precision), every output and gradient is within 3% of the largest float32 value of that tensor:
bfloat16 keeps 8 significant bits, so one rounding is up to 0.4% and a few dozen steps add up.

Without a C++ compiler these tests skip, unless ``RNNKIT_REQUIRE_COMPILED`` is set (CI sets it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from rnnkit.models.kernels import cpp_loop
from rnnkit.models.sequence import reverse_padded, reversed_positions
from rnnkit.runtime import denormals_flushed

CELLS = {
    "lstm": lambda i, h, **kw: nn.LSTM(i, h, batch_first=True, **kw),
    "gru": lambda i, h, **kw: nn.GRU(i, h, batch_first=True, **kw),
    "rnn_tanh": lambda i, h, **kw: nn.RNN(i, h, batch_first=True, **kw),
    "rnn_relu": lambda i, h, **kw: nn.RNN(i, h, batch_first=True, nonlinearity="relu", **kw),
}
SHAPES = [(3, 5, 4, 6), (1, 1, 3, 2), (4, 1, 3, 5), (1, 7, 3, 4), (8, 40, 10, 16)]  # B, T, input, hidden
BFLOAT16_RELATIVE = 0.03


@pytest.fixture(scope="module", autouse=True)
def _extension(compiled_extension):
    if compiled_extension is None:
        pytest.skip("no C++ compiler: the compiled kernels are unavailable")


def _outputs_and_grads(run, module: nn.RNNBase, inputs: torch.Tensor, grad_out: torch.Tensor):
    x = inputs.clone().requires_grad_()
    out = run(module, x)
    grads = torch.autograd.grad(out, [x, *module.parameters()], grad_out)
    return out, grads


def _reference(module, inputs, grad_out):
    return _outputs_and_grads(lambda m, x: m(x)[0], module, inputs, grad_out)


def _compiled(dtype):
    return lambda m, x: cpp_loop.run(m, x, dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-T{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("cell", CELLS)
def test_float32_outputs_and_gradients_match_the_torch_module(cell, shape):
    torch.manual_seed(0)
    batch, steps, features, hidden = shape
    module = CELLS[cell](features, hidden)
    inputs, grad_out = torch.randn(batch, steps, features), torch.randn(batch, steps, hidden)

    ref_out, ref_grads = _reference(module, inputs, grad_out)
    out, grads = _outputs_and_grads(_compiled(torch.float32), module, inputs, grad_out)

    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4)
    names = ["inputs", *(name for name, _ in module.named_parameters())]
    for name, got, expected in zip(names, grads, ref_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


# Not rnn_relu: a pre-activation that rounding moves across 0 switches its gradient between 0 and
# 1, so no relative bound holds; rnnkit's RNNClassifier uses tanh.
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_bfloat16_products_stay_within_mixed_precision_error(cell):
    torch.manual_seed(1)
    module = CELLS[cell](10, 16)
    inputs, grad_out = torch.randn(8, 40, 10), torch.randn(8, 40, 16)

    ref_out, ref_grads = _reference(module, inputs, grad_out)
    out, grads = _outputs_and_grads(_compiled(torch.bfloat16), module, inputs, grad_out)

    assert out.dtype == torch.float32
    names = ["outputs", "inputs", *(name for name, _ in module.named_parameters())]
    for name, got, expected in zip(names, [out, *grads], [ref_out, *ref_grads], strict=True):
        error = (got - expected).abs().max() / expected.abs().max()
        assert error < BFLOAT16_RELATIVE, f"{name}: relative error {error:.4f}"
        assert got.dtype == expected.dtype, name


def test_autocast_selects_bfloat16_products():
    torch.manual_seed(2)
    module = CELLS["gru"](4, 8)
    inputs = torch.randn(2, 30, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = cpp_loop.run(module, inputs)
    exact = cpp_loop.run(module, inputs)
    torch.testing.assert_close(mixed, cpp_loop.run(module, inputs, torch.bfloat16))
    assert not torch.equal(mixed, exact)  # bfloat16 rounding shows
    torch.testing.assert_close(mixed, exact, atol=0.03, rtol=0)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_matches_without_bias(cell):
    torch.manual_seed(3)
    module = CELLS[cell](3, 4, bias=False)
    inputs, grad_out = torch.randn(2, 6, 3), torch.randn(2, 6, 4)
    ref_out, ref_grads = _reference(module, inputs, grad_out)
    out, grads = _outputs_and_grads(_compiled(torch.float32), module, inputs, grad_out)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4)
    for got, expected in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", CELLS)
def test_frozen_inputs_and_weights_get_no_gradient(cell):
    module = CELLS[cell](3, 4)
    module.weight_ih_l0.requires_grad_(False)
    inputs = torch.randn(2, 5, 3)  # e.g. a frozen embedding: no gradient w.r.t. the inputs
    cpp_loop.run(module, inputs, torch.float32).sum().backward()
    assert module.weight_ih_l0.grad is None
    assert module.weight_hh_l0.grad is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cell", CELLS)
def test_right_padding_does_not_change_states_before_the_length(cell, dtype):
    torch.manual_seed(4)
    module = CELLS[cell](3, 4)
    short = torch.randn(1, 4, 3)
    padded = torch.cat([short, torch.randn(1, 6, 3)], dim=1)
    run = _compiled(dtype)
    torch.testing.assert_close(run(module, padded)[:, :4], run(module, short), atol=0, rtol=0)


def test_long_padded_sequences_stay_finite_forwards_and_backwards():
    torch.manual_seed(5)
    module = CELLS["lstm"](5, 8)
    inputs = torch.cat([torch.randn(2, 3, 5) * 10, torch.zeros(2, 300, 5)], dim=1).requires_grad_()
    out = cpp_loop.run(module, inputs, torch.float32)
    out[:, 2].sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())
    assert torch.isfinite(inputs.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cell", CELLS)
def test_inference_keeps_no_gates_and_computes_the_training_states(cell, dtype):
    torch.manual_seed(9)
    module, inputs = CELLS[cell](5, 8), torch.randn(6, 11, 5)
    trained = cpp_loop.run(module, inputs.requires_grad_(), dtype)
    with torch.no_grad():
        inferred = cpp_loop.run(module, inputs, dtype)
    assert inferred.grad_fn is None
    torch.testing.assert_close(inferred, trained.detach(), atol=0, rtol=0)  # same arithmetic


def test_runs_in_inference_mode():
    module = CELLS["lstm"](3, 4)
    inputs = torch.randn(2, 5, 3)
    with torch.inference_mode():
        out = cpp_loop.run(module, inputs, torch.float32)
    torch.testing.assert_close(out, module(inputs)[0].detach(), atol=1e-5, rtol=1e-4)


def test_loading_the_library_leaves_the_denormal_mode_alone():

    torch.set_flush_denormal(False)  # conftest puts the default back
    assert cpp_loop.extension() is not None
    assert not denormals_flushed()


def test_refuses_modules_it_cannot_reproduce():
    bidirectional = nn.LSTM(3, 4, batch_first=True, bidirectional=True)
    assert not cpp_loop.supports(bidirectional, torch.randn(1, 2, 3))
    assert not cpp_loop.supports(nn.GRU(3, 4, num_layers=2, batch_first=True), torch.randn(1, 2, 3))
    assert not cpp_loop.supports(nn.LSTM(3, 4, batch_first=True, proj_size=2), torch.randn(1, 2, 3))
    assert not cpp_loop.supports(nn.RNN(3, 4), torch.randn(1, 2, 3))  # time-major
    assert not cpp_loop.supports(nn.RNN(3, 4, batch_first=True).double(), torch.randn(1, 2, 3).double())
    with pytest.raises(ValueError, match="single-layer"):
        cpp_loop.run(bidirectional, torch.randn(1, 2, 3))


def test_the_loops_refuse_inputs_they_would_misread_instead_of_reading_past_them():
    ext = cpp_loop.extension()
    here = [torch.empty(0, dtype=torch.long)]  # one direction, states in place
    proj, bias, w_hh_t = torch.randn(5, 2, 16), torch.zeros(16), torch.randn(4, 16)
    output, ((gates, c, _),) = ext.lstm_forward([proj], [bias], [w_hh_t], here, True)
    assert output.shape == (2, 5, 4)  # (batch, time, hidden)
    grad, w_hh = torch.randn(2, 5, 4), w_hh_t.t().contiguous()
    ext.lstm_backward(grad, here, [gates], [c], [w_hh])  # what the forward pass kept fits
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        ext.lstm_forward([proj.double()], [bias], [w_hh_t], here, True)
    with pytest.raises(
        RuntimeError, match="the transposed recurrent weight must be a Float tensor, got BFloat16"
    ):
        ext.lstm_forward([proj], [bias], [w_hh_t.bfloat16()], here, True)
    with pytest.raises(RuntimeError, match="the activated gates must have shape"):
        ext.lstm_backward(grad, here, [gates[..., :8].contiguous()], [c], [w_hh])
    _, ((scratch, c_inference, _),) = ext.lstm_forward([proj], [bias], [w_hh_t], here, False)
    with pytest.raises(RuntimeError, match="the output's gradient must have shape"):  # inference kept 1 step
        ext.lstm_backward(grad, here, [scratch], [c_inference], [w_hh])
    with pytest.raises(RuntimeError, match="the cell states must have shape"):
        ext.lstm_backward(grad, here, [gates], [c[1:]], [w_hh])
    with pytest.raises(RuntimeError, match="the recurrent weight must have shape"):
        ext.lstm_backward(grad, here, [gates], [c], [w_hh_t])
    with pytest.raises(RuntimeError, match="the output's gradient must be contiguous"):
        ext.lstm_backward(torch.randn(5, 2, 4).transpose(0, 1), here, [gates], [c], [w_hh])
    with pytest.raises(RuntimeError, match="the output's gradient must have shape"):
        ext.lstm_backward(grad.transpose(0, 1).contiguous(), here, [gates], [c], [w_hh])
    _, ((gru_gates, gru_h, hn, _),) = ext.gru_forward(
        [torch.randn(5, 2, 12)], [torch.zeros(12)], [torch.zeros(4)], [torch.randn(4, 12)], here, True
    )
    with pytest.raises(RuntimeError, match="the hidden states must have shape"):
        ext.gru_backward(grad, here, [gru_gates], [hn], [gru_h[1:]], [torch.randn(12, 4)])
    _, ((rnn_h, _),) = ext.rnn_forward(
        [torch.randn(5, 2, 4)], [torch.zeros(4)], [torch.randn(4, 4)], here, False
    )
    with pytest.raises(RuntimeError, match="the hidden states must have shape"):
        ext.rnn_backward(grad, here, [rnn_h[:-1]], [torch.randn(4, 4)], False)
    with pytest.raises(RuntimeError, match="one entry per direction"):
        ext.rnn_forward(
            [torch.randn(5, 2, 4)] * 2, [torch.zeros(4)], [torch.randn(4, 4)] * 2, here * 2, False
        )
    with pytest.raises(RuntimeError, match="one entry per direction"):  # positions too
        ext.rnn_forward(
            [torch.randn(5, 2, 4)] * 2, [torch.zeros(4)] * 2, [torch.randn(4, 4)] * 2, here, False
        )
    with pytest.raises(RuntimeError, match="same shapes"):
        ext.rnn_forward(
            [torch.randn(5, 2, 4), torch.randn(5, 3, 4)], [torch.zeros(4)] * 2, [w_hh] * 2, here * 2, False
        )


@pytest.mark.parametrize("threads", [1, 3, 4])
@pytest.mark.parametrize("cell", CELLS)
def test_row_blocks_on_several_threads_give_the_one_thread_results(cell, threads):
    torch.manual_seed(6)
    module = CELLS[cell](5, 8)
    inputs, grad_out = torch.randn(37, 12, 5), torch.randn(37, 12, 8)  # 37 rows: uneven blocks
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _outputs_and_grads(_compiled(torch.float32), module, inputs, grad_out)
        torch.set_num_threads(threads)
        many = _outputs_and_grads(_compiled(torch.float32), module, inputs, grad_out)
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(many[0], one[0], atol=1e-6, rtol=1e-6)  # rows never mix
    for got, expected in zip(many[1], one[1], strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_row_blocks_run_on_as_many_threads_as_torch_uses():
    """The loops' tasks are an OpenMP region: built without -fopenmp they would all run on the
    calling thread, which left half of a 2-core machine idle until this was measured."""
    if "-fopenmp" not in cpp_loop.openmp_flags():
        bundled_libgomp = (Path(torch.__file__).parent / "lib" / "libgomp.so.1").exists()
        assert not bundled_libgomp, "torch ships libgomp here, so the loops should be built with -fopenmp"
        pytest.skip("torch does not run on GNU OpenMP here: the loops stay on one thread")
    ext, previous = cpp_loop.extension(), torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert ext.task_threads(1, 64) == 2  # two row blocks of one direction
        assert ext.task_threads(2, 64) == 2  # the two directions of a bidirectional layer
        assert ext.task_threads(1, 8) == 1  # too few rows to split
        torch.set_num_threads(1)
        assert ext.task_threads(2, 64) == 1
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cell", CELLS)
def test_two_layers_side_by_side_compute_what_each_computes_alone(cell, dtype):
    torch.manual_seed(7)
    forward, backward = CELLS[cell](5, 8), CELLS[cell](5, 8)
    inputs = [torch.randn(20, 9, 5, requires_grad=True) for _ in range(2)]
    grad_out = torch.randn(20, 9, 16)
    weights = [*inputs, *forward.parameters(), *backward.parameters()]
    together = cpp_loop.run_directions([forward, backward], inputs, dtype)
    together_grads = torch.autograd.grad(together, weights, grad_out)
    alone = torch.cat(
        [cpp_loop.run(m, x, dtype) for m, x in zip([forward, backward], inputs, strict=True)], dim=2
    )
    alone_grads = torch.autograd.grad(alone, weights, grad_out)
    # In bfloat16 a product's rounding may differ with the rows it is split into (threads).
    tolerance = 1e-5 if dtype == torch.float32 else BFLOAT16_RELATIVE
    for got, expected in zip([together, *together_grads], [alone, *alone_grads], strict=True):
        assert (got - expected).abs().max() <= tolerance * expected.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cell", CELLS)
def test_a_reversed_direction_writes_its_states_back_in_reading_order(cell, dtype):
    """With the within-length reversal as positions, the loop does what reverse_padded would do to
    the reverse direction's states, and reads their gradients from the same places."""
    torch.manual_seed(11)
    forward, backward = CELLS[cell](5, 8), CELLS[cell](5, 8)
    lengths = torch.tensor([9, 1, 4, 7, 9, 2])
    inputs = torch.randn(6, 9, 5, requires_grad=True)
    grad_out = torch.randn(6, 9, 16)
    weights = [inputs, *forward.parameters(), *backward.parameters()]
    placed = cpp_loop.run_directions(
        [forward, backward],
        [inputs, reverse_padded(inputs, lengths)],
        dtype,
        [None, reversed_positions(lengths, 9)],
    )
    placed_grads = torch.autograd.grad(placed, weights, grad_out)
    states = [
        cpp_loop.run(m, x, dtype)
        for m, x in zip([forward, backward], [inputs, reverse_padded(inputs, lengths)], strict=True)
    ]
    moved = torch.cat([states[0], reverse_padded(states[1], lengths)], dim=2)
    moved_grads = torch.autograd.grad(moved, weights, grad_out)
    tolerance = 1e-5 if dtype == torch.float32 else BFLOAT16_RELATIVE
    for got, expected in zip([placed, *placed_grads], [moved, *moved_grads], strict=True):
        assert (got - expected).abs().max() <= tolerance * expected.abs().max()


def test_positions_outside_the_steps_are_refused_before_anything_is_written():
    module = CELLS["gru"](3, 4)
    with pytest.raises(RuntimeError, match=r"positions must lie in \[0, time\)"):
        cpp_loop.run_directions(
            [module], [torch.randn(2, 3, 3)], torch.float32, [torch.tensor([[0, 1, 3], [2, 1, 0]])]
        )
    with pytest.raises(RuntimeError, match="positions must have shape"):
        cpp_loop.run_directions([module], [torch.randn(2, 3, 3)], torch.float32, [torch.tensor([[0, 1, 2]])])


def test_layers_side_by_side_must_match():
    with pytest.raises(ValueError, match="same cell"):
        cpp_loop.run_directions(
            [nn.GRU(3, 4, batch_first=True), nn.GRU(3, 5, batch_first=True)], [torch.randn(2, 3, 3)] * 2
        )


# ---------------------------------------------------------------- int8 inference (rnnkit predict --quantize)
INT8_ABSOLUTE = 0.03  # states in [-1, 1]: 8-bit states and int8 weights, over 40 steps
INT8_CELLS = ("lstm", "gru", "rnn_tanh")


def _int8_module(cell: str, features: int, hidden: int) -> nn.RNNBase:
    module = CELLS[cell](features, hidden)
    if not cpp_loop.supports_int8(module):
        pytest.skip("int8 step products need a CPU with AVX512-VNNI")
    return module


def test_int8_columns_keep_each_weight_within_half_a_step_of_its_columns_scale():
    torch.manual_seed(8)
    matrix = torch.randn(16, 12)
    quantized, scale = cpp_loop.int8_columns(matrix)
    assert quantized.dtype == torch.int8 and quantized.abs().amax(dim=0).eq(127).all()
    assert ((quantized.float() * scale - matrix).abs() <= scale / 2 + 1e-7).all()


@pytest.mark.parametrize("cell", INT8_CELLS)
def test_int8_step_products_stay_within_8_bit_error_of_the_float_layer(cell):
    torch.manual_seed(9)
    module = _int8_module(cell, 10, 16)
    inputs = torch.randn(8, 40, 10)
    with torch.inference_mode():
        expected = module(inputs)[0]
        got = cpp_loop.run(module, inputs, torch.int8)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert (got - expected).abs().max() <= INT8_ABSOLUTE
    assert not torch.equal(got, cpp_loop.run(module, inputs, torch.float32).detach())  # it did quantise


@pytest.mark.parametrize("cell", INT8_CELLS)
def test_int8_inference_is_exact_about_padding_and_directions_side_by_side(cell):
    torch.manual_seed(10)
    forward, backward = _int8_module(cell, 3, 8), _int8_module(cell, 3, 8)
    short = torch.randn(20, 4, 3)
    padded = torch.cat([short, torch.randn(20, 6, 3)], dim=1)
    with torch.inference_mode():
        torch.testing.assert_close(
            cpp_loop.run(forward, padded, torch.int8)[:, :4],
            cpp_loop.run(forward, short, torch.int8),
            atol=0,
            rtol=0,
        )
        together = cpp_loop.run_directions([forward, backward], [padded, padded.flip(1)], torch.int8)
        alone = [cpp_loop.run(m, x, torch.int8) for m, x in [(forward, padded), (backward, padded.flip(1))]]
    torch.testing.assert_close(together, torch.cat(alone, dim=2), atol=0, rtol=0)  # integer sums: exact


@pytest.mark.parametrize(
    ("module", "why"),
    [
        (nn.RNN(3, 8, batch_first=True, nonlinearity="relu"), "relu states are not in [-1, 1]"),
        (nn.GRU(3, 6, batch_first=True), "hidden size not divisible by 4"),
    ],
    ids=["relu", "width"],
)
def test_int8_products_refuse_layers_whose_states_they_cannot_hold(module, why):
    assert not cpp_loop.supports_int8(module), why
    with pytest.raises(ValueError, match="int8 step products are for inference"), torch.inference_mode():
        cpp_loop.run(module, torch.randn(2, 3, 3), torch.int8)


def test_int8_products_refuse_training():
    module = _int8_module("gru", 3, 8)
    with pytest.raises(ValueError, match="int8 step products are for inference"):
        cpp_loop.run(module, torch.randn(2, 3, 3), torch.int8)
