"""Figures for measured results: a grouped bar chart as a standalone SVG, no plotting library.

The chart compares the unlearned model with the original and the reference model (the one that
never saw the forget set) on the headline figures that are shares between 0 and 1, such as recall
after an attack; a removal-like method's bars sit next to the reference's, a suppression-like one's
drift back towards the original's under attacks. Figures on other scales stay in the table.
"""

from __future__ import annotations

from html import escape

from unlearn_kb.schema import MeasuredResult

# Column order and colours (the evaluation report's); other roles come after these, in grey.
_KNOWN_MODELS = {
    "model": "#d62728",
    "unlearned": "#d62728",
    "reference": "#2ca02c",
    "original": "#1f77b4",
}
_OTHER_COLOUR = "#757575"

HEADLINE = {
    "forget.rouge_l": "forget recall",
    "forget_paraphrased.rouge_l": "forget recall, reworded",
    "relearn.forget_b_after": "after a relearning attack",
    "quant4.forget_rouge_l": "after 4-bit quantization",
    "probe.forget": "probe on hidden states",
    "mia.min_k_plus_plus": "membership inference AUC",
    "retain.rouge_l": "retain recall",
    "utility": "utility",
}
"""The figures the chart shows when the result has them: is it still said (behaviour), does it
come back (knowledge), is the rest intact (utility). The table lists every figure."""
MAX_BARS_GROUPS = 8


def figure_columns(result: MeasuredResult) -> list[str]:
    """The models that nested figures report on, known ones first."""
    seen: list[str] = []
    for value in result.figures.values():
        if isinstance(value, dict):
            seen += [k for k in value if k not in seen]
    known = [k for k in _KNOWN_MODELS if k in seen]
    return known + [k for k in seen if k not in known]


def chartable(result: MeasuredResult) -> dict[str, dict[str, float]]:
    """The headline figures (or, failing those, the first few) whose values are all in [0, 1]."""
    rows = {}
    for name, value in result.figures.items():
        if not isinstance(value, dict):
            continue
        numbers = {k: v for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if numbers and all(0.0 <= v <= 1.0 for v in numbers.values()):
            rows[name] = {k: float(v) for k, v in numbers.items()}
    headline = {k: rows[k] for k in HEADLINE if k in rows}
    return headline or dict(list(rows.items())[:MAX_BARS_GROUPS])


def bar_chart_svg(result: MeasuredResult) -> str | None:
    """A horizontal grouped bar chart of :func:`chartable` figures, or None if there are none."""
    rows = chartable(result)
    if not rows:
        return None
    models = [m for m in figure_columns(result) if any(m in r for r in rows.values())]
    label_w, bar_w, bar_h, gap, top = 200, 380, 14, 14, 40
    group_h = bar_h * len(models) + gap
    height = top + group_h * len(rows) + 30
    width = label_w + bar_w + 70
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" role="img">',
        f"<title>Measured figures for {escape(result.method)}</title>",
        f'<rect width="{width}" height="{height}" rx="6" fill="#ffffff"/>',
    ]
    x = label_w
    for model in models:  # legend
        colour = _KNOWN_MODELS.get(model, _OTHER_COLOUR)
        parts.append(f'<rect x="{x}" y="12" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{x + 16}" y="22" fill="#212121">{escape(model)}</text>')
        x += 16 + 7 * len(model) + 24
    for i, (name, values) in enumerate(rows.items()):
        y0 = top + i * group_h
        parts.append(
            f'<text x="{label_w - 8}" y="{y0 + bar_h * len(models) / 2 + 4:.1f}" text-anchor="end" '
            f'fill="#212121">{escape(HEADLINE.get(name, name))}</text>'
        )
        for j, model in enumerate(models):
            if model not in values:
                continue
            v = values[model]
            colour = _KNOWN_MODELS.get(model, _OTHER_COLOUR)
            y = y0 + j * bar_h
            parts.append(f'<rect x="{label_w}" y="{y}" width="{v * bar_w:.1f}" height="{bar_h - 2}" fill="{colour}"/>')
            parts.append(f'<text x="{label_w + v * bar_w + 4:.1f}" y="{y + bar_h - 4}" fill="#424242">{v:.2f}</text>')
    axis_y = top + group_h * len(rows) - gap / 2
    parts.append(f'<line x1="{label_w}" y1="{top - 4}" x2="{label_w}" y2="{axis_y}" stroke="#9e9e9e"/>')
    for tick in (0, 0.5, 1.0):
        tx = label_w + tick * bar_w
        parts.append(f'<text x="{tx:.1f}" y="{axis_y + 16}" text-anchor="middle" fill="#616161">{tick:g}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
