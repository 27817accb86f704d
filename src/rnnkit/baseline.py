"""The honest reference: a TF-IDF linear classifier fitted on exactly the run's training split.

A recurrent model is only worth its training time if it beats what a linear model over word
counts gets in seconds. Every run fits one on the same training documents, picks its model and
regularisation on the same validation split, and reports it beside the recurrent model.

It reads the run's token ids (untruncated), so it sees the same tokens as the network and works
for any tokenizer; features are TF-IDF with sublinear term frequency over words in at least two
training documents and at most half of them (scikit-learn's ``TfidfVectorizer(sublinear_tf=True,
min_df=2, max_df=0.5)`` over the same tokens). The fitted model is a weight matrix over kept
token ids, saved as safetensors, so a run never unpickles anything.

Multi-label runs get the one-vs-rest version: one LinearSVC per label (scikit-learn's
``OneVsRestClassifier(LinearSVC(C))``, C chosen on validation micro-F1 at decision 0) and, as for
the network, per-label thresholds tuned on the validation split, on the sigmoid of each label's
decision (0.5 is decision 0; the tuning is :func:`rnnkit.training.thresholds.tune_thresholds`).

The baseline can also teach the network (``train.distill``): :func:`out_of_fold_probabilities` gives
each training document the probabilities of a baseline fitted without it.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import safetensors.numpy
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.metrics import accuracy_score, f1_score, hamming_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import ComplementNB
from sklearn.preprocessing import normalize
from sklearn.svm import LinearSVC

from rnnkit.errors import CheckpointError
from rnnkit.io import atomic_write_bytes
from rnnkit.tasks import MULTILABEL, SINGLE, decide, task_of

logger = logging.getLogger(__name__)

MIN_DF = 2
MAX_DF = 0.5
CANDIDATES: tuple[tuple[str, float], ...] = (
    ("linear_svc", 0.1),
    ("linear_svc", 0.3),
    ("linear_svc", 1.0),
    ("complement_nb", 0.1),
    ("complement_nb", 0.3),
    ("complement_nb", 1.0),
)
"""(model, regularisation): LinearSVC's C and ComplementNB's alpha, chosen on validation."""
MULTILABEL_CANDIDATES: tuple[tuple[str, float], ...] = (
    ("ovr_linear_svc", 0.1),
    ("ovr_linear_svc", 0.3),
    ("ovr_linear_svc", 1.0),
)
"""Multi-label: one-vs-rest LinearSVC's C, chosen on validation."""
DISTILL_FOLDS = 5
"""Folds of :func:`out_of_fold_probabilities`: each baseline is fitted on 80% of the training split."""
_CONSTANT_SCORE = 10.0
"""The decision of a label that every (or no) training document has: its sigmoid is ~1 (or ~0)."""


