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


def confusion_figure(matrix: np.ndarray, label_names: Sequence[str]) -> Figure:
    """The figure of :func:`plot_confusion`, for writers other than a PNG file (TensorBoard)."""
    size = max(5.0, 0.45 * len(label_names) + 2)
    figure = Figure(figsize=(size + 1, size), layout="constrained")
    axes = figure.subplots()
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    image = axes.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the true class")
    ticks = range(len(label_names))
    axes.set_xticks(ticks, labels=label_names, rotation=90, fontsize=8)
    axes.set_yticks(ticks, labels=label_names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for row, col in zip(*np.nonzero(matrix), strict=True):
        colour = "white" if normalised[row, col] > 0.5 else "black"
        axes.text(col, row, str(matrix[row, col]), ha="center", va="center", fontsize=6, color=colour)
    return figure
