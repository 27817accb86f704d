"""``rnnkit explain``: one text, or the words that drive each class over a split."""

from __future__ import annotations

import json
import logging

import numpy as np

from rnnkit.data import EncodedDataset
from rnnkit.errors import RnnkitError, shorten
from rnnkit.explain.aggregate import plot_top_words, top_words
from rnnkit.explain.attribution import DEFAULT_STEPS, Explainer, require_captum
from rnnkit.explain.render import html_page, summary
from rnnkit.io import atomic_write_text
from rnnkit.runs import open_run

logger = logging.getLogger(__name__)


def explain_text(
    run_dir: str,
    text: str,
    target: str | None,
    steps: int | None,
    device: str,
    as_json: bool,
    colour: bool,
    html: str | None,
) -> str:
    """The report for one text (JSON or terminal); writes the HTML page if ``html`` names a file."""
    require_captum()  # before minutes of loading
    explainer = Explainer(open_run(run_dir, device), DEFAULT_STEPS if steps is None else steps)
    explanation = explainer.explain(text, target)
    if html:
        atomic_write_text(html, html_page(explanation))
        logger.info("wrote %s", html)
    return json.dumps(explanation.to_dict(), indent=2) if as_json else summary(explanation, colour)


def explain_split(
    run_dir: str,
    split: str,
    k: int,
    limit: int | None,
    steps: int | None,
    device: str,
    as_json: bool,
    png: str,
) -> str:
    """Per-class top words over ``split`` (or ``limit`` random documents of it); writes ``png``."""
    if k < 1:
        raise RnnkitError(f"--top-words must be at least 1, got {shorten(str(k), 20)}")
    if limit is not None and limit < 1:
        raise RnnkitError(f"--limit must be at least 1, got {shorten(str(limit), 20)}")
    require_captum()
    explainer = Explainer(open_run(run_dir, device), DEFAULT_STEPS if steps is None else steps)
    dataset = explainer.run.load_split(split)
    if limit is not None and limit < len(dataset):
        dataset = sample(dataset, limit)
    result = top_words(explainer, dataset, k, progress=explainer.run.config.train.progress)
    plot_top_words(result, png)
    logger.info("wrote %s", png)
    return json.dumps(result.to_dict(), indent=2) if as_json else result.table()


def sample(dataset: EncodedDataset, size: int, seed: int = 0) -> EncodedDataset:
    """``size`` documents of ``dataset`` drawn without replacement, in their original order."""
    picked = np.sort(np.random.default_rng(seed).choice(len(dataset), size, replace=False))
    return EncodedDataset([dataset.sequences[i] for i in picked], dataset.labels[picked], dataset.max_length)
