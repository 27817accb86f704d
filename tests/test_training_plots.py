"""The run's figures: readable for a few classes, bounded in size for any number of classes."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.image import imread

from rnnkit.training.plots import confusion_figure, plot_confusion


def test_a_confusion_matrix_of_many_classes_has_a_bounded_size(tmp_path):
    classes = 500  # at 0.45 inch per class this was a 23,000 x 22,500 pixel image (> 6 GB drawn)
    matrix = np.random.default_rng(0).integers(0, 5, size=(classes, classes))
    width, height = confusion_figure(matrix, [f"class {i}" for i in range(classes)]).get_size_inches()
    assert width <= 20 and height <= 20
    plot_confusion(matrix, [f"class {i}" for i in range(classes)], tmp_path / "confusion.png")
    assert imread(io.BytesIO((tmp_path / "confusion.png").read_bytes())).shape[0] <= 2000


def test_a_few_classes_get_their_names_and_counts(tmp_path):
    matrix = np.array([[3, 1], [0, 4]])
    axes = confusion_figure(matrix, ["space", "hockey"]).axes[0]
    assert [label.get_text() for label in axes.get_xticklabels()] == ["space", "hockey"]
    assert sorted(text.get_text() for text in axes.texts) == ["1", "3", "4"]


def test_many_classes_drop_the_per_cell_counts_and_say_where_the_numbers_are():
    matrix = np.ones((300, 300), dtype=int)
    axes = confusion_figure(matrix, [f"c{i}" for i in range(300)]).axes[0]
    assert len(axes.texts) == 0 and "report.txt" in axes.get_title()
