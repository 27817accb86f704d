"""RNN/LSTM/GRU classifiers: shapes, padding invariance, embeddings, gradients and checkpoints.

Padding tolerance: logits of a text alone and inside a padded batch agree within atol 1e-5 in eval
mode (float32; batching only changes the order of floating-point sums).
"""

from __future__ import annotations

import dataclasses
import inspect
import io

import pytest
import torch
from torch import nn

from rnnkit.config import ModelConfig
from rnnkit.models import GRUClassifier, LSTMClassifier, RecurrentClassifier, RNNClassifier, module_path
from rnnkit.models.pooling import POOLINGS

CLASSES = [RNNClassifier, LSTMClassifier, GRUClassifier]
PADDING_ATOL = 1e-5
VOCAB, NUM_CLASSES = 30, 4


def small(cls: type[RecurrentClassifier], **kwargs) -> RecurrentClassifier:
    torch.manual_seed(0)
    return cls(VOCAB, NUM_CLASSES, **{"embedding_dim": 6, "hidden_size": 5, **kwargs})


def padded_batch(
    lengths: list[int], extra_padding: int = 0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids (never 0) right-padded with 0 to ``max(lengths) + extra_padding``."""
    generator = torch.Generator().manual_seed(seed)
    lengths_t = torch.tensor(lengths)
    ids = torch.randint(1, VOCAB, (len(lengths), max(lengths) + extra_padding), generator=generator)
    ids[torch.arange(ids.size(1)) >= lengths_t.unsqueeze(1)] = 0
    return ids, lengths_t


def assert_padding_never_changes_logits(model: RecurrentClassifier, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    lengths = [1, 9, *torch.randint(1, 10, (4,), generator=generator).tolist()]
    ids, lengths_t = padded_batch(lengths, extra_padding=2, seed=seed)
    device = next(model.parameters()).device  # test_cuda.py checks a model on the GPU with it
    ids, lengths_t = ids.to(device), lengths_t.to(device)
    model.eval()
    with torch.no_grad():
        batch_logits = model(ids, lengths_t)
        for i, length in enumerate(lengths):
            alone = model(ids[i : i + 1, :length], lengths_t[i : i + 1])
            torch.testing.assert_close(batch_logits[i : i + 1], alone, atol=PADDING_ATOL, rtol=0)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.cell)
def test_a_texts_logits_are_the_same_alone_and_inside_a_padded_batch(cls, bidirectional, pooling):
    model = small(cls, bidirectional=bidirectional, pooling=pooling)
    assert_padding_never_changes_logits(model, seed=1)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.cell)
def test_padding_never_changes_logits_of_a_deep_model_with_a_hidden_head(cls):
    model = small(cls, num_layers=3, bidirectional=True, pooling="attention", head_hidden=7, dropout=0.5)
    assert_padding_never_changes_logits(model, seed=2)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.cell)
def test_forward_returns_one_row_of_logits_per_text(cls):
    ids, lengths = padded_batch([3, 1, 5])
    assert small(cls, bidirectional=True)(ids, lengths).shape == (3, NUM_CLASSES)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.cell)
def test_the_readme_snippet_runs_as_written(cls):
    model = cls(
        vocab_size=20000,
        num_classes=20,
        embedding_dim=100,
        hidden_size=128,
        num_layers=1,
        bidirectional=True,
        pooling="max",
    )
    token_ids, lengths = torch.tensor([[5, 17, 9, 0], [3, 8, 21, 42]]), torch.tensor([3, 4])
    logits = model(token_ids, lengths)
    probs = model.predict_proba(token_ids, lengths)
    assert logits.shape == probs.shape == (2, 20)


def test_predict_proba_is_the_softmax_of_the_logits_with_dropout_off():
    model = small(LSTMClassifier, embedding_dropout=0.5, head_dropout=0.5)
    ids, lengths = padded_batch([4, 2, 7])
    probs = model.predict_proba(ids, lengths)
    assert model.training, "predict_proba must restore the training mode"
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(probs, model.eval()(ids, lengths).softmax(dim=1))


def test_every_parameter_receives_a_gradient():
    model = small(
        GRUClassifier, num_layers=2, bidirectional=True, pooling="attention", head_hidden=8, embedding_dim=6
    )
    ids, lengths = padded_batch([5, 1, 3])
    nn.functional.cross_entropy(model(ids, lengths), torch.tensor([0, 1, 3])).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_native_and_auto_kernels_give_the_same_logits_and_gradients():
    ids, lengths = padded_batch([6, 2, 4])
    results = []
    for kernel in ("native", "auto"):
        model = small(RNNClassifier, bidirectional=True, kernel=kernel)
        logits = model(ids, lengths)
        logits.sum().backward()
        results.append((logits, model.encoder.layers[0].directions[1].weight_hh_l0.grad))
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-4)


def test_pretrained_vectors_initialise_the_embedding_and_set_its_width():
    pretrained = torch.randn(VOCAB, 9)
    model = LSTMClassifier(VOCAB, NUM_CLASSES, embedding_dim=100, pretrained=pretrained)
    assert torch.equal(model.embedder.embedding.weight, pretrained)
    assert model.hparams["embedding_dim"] == 9
    assert model.embedder.embedding.weight.requires_grad


def test_frozen_pretrained_vectors_stay_unchanged_by_training():
    pretrained = torch.randn(VOCAB, 6)
    model = small(GRUClassifier, pretrained=pretrained, freeze_embeddings=True)
    head_before = model.head.layers[-1].weight.detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    ids, lengths = padded_batch([4, 2])
    nn.functional.cross_entropy(model(ids, lengths), torch.tensor([1, 2])).backward()
    optimizer.step()
    weight = model.embedder.embedding.weight
    assert not weight.requires_grad and weight.grad is None
    assert torch.equal(weight, pretrained)
    assert not torch.equal(model.head.layers[-1].weight, head_before)
    assert model.num_parameters(trainable_only=True) == model.num_parameters() - pretrained.numel()


def test_pretrained_vectors_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"shape \(29, 6\)"):
        LSTMClassifier(VOCAB, NUM_CLASSES, pretrained=torch.randn(VOCAB - 1, 6))


def test_the_padding_row_of_a_random_embedding_is_zero():
    assert small(RNNClassifier).embedder.embedding.weight[0].abs().sum() == 0


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.cell)
def test_state_dict_round_trip_into_a_model_rebuilt_from_hparams_gives_identical_logits(cls):
    model = small(cls, num_layers=2, bidirectional=True, pooling="attention", head_hidden=3).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)
    rebuilt = cls(**model.hparams).eval()
    rebuilt.load_state_dict(torch.load(buffer, weights_only=True))
    ids, lengths = padded_batch([5, 2, 1])
    with torch.no_grad():
        assert torch.equal(model(ids, lengths), rebuilt(ids, lengths))


def test_a_gru_has_fewer_parameters_than_an_lstm_of_the_same_size():
    sizes = {"embedding_dim": 10, "hidden_size": 16, "bidirectional": True}
    rnn, lstm, gru = (small(cls, **sizes).num_parameters() for cls in CLASSES)
    assert rnn < gru < lstm
    assert lstm == sum(p.numel() for p in small(LSTMClassifier, **sizes).parameters())


def test_the_base_class_asks_for_a_concrete_cell():
    with pytest.raises(TypeError, match="LSTMClassifier"):
        RecurrentClassifier(VOCAB, NUM_CLASSES)


def test_an_unknown_kernel_is_refused_when_the_model_is_built():
    with pytest.raises(ValueError, match="unknown kernel 'cuda'"):
        small(LSTMClassifier, kernel="cuda")


def test_model_config_and_the_constructor_name_the_same_hyperparameters_with_the_same_defaults():
    """ModelConfig is the YAML face of the constructor: every field but name/options is an argument."""
    signature = inspect.signature(RecurrentClassifier.__init__).parameters
    from_data = {"self", "vocab_size", "num_classes", "embedding_dim", "pretrained", "freeze_embeddings"}
    fields = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.name not in ("name", "options")}
    assert set(fields) == set(signature) - from_data
    for name, default in fields.items():
        assert signature[name].default == default, name


def test_hparams_record_every_argument_but_the_pretrained_vectors():
    model = small(GRUClassifier, pretrained=torch.randn(VOCAB, 3), dropout=0.2, kernel="native")
    expected = set(inspect.signature(RecurrentClassifier.__init__).parameters) - {"self", "pretrained"}
    assert set(model.hparams) == expected
    assert model.hparams["embedding_dim"] == 3 and model.hparams["dropout"] == 0.2
    assert model.hparams["kernel"] == "native"


def test_from_config_passes_every_model_config_field_the_constructor_takes():
    cfg = ModelConfig(
        name="lstm",
        hidden_size=6,
        num_layers=2,
        bidirectional=True,
        pooling="attention",
        embedding_dropout=0.1,
        dropout=0.2,
        head_dropout=0.3,
        head_hidden=4,
        kernel="native",
    )
    model = LSTMClassifier.from_config(cfg, vocab_size=VOCAB, num_classes=NUM_CLASSES, embedding_dim=5)
    for field in dataclasses.fields(ModelConfig):
        if field.name not in ("name", "options"):
            assert model.hparams[field.name] == getattr(cfg, field.name), field.name


def test_prepare_for_training_gets_every_layer_ready():
    model = small(GRUClassifier, num_layers=2, bidirectional=True)
    prepared = []
    for layer in model.encoder.layers:
        layer.prepare_kernels = lambda layer=layer: prepared.append(layer)
    model.prepare_for_training()
    assert prepared == list(model.encoder.layers)


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
