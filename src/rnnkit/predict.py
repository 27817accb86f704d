"""A trained model as an object that classifies new text: ``rnnkit.load(run_dir).predict(texts)``.

:func:`rnnkit.runs.open_run` gives the pieces (the tokenizer and vocabulary that turned training
text into ids, the class names, the best model, and for multi-label runs the tuned thresholds); a
:class:`Predictor` turns new texts into ids the same way and returns labels (a label set per text
for multi-label runs), probabilities or the top k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from rnnkit.baseline import LinearBaseline
from rnnkit.data import TextTokenizer, Vocabulary, encode_texts
from rnnkit.inference import predict_dataset
from rnnkit.tasks import MULTILABEL, SINGLE, decide


class ProbabilityClassifier:
    """Labels and top-k pairs from a subclass's ``predict_proba`` over ``label_names``."""

    label_names: list[str]
    task: str = SINGLE
    """``single`` (softmax, one class per text) or ``multilabel`` (sigmoids, a label set per text)."""
    thresholds: np.ndarray | None = None
    """Multi-label: each label's decision threshold, tuned on validation (``None``: 0.5)."""

    @property
    def multilabel(self) -> bool:
        return self.task == MULTILABEL

    def predict_proba(self, texts: str | Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def predict(self, texts: str | Sequence[str]) -> list[str] | list[list[str]]:
        """The most probable class name of each text; for a multi-label run, each text's label set
        (the labels at or above their thresholds, most probable first; possibly empty)."""
        scored = self.predict_scored(texts)
        if self.multilabel:
            return [[name for name, _ in labels] for labels in scored]
        return [labels[0][0] for labels in scored]

    def predict_scored(self, texts: str | Sequence[str]) -> list[list[tuple[str, float]]]:
        """What :meth:`predict` returns, with probabilities: ``[(class, probability)]`` per text, or
        for a multi-label run the ``(label, probability)`` pairs of its label set."""
        probs = self.predict_proba(texts)
        chosen = decide(probs, self.task, self.thresholds)
        order = np.argsort(-probs, axis=1, kind="stable")
        if not self.multilabel:
            return [[(self.label_names[j], float(row[j]))] for row, j in zip(probs, chosen, strict=True)]
        return [
            [(self.label_names[j], float(row[j])) for j in ranked if picked[j]]
            for row, ranked, picked in zip(probs, order, chosen, strict=True)
        ]

    def predict_top_k(self, texts: str | Sequence[str], k: int = 1) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable ``(class name, probability)`` pairs of each text, best first."""
        probs = self.predict_proba(texts)
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [
            [(self.label_names[j], float(row[j])) for j in top] for row, top in zip(probs, order, strict=True)
        ]


class Predictor(ProbabilityClassifier):
    """Tokenize, encode and classify texts the way the run's model was trained to."""

    def __init__(
        self,
        model: nn.Module,
        vocab: Vocabulary,
        label_names: Sequence[str],
        *,
        max_length: int,
        tokenizer: TextTokenizer | None = None,
        device: torch.device | str = "cpu",
        batch_size: int = 256,
        task: str = SINGLE,
        thresholds: np.ndarray | None = None,
        amp: bool = False,
    ) -> None:
        self.model = model.eval()
        self.vocab = vocab
        self.tokenizer = tokenizer or vocab.tokenizer
        self.label_names = list(label_names)
        self.max_length = max_length
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.task = task
        self.thresholds = thresholds
        self.amp = amp  # mixed precision, as rnnkit.inference.autocast runs it on this device

    def predict_proba(self, texts: str | Sequence[str]) -> np.ndarray:
        """Probabilities, shape ``(len(texts), len(label_names))``; columns follow ``label_names``.

        Single-label rows sum to 1 (softmax); multi-label columns are independent (sigmoid).
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        unknown = np.zeros((len(texts), len(self.label_names)), np.float32) if self.multilabel else None
        dataset = encode_texts(texts, self.vocab, self.tokenizer, self.max_length, labels=unknown)
        return predict_dataset(self.model, dataset, self.batch_size, self.device, self.amp).probs


class BaselinePredictor(ProbabilityClassifier):
    """A run's TF-IDF baseline over the run's tokens (untruncated), as probabilities for an ensemble."""

    def __init__(
        self,
        baseline: LinearBaseline,
        vocab: Vocabulary,
        label_names: Sequence[str],
        temperature: float,
        tokenizer: TextTokenizer | None = None,
    ) -> None:
        self.baseline, self.vocab, self.temperature = baseline, vocab, temperature
        self.tokenizer = tokenizer or vocab.tokenizer
        self.label_names = list(label_names)

    def predict_proba(self, texts: str | Sequence[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids = [self.vocab.encode_tokens(self.tokenizer(text)) for text in texts]
        return self.baseline.probabilities(ids, len(self.vocab), self.temperature)


class EnsemblePredictor(ProbabilityClassifier):
    """Several predictors as one: each reads the text its own way; their probabilities are averaged."""

    def __init__(self, members: Sequence[ProbabilityClassifier]) -> None:
        self.members = list(members)
        self.label_names = self.members[0].label_names

    def predict_proba(self, texts: str | Sequence[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return np.mean([member.predict_proba(texts) for member in self.members], axis=0)
