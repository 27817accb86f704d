"""The recurrent encoder and poolers: padding-exact sequence handling, checked against torch itself.

Tolerance: float32 results within atol 1e-5 of the reference (same maths, different summation order).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnkit.errors import ConfigError
from rnnkit.models.encoders import CELLS, RecurrentEncoder, RecurrentLayer
from rnnkit.models.pooling import POOLINGS, build_pooling
from rnnkit.models.sequence import padding_mask, reverse_padded

ATOL = 1e-5


def test_padding_mask_marks_real_tokens():
    mask = padding_mask(torch.tensor([2, 0, 3]), 3)
    assert mask.tolist() == [[True, True, False], [False, False, False], [True, True, True]]


def test_reverse_padded_reverses_within_each_length_and_keeps_padding_in_place():
    inputs = torch.tensor([[1, 2, 3, 0], [4, 0, 0, 0], [5, 6, 7, 8]])
    reversed_ = reverse_padded(inputs, torch.tensor([3, 1, 4]))
    assert reversed_.tolist() == [[3, 2, 1, 0], [4, 0, 0, 0], [8, 7, 6, 5]]


def test_reverse_padded_applied_twice_gives_the_input_back_for_feature_tensors():
    inputs, lengths = torch.randn(3, 5, 2), torch.tensor([5, 2, 1])
    torch.testing.assert_close(reverse_padded(reverse_padded(inputs, lengths), lengths), inputs)


def _torch_reference(encoder: RecurrentEncoder, cell: str, num_layers: int) -> nn.RNNBase:
    """A multi-layer bidirectional torch module holding the encoder's weights."""
    first = encoder.layers[0].directions[0]
    reference = CELLS[cell](
        first.input_size, encoder.hidden_size, num_layers=num_layers, bidirectional=True, batch_first=True
    )
    with torch.no_grad():
        for k, layer in enumerate(encoder.layers):
            for suffix, module in zip(("", "_reverse"), layer.directions, strict=True):
                for name, value in module.named_parameters():
                    getattr(reference, name.replace("l0", f"l{k}") + suffix).copy_(value)
    return reference


