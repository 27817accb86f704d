"""PNG figures of a run: training curves and the confusion matrix (drawn as :mod:`rnnkit.figures` says)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from rnnkit.figures import save_png


def plot_history(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Loss and accuracy per epoch, train against validation, side by side."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    epochs = [row["epoch"] for row in history]
    for axes, metric in zip(figure.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for split in ("train", "val"):
            axes.plot(epochs, [row[f"{split}_{metric}"] for row in history], marker="o", label=split)
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
        axes.legend()
    save_png(figure, path)


def plot_confusion(matrix: np.ndarray, label_names: Sequence[str], path: str | os.PathLike[str]) -> None:
    """Row-normalised confusion matrix (true class per row), with the counts written in each cell."""
    save_png(confusion_figure(matrix, label_names), path)


NAMED_CLASSES = 60
"""Up to this many classes the axes name every class; beyond, the classes are numbered by id."""
COUNTED_CLASSES = 30
"""Up to this many classes every non-zero cell shows its count."""
MAX_INCHES = 18.0
"""The figure grows 0.45 inch per class up to this size (1,800 pixels), whatever the class count."""


def confusion_figure(matrix: np.ndarray, label_names: Sequence[str]) -> Figure:
    """The figure of :func:`plot_confusion`, for writers other than a PNG file (TensorBoard).

    Its size is bounded: with many classes the names and counts would not be readable anyway (and
    at 500 classes drawing them needed over 6 GB), so they give way to class ids, and the title
    points to report.txt for the per-class numbers.
    """
    classes = len(label_names)
    size = min(max(5.0, 0.45 * classes + 2), MAX_INCHES)
    figure = Figure(figsize=(size + 1, size), layout="constrained")
    axes = figure.subplots()
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    image = axes.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the true class")
    if classes <= NAMED_CLASSES:
        ticks = range(classes)
        axes.set_xticks(ticks, labels=label_names, rotation=90, fontsize=8)
        axes.set_yticks(ticks, labels=label_names, fontsize=8)
    else:
        axes.set_title(f"{classes} classes by label id (names and per-class scores in report.txt)")
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if classes <= COUNTED_CLASSES:
        for row, col in zip(*np.nonzero(matrix), strict=True):
            colour = "white" if normalised[row, col] > 0.5 else "black"
            axes.text(col, row, str(matrix[row, col]), ha="center", va="center", fontsize=6, color=colour)
    return figure
