"""An explanation for people: coloured tokens in a terminal, or a self-contained HTML page.

Green tokens speak for the target class, red ones against it; the stronger the colour, the larger
the attribution relative to the text's largest one.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from rnnkit.explain.attribution import Explanation

_RESET = "\x1b[0m"


def _shade(value: float, scale: float) -> tuple[int, int, int]:
    """RGB from white (0) to green (positive) or red (negative) at ``|value| == scale``."""
    strength = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    fade = round(255 - 155 * strength)
    return (fade, 255, fade) if value >= 0 else (255, fade, fade)


def _scale(values: Sequence[float]) -> float:
    return max((abs(v) for v in values), default=0.0)


def coloured_text(explanation: Explanation) -> str:
    """The tokens with a 24-bit ANSI background per attribution (black text)."""
    scale = _scale(explanation.attributions)
    parts = []
    for token, value in zip(explanation.tokens, explanation.attributions, strict=True):
        red, green, blue = _shade(value, scale)
        parts.append(f"\x1b[38;2;0;0;0m\x1b[48;2;{red};{green};{blue}m{token}{_RESET}")
    return " ".join(parts)


def _pairs(pairs: Sequence[tuple[str, float]]) -> str:
    return ", ".join(f"{token} {value:+.3f}" for token, value in pairs)


def summary(explanation: Explanation, colour: bool, top: int = 10) -> str:
    """The terminal report: classes, the text (coloured if ``colour``), top tokens, completeness."""
    best = sorted(explanation.probabilities.items(), key=lambda item: -item[1])[:5]
    total = sum(explanation.attributions)
    lines = [
        f"predicted {explanation.predicted} ({explanation.probabilities[explanation.predicted]:.3f}); "
        f"attributions for {explanation.target}",
        "classes: " + ", ".join(f"{name} {prob:.3f}" for name, prob in best),
        "",
        coloured_text(explanation) if colour else " ".join(explanation.tokens),
        "",
        f"for {explanation.target}: {_pairs(explanation.top_tokens(top))}",
        f"against: {_pairs(explanation.top_tokens(min(top, 5), positive=False))}",
    ]
    if explanation.attention is not None:
        order = sorted(range(len(explanation.tokens)), key=lambda i: -explanation.attention[i])[:top]
        lines.append(
            "attention: "
            + ", ".join(f"{explanation.tokens[i]} {explanation.attention[i]:.3f}" for i in order)
        )
    lines.append(
        f"completeness: attributions sum to {total:.4f}, logit difference to the all-<pad> baseline "
        f"{explanation.logit_difference:.4f}: error {abs(explanation.convergence_delta):.2e} "
        f"({100 * explanation.relative_error:.2f}%), {explanation.steps} steps"
    )
    return "\n".join(lines)


def html_page(explanation: Explanation, title: str = "rnnkit explain") -> str:
    """A page without external resources: shaded tokens, attention, probabilities, top tokens."""
    scale = _scale(explanation.attributions)
    spans = []
    for token, value, known in zip(
        explanation.tokens, explanation.attributions, explanation.known, strict=True
    ):
        red, green, blue = _shade(value, scale)
        note = "" if known else " (not in the vocabulary: read as &lt;unk&gt;)"
        spans.append(
            f'<span class="t{"" if known else " unk"}" style="background:rgb({red},{green},{blue})" '
            f'title="{value:+.4f}{note}">{html.escape(token)}</span>'
        )
    attention = ""
    if explanation.attention is not None:
        peak = max(explanation.attention) or 1.0
        cells = " ".join(
            f'<span class="t" style="background:rgba(40,90,220,{weight / peak:.3f})" '
            f'title="{weight:.4f}">{html.escape(token)}</span>'
            for token, weight in zip(explanation.tokens, explanation.attention, strict=True)
        )
        attention = f"<h2>Attention weights</h2><p>{cells}</p>"
    ranked = sorted(explanation.probabilities.items(), key=lambda item: -item[1])
    probability_rows = "".join(
        f'<tr><td>{html.escape(name)}</td><td>{prob:.4f}</td><td><div class="bar" '
        f'style="width:{300 * prob:.0f}px"></div></td></tr>'
        for name, prob in ranked
    )
    token_rows = "".join(
        f"<tr><td>{html.escape(token)}</td><td>{value:+.4f}</td></tr>"
        for token, value in explanation.top_tokens(15)
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; line-height: 1.9; }}
.t {{ padding: 0.1em 0.2em; border-radius: 0.2em; }}
.unk {{ text-decoration: underline dotted; }}
.bar {{ height: 0.8em; background: #4a7; }}
td {{ padding: 0 1em 0 0; }}
</style></head><body>
<h1>{html.escape(explanation.predicted)}</h1>
<p>Attributions for <b>{html.escape(explanation.target)}</b> (integrated gradients, {explanation.steps} steps,
baseline: the same number of &lt;pad&gt; tokens). Green speaks for the class, red against it; hover for
values. Completeness error: {abs(explanation.convergence_delta):.2e}
({100 * explanation.relative_error:.2f}% of the logit difference {explanation.logit_difference:.4f}).</p>
<p>{" ".join(spans)}</p>
{attention}
<h2>Probabilities</h2><table>{probability_rows}</table>
<h2>Top tokens for {html.escape(explanation.target)}</h2><table>{token_rows}</table>
</body></html>
"""
