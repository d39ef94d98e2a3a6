"""Rendering a :class:`~unlearn_kb.evaluation.suite.Report`: report.json, report.md, Rich tables.

Every figure is shown next to the same figure for the reference model (never trained on the
forget set) and for the original model, so that no number is read without its yardstick.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from unlearn_kb.evaluation import verdict as vd

if TYPE_CHECKING:
    from rich.console import Console

    from unlearn_kb.evaluation.suite import Report

# (figure key, section, what it says). Order is the report's order; unknown keys are not shown.
FIGURE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("forget.exact_match", "behaviour", "forget exact match (training templates)"),
    ("forget.rouge_l", "behaviour", "forget ROUGE-L recall (training templates)"),
    ("forget_paraphrased.exact_match", "behaviour", "forget exact match (held-out paraphrases)"),
    ("forget_paraphrased.rouge_l", "behaviour", "forget ROUGE-L recall (held-out paraphrases)"),
    ("forget.probability", "behaviour", "forget answer probability P(a|q)^(1/|a|)"),
    ("forget.truth_ratio", "behaviour", "forget truth ratio mean(min(R, 1/R)) (1 = cannot tell true from false)"),
    ("forget_quality", "behaviour", "forget quality: KS p-value of truth ratios vs the reference's"),
    ("holdout.rouge_l", "behaviour", "holdout ROUGE-L recall (facts no model trained on)"),
    ("holdout_paraphrased.rouge_l", "behaviour", "holdout ROUGE-L recall (paraphrases)"),
    ("retain.exact_match", "utility", "retain exact match"),
    ("retain.rouge_l", "utility", "retain ROUGE-L recall"),
    ("retain_paraphrased.rouge_l", "utility", "retain ROUGE-L recall (paraphrases)"),
    ("retain.probability", "utility", "retain answer probability"),
    ("retain.truth_ratio", "utility", "retain truth ratio mean(max(0, 1 - R))"),
    ("utility", "utility", "model utility (harmonic mean of the three retain figures above)"),
    ("fluency.perplexity", "utility", "fluency: perplexity on retain answers (or the given fluency texts)"),
    ("relearn.forget_b_before", "knowledge", "relearning: recall on forget half B before the attack (weights)"),
    ("relearn.forget_a_after", "knowledge", "relearning: recall on forget half A (trained on) after"),
    ("relearn.forget_b_after", "knowledge", "relearning: recall on forget half B (never shown) after"),
    ("relearn.recovered_share", "knowledge", "relearning: B recall after / the original's B recall before"),
    ("relearn.holdout_b_after", "knowledge", "relearning control: holdout half B after training on holdout half A"),
    ("probe.forget", "knowledge", "linear probe accuracy on forget entities (best layer)"),
    ("probe.forget_layer", "knowledge", "linear probe: best layer (0 = embeddings)"),
    ("probe.holdout", "knowledge", "linear probe accuracy on holdout entities (best layer)"),
    ("probe.forget_majority", "knowledge", "linear probe: majority-class accuracy (prior only)"),
    ("lens.forget_mrr", "knowledge", "logit lens: MRR of the true first token, forget (best layer)"),
    ("lens.forget_final_mrr", "knowledge", "logit lens: MRR at the last layer, forget"),
    ("lens.holdout_mrr", "knowledge", "logit lens: MRR, holdout (best layer)"),
    ("quant8.forget_rouge_l", "knowledge", "forget recall after 8-bit RTN quantization"),
    ("quant4.forget_rouge_l", "knowledge", "forget recall after 4-bit RTN quantization"),
    ("quant4.holdout_rouge_l", "knowledge", "holdout recall after 4-bit RTN quantization"),
    ("quant4.retain_rouge_l", "knowledge", "retain recall after 4-bit RTN (did quantization break the model?)"),
    ("mia.loss", "knowledge", "MIA AUC forget vs holdout: LOSS"),
    ("mia.zlib", "knowledge", "MIA AUC: zlib"),
    ("mia.min_k", "knowledge", "MIA AUC: Min-40%"),
    ("mia.min_k_plus_plus", "knowledge", "MIA AUC: Min-40%++"),
    ("privleak", "knowledge", "PrivLeak (AUC - AUC_ref) / AUC_ref"),
)
SECTIONS = {"behaviour": "Behaviour: is it still said? (the model as served)",
            "utility": "Utility and fluency",
            "knowledge": "Knowledge: is it still there? (the weights, as an attacker holds them)"}


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 10 or value == 0 else f"{value:.3f}"
    return str(value)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


def _roles(report: Report) -> list[str]:
    return ["model", "reference", "original"] if report.mode == "reference" else ["model", "original"]


def _rows(report: Report, section: str) -> list[tuple[str, list[str]]]:
    rows = []
    for key, sec, text in FIGURE_ROWS:
        if sec != section or key not in report.figures:
            continue
        values = report.figures[key]
        rows.append((text, [_fmt(values.get(role)) for role in _roles(report)]))
    return rows


def verdict_line(report: Report) -> str:
    shown = report.verdict.value if report.verdict else "undetermined"
    return f"{shown} (decided by {report.decided_by})"


def rule_text() -> str:
    """The rule, with the tolerances as configured (also in docs/evaluation.md)."""
    return (
        f"destructive if retain recall < {vd.DESTRUCTIVE_RETAIN_FRACTION} x the original's or mean NLL on "
        f"retain-side text rises > {vd.FLUENCY_COLLAPSE_NATS} nat; else ineffective if forget recall "
        f"(templates or paraphrases) exceeds the baseline's by more than the tolerance (floor "
        f"{vd.BEHAVIOUR_TOLERANCE}); else suppression-like if any knowledge probe exceeds the baseline by "
        f"more than its tolerance (floors: relearning {vd.RELEARN_TOLERANCE}, probe {vd.PROBE_TOLERANCE}, "
        f"logit lens {vd.LENS_TOLERANCE}, quantization {vd.QUANT_TOLERANCE}, MIA AUC {vd.MIA_TOLERANCE}); "
        f"else removal-like. Each tolerance is max(floor, {vd.NOISE_Z} x the standard error of the gap)."
    )


# --------------------------------------------------------------------------- files


def to_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False)


def to_markdown(report: Report, plots: list[str] | None = None) -> str:
    roles = _roles(report)
    lines = [f"# Evaluation of {report.model}", "",
             f"**Verdict: {verdict_line(report)}**", ""]
    if report.mode == "reference" and report.holdout_verdict is not None:
        agree = "agrees" if report.holdout_verdict == report.verdict else "DISAGREES"
        lines += [f"Holdout-based verdict (what a real model without a reference would get): "
                  f"{report.holdout_verdict.value} ({agree}; {report.holdout_decided_by}).", ""]
    for note in report.notes:
        lines += [f"> {note}", ""]
    lines += ["## Checks", "", f"Rule: {rule_text()}", "",
              f"| check | kind | model | {report.mode} | gap | tolerance | passed |",
              "|---|---|---|---|---|---|---|"]
    for c in report.checks:
        lines.append(f"| {_cell(c.name)} | {c.kind} | {_fmt(c.model)} | {_fmt(c.baseline)} | {_fmt(c.gap)} | "
                     f"{_fmt(c.tolerance)} | {'yes' if c.passed else '**no**'} |")
    lines.append("")
    for section, title in SECTIONS.items():
        rows = _rows(report, section)
        if not rows:
            continue
        lines += [f"## {title}", "", "| figure | " + " | ".join(roles) + " |",
                  "|---|" + "---|" * len(roles)]
        lines += [f"| {_cell(text)} | " + " | ".join(values) + " |" for text, values in rows]
        lines.append("")
    if report.skipped:
        lines += ["## Skipped", ""] + [f"- {k}: {v}" for k, v in report.skipped.items()] + [""]
    lines += ["## Timings (seconds)", "", "| role | " + " | ".join(_parts(report)) + " |",
              "|---|" + "---|" * len(_parts(report))]
    for role, parts in report.timings.items():
        lines.append(f"| {role} | " + " | ".join(_fmt(parts.get(p)) for p in _parts(report)) + " |")
    lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(lines)


def _parts(report: Report) -> list[str]:
    seen: list[str] = []
    for parts in report.timings.values():
        seen += [p for p in parts if p not in seen]
    return seen


def write(report: Report, folder: Path | str) -> list[Path]:
    """Write report.json, report.md and the plots into ``folder``; returns the written paths."""
    from unlearn_kb.evaluation.plots import write_plots

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plots = write_plots(report, folder)
    written = [folder / "report.json", folder / "report.md", *plots]
    (folder / "report.json").write_text(to_json(report) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(to_markdown(report, [str(p) for p in plots]), encoding="utf-8")
    return written


# --------------------------------------------------------------------------- terminal


def print_report(report: Report, console: Console) -> None:
    from rich.table import Table

    colour = {"removal-like": "green", "suppression-like": "yellow", "ineffective": "red",
              "destructive": "magenta"}.get(report.verdict.value if report.verdict else "", "white")
    console.print(f"[bold]{report.model}[/bold]: [bold {colour}]{verdict_line(report)}[/]")
    if report.mode == "reference" and report.holdout_verdict is not None:
        console.print(f"holdout-based verdict: {report.holdout_verdict.value} ({report.holdout_decided_by})")
    for note in report.notes:
        console.print(f"[dim]note: {note}[/dim]")
    checks = Table(title="Checks", show_lines=False)
    for column in ("check", "kind", "model", report.mode, "gap", "tolerance", "passed"):
        checks.add_column(column, justify="left" if column in ("check", "kind") else "right")
    for c in report.checks:
        checks.add_row(c.name, c.kind, _fmt(c.model), _fmt(c.baseline), _fmt(c.gap), _fmt(c.tolerance),
                       "[green]yes[/]" if c.passed else "[red]no[/]")
    console.print(checks)
    roles = _roles(report)
    for section, title in SECTIONS.items():
        rows = _rows(report, section)
        if not rows:
            continue
        table = Table(title=title)
        table.add_column("figure")
        for role in roles:
            table.add_column(role, justify="right")
        for text, values in rows:
            table.add_row(text, *values)
        console.print(table)
    for key, reason in report.skipped.items():
        console.print(f"[dim]{key}: {reason}[/dim]")
    total = report.timings.get("total", {}).get("wall")
    console.print(f"[dim]evaluated in {_fmt(total)} s[/dim]")
