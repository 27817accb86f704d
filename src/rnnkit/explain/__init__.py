"""Why a model gave a text its class: integrated-gradients attributions per token (Captum).

``Explainer(open_run(run_dir)).explain(text)`` explains one text; :func:`top_words` ranks the
words that drive each class over a data set. Needs ``pip install 'rnnkit[explain]'``.
"""

from rnnkit.explain.aggregate import TopWords, plot_top_words, top_words
from rnnkit.explain.attribution import DEFAULT_STEPS, Explainer, Explanation, backward_context
from rnnkit.explain.render import html_page, summary

__all__ = [
    "DEFAULT_STEPS",
    "Explainer",
    "Explanation",
    "TopWords",
    "backward_context",
    "html_page",
    "plot_top_words",
    "summary",
    "top_words",
]
