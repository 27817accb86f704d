"""The words that drive each class over a data set: attributions summed per (class, word).

Every document is explained toward the class the model predicts for it; a word's score for a
class is the sum of its attributions over all documents predicted as that class, so a word
counts for how often it occurs and how strongly it pushes each time.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm

from rnnkit.data import EncodedDataset
from rnnkit.data.text import PAD_ID
from rnnkit.explain.attribution import Explainer
from rnnkit.io import atomic_write_bytes


@dataclass
class ClassWords:
    """One class: how many documents were predicted as it, and its top ``(word, score, count)``."""

    label: str
    documents: int
    words: list[tuple[str, float, int]]


@dataclass
class TopWords:
    """Per-class top words, and the completeness error over every explained document."""

    classes: list[ClassWords]
    documents: int
    steps: int
    mean_relative_error: float
    max_relative_error: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "steps": self.steps,
            "mean_relative_error": self.mean_relative_error,
            "max_relative_error": self.max_relative_error,
            "classes": {
                c.label: {
                    "documents": c.documents,
                    "words": [{"word": w, "score": s, "count": n} for w, s, n in c.words],
                }
                for c in self.classes
            },
        }

    def table(self) -> str:
        lines = [
            f"{c.label} ({c.documents} documents): " + ", ".join(f"{w} {s:.2f}" for w, s, _ in c.words)
            for c in self.classes
        ]
        lines.append(
            f"{self.documents} documents, {self.steps} steps; completeness error mean "
            f"{100 * self.mean_relative_error:.2f}%, max {100 * self.max_relative_error:.2f}% "
            "of the logit difference"
        )
        return "\n".join(lines)


def top_words(
    explainer: Explainer,
    dataset: EncodedDataset,
    k: int = 20,
    batch_size: int = 16,
    progress: bool = True,
) -> TopWords:
    """Explain every document of ``dataset`` and rank each class's words by summed attribution."""
    labels, itos = explainer.run.label_names, explainer.run.vocab.itos
    scores = np.zeros((len(labels), len(itos)))
    counts = np.zeros((len(labels), len(itos)), dtype=np.int64)
    documents = np.zeros(len(labels), dtype=np.int64)
    errors: list[float] = []
    bar = tqdm(total=len(dataset), desc="explaining", unit="doc", disable=not progress, leave=False)
    for batch, result in explainer.attribute_dataset(dataset, batch_size):
        ids, lengths = batch.token_ids.cpu().numpy(), batch.lengths.cpu().numpy()
        rows = np.arange(len(lengths))
        gaps = (result.logits - result.baseline_logits)[rows, result.targets].numpy()
        errors.extend(np.abs(result.deltas.numpy()) / np.maximum(np.abs(gaps), 1e-12))
        for row, target in enumerate(result.targets.tolist()):
            length = lengths[row]
            np.add.at(scores[target], ids[row, :length], result.attributions[row, :length].numpy())
            np.add.at(counts[target], ids[row, :length], 1)
            documents[target] += 1
        bar.update(len(lengths))
    bar.close()
    scores[:, PAD_ID] = -np.inf  # never a word
    classes = []
    for index, label in enumerate(labels):
        ranked = [i for i in np.argsort(-scores[index], kind="stable")[:k] if counts[index, i] > 0]
        words = [(itos[i], float(scores[index, i]), int(counts[index, i])) for i in ranked]
        classes.append(ClassWords(label, int(documents[index]), words))
    return TopWords(
        classes=classes,
        documents=len(dataset),
        steps=explainer.steps,
        mean_relative_error=float(np.mean(errors)) if errors else 0.0,
        max_relative_error=float(np.max(errors)) if errors else 0.0,
    )


def plot_top_words(result: TopWords, path: str | os.PathLike[str]) -> None:
    """One horizontal bar chart per class (classes without documents are left out)."""
    shown = [c for c in result.classes if c.words]
    columns = min(4, max(1, len(shown)))
    rows = max(1, math.ceil(len(shown) / columns))
    longest = max((len(c.words) for c in shown), default=1)
    figure = Figure(figsize=(4.2 * columns, 0.22 * longest * rows + 1.2 * rows), layout="constrained")
    axes_grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False).ravel())
    for axes, entry in zip(axes_grid, shown, strict=False):
        words = [w for w, _, _ in entry.words][::-1]
        values = [s for _, s, _ in entry.words][::-1]
        axes.barh(words, values, color=["#3a8f5a" if v >= 0 else "#c0504d" for v in values])
        axes.set_title(f"{entry.label} ({entry.documents} docs)", fontsize=9)
        axes.tick_params(labelsize=7)
    for axes in axes_grid[len(shown) :]:
        axes.set_visible(False)
    figure.suptitle("summed integrated-gradients attribution toward the predicted class")
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    atomic_write_bytes(path, buffer.getvalue())
