"""The text classifiers: token embedder -> recurrent encoder -> pooling -> softmax head.

``RNNClassifier``, ``LSTMClassifier`` and ``GRUClassifier`` are plain ``nn.Module`` s that differ
only in their recurrent cell; use them in any training loop::

    model = LSTMClassifier(vocab_size=20000, num_classes=20, bidirectional=True, pooling="max")
    loss = nn.functional.cross_entropy(model(token_ids, lengths), labels)
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnkit.config import ModelConfig
from rnnkit.models.embedders import TokenEmbedder
from rnnkit.models.encoders import RecurrentEncoder
from rnnkit.models.heads import ClassifierHead
from rnnkit.models.kernels import KERNELS
from rnnkit.models.pooling import build_pooling
from rnnkit.models.registry import register_model


class RecurrentClassifier(nn.Module):
    """The shared model; subclasses only choose ``cell`` ("rnn", "lstm" or "gru").

    Args:
        vocab_size: number of token ids; id 0 is padding.
        num_classes: number of output logits.
        embedding_dim: vector size, ignored when ``pretrained`` is given (its width is used).
        hidden_size: recurrent units per direction.
        num_layers: stacked recurrent layers.
        bidirectional: add a right-to-left pass to every layer.
        pooling: "last", "mean", "max" or "attention" (see :mod:`rnnkit.models.pooling`).
        embedding_dropout: dropout on the embedded tokens.
        dropout: dropout between recurrent layers.
        weight_drop: DropConnect on the hidden-to-hidden weights (AWD-LSTM's weight drop): one mask
            per batch, so a recurrent connection is off for the whole sequence.
        unit_forget_bias: LSTM only: start each forget gate's bias at 1 instead of near 0 (Gers et
            al. 2000; Keras' ``unit_forget_bias``), so the cell keeps its memory from the first step
            instead of halving it at every token.
        head_dropout: dropout on the pooled vector, before the head.
        head_hidden: size of a ReLU hidden layer in the head; 0 for a linear head.
        pretrained: ``(vocab_size, dim)`` vectors to start the embedding from.
        freeze_embeddings: keep the embedding fixed during training.
        kernel: "auto" (rnnkit's fastest exact path) or "native" (the torch modules).

    Attributes:
        hparams: the constructor arguments except ``pretrained``, so that
            ``type(model)(**model.hparams)`` rebuilds the architecture and ``load_state_dict``
            restores every weight, the embedding included.

    The signature is the one list of hyperparameters: ``hparams`` is read from it, and
    :meth:`from_config` fills it from the :class:`~rnnkit.config.ModelConfig` fields of the same
    names (a test checks that both agree, defaults included).
    """

    cell: ClassVar[str]

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embedding_dim: int = 100,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        pooling: str = "last",
        embedding_dropout: float = 0.0,
        dropout: float = 0.0,
        weight_drop: float = 0.0,
        unit_forget_bias: bool = False,
        head_dropout: float = 0.0,
        head_hidden: int = 0,
        pretrained: Tensor | None = None,
        freeze_embeddings: bool = False,
        kernel: str = "auto",
    ) -> None:
        super().__init__()
        if not hasattr(self, "cell"):
            raise TypeError(
                "RecurrentClassifier is a base class: use RNNClassifier, LSTMClassifier or GRUClassifier"
            )
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; use one of {', '.join(KERNELS)}")
        if pretrained is not None:
            embedding_dim = int(pretrained.shape[1])
        arguments = locals()  # the arguments as bound, embedding_dim as the pretrained width
        self.hparams: dict[str, Any] = {name: arguments[name] for name in HPARAMS}
        self.embedder = TokenEmbedder(
            vocab_size,
            embedding_dim,
            pretrained=pretrained,
            freeze=freeze_embeddings,
            dropout=embedding_dropout,
        )
        self.encoder = RecurrentEncoder(
            self.cell,
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            weight_drop=weight_drop,
            unit_forget_bias=unit_forget_bias,
            kernel=kernel,
        )
        self.pooling = build_pooling(pooling, hidden_size, bidirectional)
        self.head = ClassifierHead(
            self.encoder.output_size, num_classes, hidden_size=head_hidden, dropout=head_dropout
        )

    @classmethod
    def from_config(
        cls,
        cfg: ModelConfig,
        *,
        vocab_size: int,
        num_classes: int,
        embedding_dim: int = 100,
        embeddings: Tensor | None = None,
        freeze_embeddings: bool = False,
    ) -> RecurrentClassifier:
        """The model a config's ``model:`` section describes; the registry factory of rnn/lstm/gru.

        Every ``ModelConfig`` field that names a constructor argument is passed on; the rest of the
        arguments come from the data (vocabulary, classes) and the embeddings section.
        """
        shared = {name: getattr(cfg, name) for name in CONFIG_FIELDS}
        return cls(
            vocab_size,
            num_classes,
            embedding_dim=embedding_dim,
            pretrained=embeddings,
            freeze_embeddings=freeze_embeddings,
            **shared,
        )

    def forward(self, token_ids: Tensor, lengths: Tensor) -> Tensor:
        """Logits ``(batch, num_classes)`` for right-padded ``token_ids`` ``(batch, time)``.

        ``lengths`` ``(batch,)`` counts each text's real tokens (``1 <= length <= time``); tokens
        past it are padding and never change the result.
        """
        lengths = lengths.to(token_ids.device)
        outputs = self.encoder(self.embedder(token_ids), lengths)
        return self.head(self.pooling(outputs, lengths))

    def prepare_for_training(self) -> None:
        """Get ready to train: build the compiled CPU loop now if ``kernel="auto"`` trains with it.

        rnnkit's trainer calls this hook before the first step on any model that defines it (a
        registered model may, to warm up its own kernels or caches): the one-off ~20 s build is then
        a log line of its own instead of a stall inside the first step's progress bar.
        """
        self.prepare_kernels()

    def prepare_kernels(self) -> None:
        """Build the compiled CPU loop now if this model's layers may run on it (training, or the
        inference of a GRU or SimpleRNN); :func:`rnnkit.runs.open_run` calls it for CPU runs."""
        self.encoder.prepare_kernels()

    @torch.no_grad()
    def predict_proba(self, token_ids: Tensor, lengths: Tensor) -> Tensor:
        """Class probabilities ``(batch, num_classes)``, the softmax of the logits, with dropout off.

        Evaluates in eval mode and restores the previous mode, so calling it mid-training is safe.
        """
        was_training = self.training
        self.eval()
        try:
            return self(token_ids, lengths).softmax(dim=1)
        finally:
            self.train(was_training)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """How many weights the model has (only those the optimiser updates if ``trainable_only``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


_ARGUMENTS = inspect.signature(RecurrentClassifier.__init__).parameters
HPARAMS = tuple(name for name in _ARGUMENTS if name not in ("self", "pretrained"))
"""The constructor arguments that ``hparams`` records (``pretrained`` is data, kept in the weights)."""

CONFIG_FIELDS = tuple(field.name for field in dataclasses.fields(ModelConfig) if field.name in HPARAMS)
"""The ``ModelConfig`` fields :meth:`RecurrentClassifier.from_config` passes to the constructor."""


class RNNClassifier(RecurrentClassifier):
    """Elman RNN (tanh) classifier: the smallest and fastest cell, weak on long texts."""

    cell = "rnn"


class LSTMClassifier(RecurrentClassifier):
    """LSTM classifier: gated memory that keeps information over long texts."""

    cell = "lstm"


class GRUClassifier(RecurrentClassifier):
    """GRU classifier: gated like the LSTM with three gates instead of four, so fewer parameters."""

    cell = "gru"


def module_path(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that runs the torch modules only (``kernel="native"``).

    With ``kernel: auto`` a GRU or SimpleRNN runs rnnkit's compiled loop whenever gradients are
    on, as in Captum's backward passes and in tracing for export; those are training details,
    and the torch modules are the reference (and the only path the exporters understand).
    Models that are not rnnkit classifiers are returned as they are.
    """
    if not isinstance(model, RecurrentClassifier) or model.hparams["kernel"] == "native":
        return model
    twin = type(model)(**{**model.hparams, "kernel": "native"})
    twin.load_state_dict(model.state_dict())
    return twin.to(next(model.parameters()).device).eval()


register_model("rnn")(RNNClassifier.from_config)
register_model("lstm")(LSTMClassifier.from_config)
register_model("gru")(GRUClassifier.from_config)