@dataclass
class LinearBaseline:
    """A fitted TF-IDF linear classifier over token ids: ``tfidf(x)[:, features] @ weight.T + bias``."""

    features: np.ndarray  # (F,) vocabulary ids used as features
    idf: np.ndarray  # (F,)
    weight: np.ndarray  # (C, F)
    bias: np.ndarray  # (C,)
    model: str  # e.g. "linear_svc(C=0.3)"
    task: str = SINGLE
    thresholds: np.ndarray | None = None
    """Multi-label: each label's cut on the sigmoid of its decision (``None``: 0.5, decision 0)."""

    def scores(self, sequences: Sequence[np.ndarray], vocab_size: int) -> np.ndarray:
        """Decision scores ``(n, classes)``: the largest is the predicted class (multi-label: one
        independent decision per label)."""
        features = _tfidf(_counts(sequences, vocab_size)[:, self.features], self.idf)
        return np.asarray(features @ self.weight.T) + self.bias

    def predict(self, sequences: Sequence[np.ndarray], vocab_size: int) -> np.ndarray:
        """Class ids ``(n,)``, or for a multi-label baseline the 0/1 label matrix ``(n, labels)``."""
        if self.task == MULTILABEL:
            return decide(self.label_probabilities(sequences, vocab_size), MULTILABEL, self.thresholds)
        return self.scores(sequences, vocab_size).argmax(axis=1)

    def label_probabilities(self, sequences: Sequence[np.ndarray], vocab_size: int) -> np.ndarray:
        """Multi-label: the sigmoid of each label's decision, which the thresholds cut."""
        return 1.0 / (1.0 + np.exp(-self.scores(sequences, vocab_size)))

    def probabilities(
        self, sequences: Sequence[np.ndarray], vocab_size: int, temperature: float
    ) -> np.ndarray:
        """Class probabilities: softmax of the scores times ``temperature`` (:func:`fit_temperature`)."""
        return softmax(self.scores(sequences, vocab_size) * temperature)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Arrays as safetensors (nothing executable), the model name and task in its metadata."""
        tensors = {"features": self.features, "idf": self.idf, "weight": self.weight, "bias": self.bias}
        if self.thresholds is not None:
            tensors["thresholds"] = np.asarray(self.thresholds, dtype=np.float64)
        metadata = {"model": self.model, "task": self.task}
        atomic_write_bytes(path, safetensors.numpy.save(tensors, metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LinearBaseline:
        try:
            tensors = safetensors.numpy.load_file(str(path))
            with safetensors.safe_open(str(path), "np") as handle:
                metadata = handle.metadata() or {}
            arrays = (tensors["features"], tensors["idf"], tensors["weight"], tensors["bias"])
            task = metadata.get("task", SINGLE)  # baselines saved before multi-label are single-label
            return cls(*arrays, metadata["model"], task, tensors.get("thresholds"))
        except Exception:  # any parse failure means the file is not a baseline we wrote
            raise CheckpointError(
                f"{path} is damaged or not an rnnkit baseline; delete it to fit it again"
            ) from None


def fit_baseline(
    train: tuple[Sequence[np.ndarray], np.ndarray],
    validation: tuple[Sequence[np.ndarray], np.ndarray],
    vocab_size: int,
    num_classes: int,
    *,
    monitor: str = "accuracy",
) -> LinearBaseline:
    """The candidate with the best validation ``monitor`` (accuracy, macro_f1 or micro_f1), fitted
    on ``train``; one-vs-rest for multi-label labels (a 0/1 matrix), thresholds left at decision 0.

    Raises ``ValueError`` when nothing can be fitted (no feature survives the document-frequency
    limits, or a single class); callers report that and carry on without a baseline.
    """
    task = task_of(train[1])
    if len(np.unique(train[1], axis=0)) < 2:
        raise ValueError(
            "the training split has a single class"
            if task == SINGLE
            else "every training document has one label set"
        )
    counts = _counts(train[0], vocab_size)
    features = _kept_features(counts)
    if len(features) == 0:
        raise ValueError("no token occurs in at least two and at most half of the training documents")
    idf = TfidfTransformer(sublinear_tf=True).fit(counts[:, features]).idf_
    x_train = _tfidf(counts[:, features], idf)
    x_val = _tfidf(_counts(validation[0], vocab_size)[:, features], idf)
    best: tuple[float, LinearBaseline] | None = None
    for name, strength in MULTILABEL_CANDIDATES if task == MULTILABEL else CANDIDATES:
        if task == MULTILABEL:
            weight, bias = _fit_one_vs_rest(strength, x_train, train[1])
            predicted = (np.asarray(x_val @ weight.T) + bias >= 0).astype(np.int64)
        else:
            weight, bias = _fit_linear(name, strength, x_train, train[1], num_classes)
            predicted = (np.asarray(x_val @ weight.T) + bias).argmax(axis=1)
        score = _score(monitor, validation[1], predicted, num_classes)
        label = f"{name}({'alpha' if name == 'complement_nb' else 'C'}={strength:g})"
        if best is None or score > best[0]:
            best = (score, LinearBaseline(features, idf, weight, bias, label, task))
    assert best is not None
    return best[1]


def out_of_fold_probabilities(
    train: tuple[Sequence[np.ndarray], np.ndarray],
    validation: tuple[Sequence[np.ndarray], np.ndarray],
    vocab_size: int,
    num_classes: int,
    *,
    monitor: str,
    seed: int,
    folds: int = DISTILL_FOLDS,
) -> np.ndarray:
    """Class probabilities ``(n, classes)`` for each training document from a baseline that never saw
    it: the teacher of ``train.distill`` (single-label).

    A baseline scoring its own training documents would mostly repeat their labels; fitted on the
    other folds (stratified, shuffled by ``seed``; each fold's model chosen on ``validation`` as
    :func:`fit_baseline` does) it says how a linear model reads each document, confusions included.
    The scores become probabilities with the temperature of :func:`fit_temperature` on these
    out-of-fold scores. Deterministic for a given ``seed``, so a resumed run gets the same teacher.
    Raises ``ValueError`` as :func:`fit_baseline` does.
    """
    sequences, labels = train
    folds = min(folds, int(np.bincount(labels).max()))
    if folds < 2:
        raise ValueError("every class has a single training document: nothing to fit out of fold")
    scores = np.zeros((len(labels), num_classes))  # -inf where a fold lacked the class: probability 0
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "The least populated class has only k members": fine here
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        splits = list(splitter.split(np.zeros(len(labels)), labels))
    for fitted, held in splits:
        part = ([sequences[i] for i in fitted], labels[fitted])
        baseline = fit_baseline(part, validation, vocab_size, num_classes, monitor=monitor)
        scores[held] = baseline.scores([sequences[i] for i in held], vocab_size)
    return softmax(scores * fit_temperature(scores, labels))


def evaluate_baseline(
    baseline: LinearBaseline,
    splits: dict[str, tuple[Sequence[np.ndarray], np.ndarray]],
    vocab_size: int,
    num_classes: int,
) -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 of ``baseline`` on each named split; for a multi-label baseline
    micro-, macro- and samples-F1, subset accuracy (``accuracy``) and Hamming loss."""
    metrics = ("accuracy", "macro_f1")
    if baseline.task == MULTILABEL:
        metrics = ("accuracy", "micro_f1", "macro_f1", "samples_f1", "hamming_loss")
    results = {}
    for name, (sequences, labels) in splits.items():
        predicted = baseline.predict(sequences, vocab_size)
        results[name] = {metric: _score(metric, labels, predicted, num_classes) for metric in metrics}
    return results


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The factor on the decision scores whose softmax has the lowest log-loss on ``labels``.

    SVM margins and naive Bayes log-probabilities are not probabilities; averaged with a network's
    they need a scale, chosen on the validation split (a grid from 0.01 to 1,000).
    """
    grid = np.logspace(-2, 3, 101)
    rows = np.arange(len(labels))
    losses = [-np.log(np.clip(softmax(scores * t)[rows, labels], 1e-12, None)).mean() for t in grid]
    return float(grid[int(np.argmin(losses))])


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax; a score of -inf (a class the baseline never saw) gets probability 0."""
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def baseline_monitor(monitor: str, task: str = SINGLE) -> str:
    """The baseline's selection metric for the run's ``train.monitor``: the same F1, else accuracy
    (multi-label: micro-F1; subset accuracy is too coarse to choose by)."""
    for f1 in ("macro_f1", "micro_f1"):
        if monitor.endswith(f1):
            return f1
    return "micro_f1" if task == MULTILABEL else "accuracy"


