"""Matplotlib figures to PNG files and pixel arrays, without pyplot.

Figures are built with matplotlib's object API and rendered with the Agg canvas, so drawing never
touches global pyplot state or needs a display; files are written atomically. Shared by the run's
plots, ``rnnkit compare``, ``rnnkit tune`` and the study script.
"""

from __future__ import annotations

import io
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rnnkit.io import atomic_write_bytes


def save_png(figure: Figure, path: str | os.PathLike[str]) -> None:
    """Render ``figure`` and write it to ``path`` atomically."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    atomic_write_bytes(path, buffer.getvalue())


def figure_pixels(figure: Figure) -> np.ndarray:
    """The rendered figure as an (height, width, 3) uint8 array (for TensorBoard images)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