@pytest.mark.parametrize("kernel", ["native", "auto"])  # auto: the compiled loop for GRU and SimpleRNN
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_bidirectional_multilayer_encoder_matches_torch_on_packed_sequences(cell, kernel):
    torch.manual_seed(0)
    encoder = RecurrentEncoder(cell, 4, 5, num_layers=2, bidirectional=True, kernel=kernel)
    reference = _torch_reference(encoder, cell, num_layers=2)
    lengths = torch.tensor([6, 1, 4, 3])
    inputs = torch.randn(4, 6, 4)
    grad_out = torch.randn(4, 6, 10) * padding_mask(lengths, 6).unsqueeze(2)

    leaf = inputs.clone().requires_grad_()
    outputs = encoder(leaf, lengths)
    (grad_inputs,) = torch.autograd.grad(outputs, leaf, grad_out)
    packed_leaf = inputs.clone().requires_grad_()
    packed = pack_padded_sequence(packed_leaf, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = pad_packed_sequence(reference(packed)[0], batch_first=True)
    (expected_grad,) = torch.autograd.grad(expected, packed_leaf, grad_out)

    mask = padding_mask(lengths, 6).unsqueeze(2)
    torch.testing.assert_close(outputs * mask, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(grad_inputs, expected_grad, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kernel", ["auto", "native"])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_weight_drop_runs_training_passes_with_a_dropconnect_mask_on_the_hidden_weights(cell, kernel):
    assert_weight_drop_is_dropconnect(cell, kernel, "cpu")


def assert_weight_drop_is_dropconnect(cell: str, kernel: str, device: str) -> None:
    """A training pass equals an encoder holding the masked weights; dropped connections get no
    gradient; evaluation uses every connection. (Also run on the GPU by test_cuda.)"""
    torch.manual_seed(0)
    encoder = RecurrentEncoder(cell, 4, 6, num_layers=2, bidirectional=True, weight_drop=0.5, kernel=kernel)
    plain = RecurrentEncoder(cell, 4, 6, num_layers=2, bidirectional=True, kernel=kernel)
    plain.load_state_dict(encoder.state_dict())
    encoder, plain = encoder.to(device), plain.to(device)
    inputs, lengths = torch.randn(3, 5, 4, device=device), torch.tensor([5, 2, 1], device=device)
    hidden_weights = [d.weight_hh_l0 for layer in encoder.layers for d in layer.directions]

    torch.manual_seed(1)
    trained = encoder(inputs, lengths)
    torch.manual_seed(1)  # the same masks, drawn in the same order (layer by layer, forward first)
    masks = [torch.nn.functional.dropout(torch.ones_like(w), 0.5) for w in hidden_weights]
    with torch.no_grad():
        for mask, w in zip(
            masks, [d.weight_hh_l0 for layer in plain.layers for d in layer.directions], strict=True
        ):
            w.mul_(mask)
    torch.testing.assert_close(trained, plain(inputs, lengths), atol=ATOL, rtol=0)

    trained.sum().backward()  # a dropped connection gets no gradient; the real weights do get one
    for mask, w in zip(masks, hidden_weights, strict=True):
        assert (w.grad[mask == 0] == 0).all() and w.grad[mask != 0].abs().sum() > 0

    encoder.eval()  # evaluation uses every connection, unscaled
    plain.load_state_dict(encoder.state_dict())
    torch.testing.assert_close(encoder(inputs, lengths), plain.eval()(inputs, lengths), atol=ATOL, rtol=0)


def test_unit_forget_bias_starts_every_lstm_forget_gate_at_one_and_leaves_the_other_weights_alone():
    torch.manual_seed(0)
    plain = RecurrentEncoder("lstm", 4, 6, num_layers=2, bidirectional=True)
    torch.manual_seed(0)
    opened = RecurrentEncoder("lstm", 4, 6, num_layers=2, bidirectional=True, unit_forget_bias=True)
    forget = slice(6, 12)  # torch orders the LSTM's gates input, forget, cell, output
    for (name, before), after in zip(plain.named_parameters(), opened.parameters(), strict=True):
        if name.endswith("bias_ih_l0"):
            assert (after[forget] == 1).all()
        if name.endswith("bias_hh_l0"):
            assert (after[forget] == 0).all()
        if "bias" in name:  # the input, cell and output gates keep torch's draw
            torch.testing.assert_close(
                torch.cat([after[:6], after[12:]]), torch.cat([before[:6], before[12:]])
            )
        else:
            torch.testing.assert_close(after, before)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_unit_forget_bias_is_refused_for_cells_without_a_forget_gate(cell):
    with pytest.raises(ConfigError, match=f"model.unit_forget_bias.*a {cell} has none"):
        RecurrentEncoder(cell, 4, 6, unit_forget_bias=True)


def test_encoder_output_size_counts_both_directions():
    assert RecurrentEncoder("gru", 3, 7).output_size == 7
    assert RecurrentEncoder("gru", 3, 7, bidirectional=True).output_size == 14


def test_encoder_rejects_an_unknown_cell():
    with pytest.raises(ValueError, match="unknown cell 'transformer'"):
        RecurrentEncoder("transformer", 3, 7)


def test_last_pooling_takes_forward_state_at_length_minus_one_and_reverse_state_at_position_zero():
    outputs = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)  # hidden 2 per direction
    pooled = build_pooling("last", hidden_size=2, bidirectional=True)(outputs, torch.tensor([2, 3]))
    expected = torch.stack(
        [torch.cat([outputs[0, 1, :2], outputs[0, 0, 2:]]), torch.cat([outputs[1, 2, :2], outputs[1, 0, 2:]])]
    )
    torch.testing.assert_close(pooled, expected)


def test_mean_and_max_pooling_ignore_padding_even_when_it_holds_extreme_values():
    outputs = torch.tensor([[[1.0], [3.0], [1e6]], [[-2.0], [-1e6], [1e6]]])
    lengths = torch.tensor([2, 1])
    assert build_pooling("mean", 1, False)(outputs, lengths).flatten().tolist() == [2.0, -2.0]
    assert build_pooling("max", 1, False)(outputs, lengths).flatten().tolist() == [3.0, -2.0]


def test_attention_pooling_gives_padding_zero_weight():
    torch.manual_seed(0)
    pooling = build_pooling("attention", 3, False)
    outputs, lengths = torch.randn(1, 4, 3), torch.tensor([2])
    changed = outputs.clone()
    changed[:, 2:] = 1e3
    torch.testing.assert_close(pooling(outputs, lengths), pooling(changed, lengths))


def test_every_pooling_returns_one_vector_per_text():
    outputs, lengths = torch.randn(3, 5, 8), torch.tensor([5, 1, 2])
    for name in POOLINGS:
        assert build_pooling(name, 4, True)(outputs, lengths).shape == (3, 8)


def test_unknown_pooling_names_the_choices():
    with pytest.raises(ValueError, match="last, mean, max, attention"):
        build_pooling("sum", 4, False)


@pytest.mark.parametrize(
    ("cell", "bidirectional", "kernel", "flush", "builds"),
    [
        ("gru", True, "auto", True, True),
        ("rnn", True, "auto", True, True),
        ("lstm", True, "auto", True, True),  # trains on it under bfloat16 autocast, the default
        ("lstm", False, "auto", False, True),
        ("gru", True, "native", True, False),
    ],
)
def test_layers_build_the_compiled_loop_before_training_only_if_they_may_use_it(
    monkeypatch, cell, bidirectional, kernel, flush, builds
):
    calls = []
    monkeypatch.setattr("rnnkit.models.kernels.cpp_loop.extension", lambda: calls.append(1))
    torch.set_flush_denormal(flush)  # conftest puts the default back
    RecurrentLayer(cell, 3, 4, bidirectional=bidirectional, kernel=kernel).prepare_kernels()
    assert bool(calls) is builds


def _reference_pooling(name: str, outputs: torch.Tensor, lengths: torch.Tensor, hidden: int) -> torch.Tensor:
    """The poolings written plainly with autograd's own operations."""
    if name == "max":
        mask = torch.arange(outputs.size(1)).unsqueeze(0) < lengths.unsqueeze(1)
        return outputs.masked_fill(~mask.unsqueeze(2), float("-inf")).amax(dim=1)
    last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, hidden)
    forward_state = outputs[..., :hidden].gather(1, last).squeeze(1)
    if outputs.size(2) == hidden:
        return forward_state
    return torch.cat([forward_state, outputs[:, 0, hidden:]], dim=1)


@pytest.mark.parametrize("name", ["last", "max"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_last_and_max_pooling_train_with_exactly_the_gradients_of_plain_autograd(name, bidirectional):
    torch.manual_seed(0)
    hidden = 3
    outputs = torch.randn(4, 6, hidden * (2 if bidirectional else 1), dtype=torch.float64)
    outputs[2, 3:] = 1e6  # padding with extreme values gets no gradient
    lengths = torch.tensor([6, 1, 3, 5])
    weights = torch.randn(4, outputs.size(2), dtype=torch.float64)
    grads = []
    reference = lambda o, n: _reference_pooling(name, o, n, hidden)  # noqa: E731
    for pool in (build_pooling(name, hidden, bidirectional), reference):
        leaf = outputs.clone().requires_grad_()
        pooled = pool(leaf, lengths)
        (pooled * weights).sum().backward()
        grads.append((pooled.detach(), leaf.grad))
    assert torch.equal(grads[0][0], grads[1][0])  # bit for bit
    assert torch.equal(grads[0][1], grads[1][1])
    assert grads[0][1][2, 3:].abs().sum() == 0


def test_max_pooling_splits_the_gradient_among_tied_maxima_as_autograd_does():
    outputs = torch.tensor([[[1.0], [3.0], [3.0], [9.0]]])  # length 3: the 9 is padding
    leaf = outputs.clone().requires_grad_()
    build_pooling("max", 1, False)(leaf, torch.tensor([3])).sum().backward()
    assert leaf.grad.flatten().tolist() == [0.0, 0.5, 0.5, 0.0]
