"""Plots of the per-layer probes and of the checks: PNG through matplotlib when it is installed,
otherwise a small hand-written SVG (text, axes and lines; no dependency), so a report always has
its pictures."""

from __future__ import annotations

import importlib.util
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unlearn_kb.evaluation.suite import Report

COLOURS = {"model": "#d62728", "reference": "#2ca02c", "original": "#1f77b4"}
CURVES = (("probe.forget", "Linear probe accuracy on forget entities", "accuracy"),
          ("lens.forget_mrr", "Logit lens: MRR of the true first token (forget)", "MRR"))


def has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_plots(report: Report, folder: Path) -> list[Path]:
    written = []
    for key, title, ylabel in CURVES:
        series = report.curves.get(key)
        if series:
            written.append(_line_plot(series, title, ylabel, folder / key.replace(".", "_")))
    if report.checks:
        bars = {c.name: (c.model, c.baseline) for c in report.checks}
        written.append(_bar_plot(bars, f"Checks: model vs {report.mode}", folder / "checks"))
    return written


def _line_plot(series: dict[str, list[float]], title: str, ylabel: str, stem: Path) -> Path:
    if has_matplotlib():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for role, values in series.items():
            ax.plot(range(len(values)), values, marker="o", label=role, color=COLOURS.get(role))
        ax.set(title=title, xlabel="layer (0 = embeddings)", ylabel=ylabel, ylim=(0, 1.05))
        ax.legend()
        fig.tight_layout()
        fig.savefig(stem.with_suffix(".png"), dpi=100)
        plt.close(fig)
        return stem.with_suffix(".png")
    svg = _Svg(title)
    n = max(len(v) for v in series.values())
    ordered = sorted(series.items(), key=lambda item: item[0] == "model")  # the model on top, dashed
    for i, (role, values) in enumerate(ordered):
        points = [(svg.x(j, n), svg.y(v)) for j, v in enumerate(values)]
        svg.polyline(points, COLOURS.get(role, "black"), dashed=role == "model")
        svg.legend(i, role, COLOURS.get(role, "black"))
    svg.axes([str(j) for j in range(n)], "layer (0 = embeddings)", ylabel)
    return svg.save(stem)


def _bar_plot(bars: dict[str, tuple[float, float]], title: str, stem: Path) -> Path:
    if has_matplotlib():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 3.5))
        names = list(bars)
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], [bars[n][0] for n in names], 0.4, label="model", color=COLOURS["model"])
        ax.bar([x + 0.2 for x in xs], [bars[n][1] for n in names], 0.4, label="baseline", color=COLOURS["reference"])
        ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=7)
        ax.set(title=title, ylim=(0, 1.05))
        ax.legend()
        fig.tight_layout()
        fig.savefig(stem.with_suffix(".png"), dpi=100)
        plt.close(fig)
        return stem.with_suffix(".png")
    svg = _Svg(title, width=720)
    n = len(bars)
    for i, (model, base) in enumerate(bars.values()):
        for offset, value, colour in ((-0.2, model, COLOURS["model"]), (0.2, base, COLOURS["reference"])):
            if value == value:  # not NaN
                svg.bar(svg.x(i + offset + 0.5, n, pad=True) - 8, svg.y(max(0.0, min(1.0, value))), 16, colour)
    svg.legend(0, "model", COLOURS["model"])
    svg.legend(1, "baseline", COLOURS["reference"])
    svg.axes(list(bars), "", "value", categorical=True)
    return svg.save(stem)


def _wrap(text: str, width: int = 16) -> list[str]:
    """Words in at most three lines of about ``width`` characters (tick labels)."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines[:3]


class _Svg:
    """Just enough SVG for a titled chart with axes from 0 to 1."""

    def __init__(self, title: str, width: int = 480, height: int = 300):
        self.width, self.height = width, height
        self.left, self.right, self.top, self.bottom = 50, 20, 48, 56
        self.parts = [f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text>']

    def x(self, index: float, count: int, pad: bool = False) -> float:
        span = self.width - self.left - self.right
        if pad:
            return self.left + span * index / count
        return self.left + (span * index / (count - 1) if count > 1 else span / 2)

    def y(self, value: float) -> float:
        return self.top + (self.height - self.top - self.bottom) * (1 - value)

    def polyline(self, points: list[tuple[float, float]], colour: str, dashed: bool = False) -> None:
        shown = " ".join(f"{x:.1f},{y:.1f}" for x, y in points if y == y)
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        self.parts.append(f'<polyline points="{shown}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        self.parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in points if y == y]

    def bar(self, x: float, y: float, width: float, colour: str) -> None:
        self.parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{width}" height="{self.y(0) - y:.1f}" '
                          f'fill="{colour}"/>')

    def legend(self, index: int, label: str, colour: str) -> None:
        x = self.left + 95 * index  # one row under the title, clear of the data
        y = 36
        self.parts.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
                          f'<text x="{x + 15}" y="{y}" font-size="11">{escape(label)}</text>')

    def axes(self, ticks: list[str], xlabel: str, ylabel: str, categorical: bool = False) -> None:
        x0, y0, y1 = self.left, self.y(0), self.y(1)
        self.parts.append(f'<line x1="{x0}" y1="{y0}" x2="{self.width - self.right}" y2="{y0}" stroke="black"/>'
                          f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>')
        for value in (0.0, 0.5, 1.0):
            self.parts.append(f'<text x="{x0 - 5}" y="{self.y(value) + 4:.1f}" text-anchor="end" '
                              f'font-size="10">{value:.1f}</text>')
        for i, tick in enumerate(ticks):
            x = self.x(i + 0.5, len(ticks), pad=True) if categorical else self.x(i, len(ticks))
            for line, text in enumerate(_wrap(tick)):
                self.parts.append(f'<text x="{x:.1f}" y="{y0 + 14 + 11 * line}" text-anchor="middle" '
                                  f'font-size="9">{escape(text)}</text>')
        self.parts.append(f'<text x="{(x0 + self.width) / 2}" y="{self.height - 8}" text-anchor="middle" '
                          f'font-size="11">{escape(xlabel)}</text>'
                          f'<text x="12" y="{(y0 + y1) / 2}" font-size="11" transform="rotate(-90 12 '
                          f'{(y0 + y1) / 2})" text-anchor="middle">{escape(ylabel)}</text>')

    def save(self, stem: Path) -> Path:
        path = stem.with_suffix(".svg")
        body = "\n".join(self.parts)
        path.write_text(f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
                        f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n{body}\n'
                        "</svg>\n", encoding="utf-8")
        return path