def _counts(sequences: Sequence[np.ndarray], vocab_size: int) -> sp.csr_matrix:
    """Document-term counts ``(n, vocab_size)``; padding and ``<unk>`` (ids 0, 1) never count."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    ids = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if len(sequences) else []
    rows = np.repeat(np.arange(len(sequences)), lengths)
    ids = np.asarray(ids, dtype=np.int64)
    real = ids > 1
    matrix = sp.csr_matrix(
        (np.ones(int(real.sum()), dtype=np.float64), (rows[real], ids[real])),
        shape=(len(sequences), vocab_size),
    )
    matrix.sum_duplicates()
    return matrix


def _kept_features(counts: sp.csr_matrix) -> np.ndarray:
    document_frequency = np.bincount(counts.indices, minlength=counts.shape[1])
    return np.flatnonzero((document_frequency >= MIN_DF) & (document_frequency <= MAX_DF * counts.shape[0]))


def _tfidf(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """Sublinear tf (1 + log count) times idf, rows scaled to unit length, as TfidfVectorizer does."""
    weighted = counts.astype(np.float64, copy=True)
    weighted.data = (1.0 + np.log(weighted.data)) * idf[weighted.indices]
    return normalize(weighted)


def _fit_linear(
    name: str, strength: float, x: sp.csr_matrix, y: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(weight (C, F), bias (C,))`` over all ``num_classes``; a class absent from ``y`` never wins."""
    if name == "linear_svc":
        model = LinearSVC(C=strength, random_state=0)  # liblinear shuffles: same data, same model
        model.fit(x, y)
        coef, intercept = model.coef_, model.intercept_
        if coef.shape[0] == 1:  # binary: one score for classes_[1]; make it symmetric
            coef, intercept = np.vstack([-coef, coef]), np.array([-intercept[0], intercept[0]])
    else:
        model = ComplementNB(alpha=strength)
        model.fit(x, y)
        coef, intercept = model.feature_log_prob_, np.zeros(len(model.classes_))
    weight = np.zeros((num_classes, x.shape[1]))
    bias = np.full(num_classes, -np.inf)
    weight[model.classes_] = coef
    bias[model.classes_] = intercept
    return weight, bias


def _fit_one_vs_rest(strength: float, x: sp.csr_matrix, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(weight (L, F), bias (L,))``: one LinearSVC per label column of the 0/1 matrix ``y``.

    A label that every or no training document has gets no classifier from scikit-learn (a constant
    answer); here a zero weight and a bias of +-``_CONSTANT_SCORE`` say the same."""
    with warnings.catch_warnings():  # "Label not N is present in all training examples": handled below
        warnings.filterwarnings("ignore", "Label not .* is present in all training examples", UserWarning)
        model = OneVsRestClassifier(LinearSVC(C=strength)).fit(x, y.astype(np.int64))
    weight = np.zeros((y.shape[1], x.shape[1]))
    bias = np.zeros(y.shape[1])
    for label, estimator in enumerate(model.estimators_):
        if hasattr(estimator, "coef_"):
            weight[label], bias[label] = estimator.coef_[0], estimator.intercept_[0]
        else:
            bias[label] = _CONSTANT_SCORE if y[0, label] else -_CONSTANT_SCORE
    return weight, bias


def _score(metric: str, labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    if len(labels) == 0:
        return float("nan")
    if metric.endswith("_f1"):
        average = metric.removesuffix("_f1")
        return float(
            f1_score(labels, predicted, labels=list(range(num_classes)), average=average, zero_division=0)
        )
    if metric == "hamming_loss":
        return float(hamming_loss(labels, predicted))
    return float(accuracy_score(labels, predicted))
