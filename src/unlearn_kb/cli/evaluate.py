"""CLI commands: ``unlearn-kb eval`` (one model: behaviour, knowledge probes, verdict) and
``unlearn-kb bench`` (every implemented method on the toy world, recorded in registry/results).

Thin over :mod:`unlearn_kb.evaluation`; torch is imported inside the commands only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unlearn_kb.cli.common import stderr_console, stdout_console
from unlearn_kb.errors import UserError

PROBES_HELP = ("Which parts to run: all, behaviour, knowledge, or a comma list of "
               "behaviour, relearn, probe, lens, quant, mia.")


def eval_command(
    run_dir: Annotated[Path | None, typer.Argument(
        metavar="RUN_DIR", help="A run folder written by 'unlearn-kb run ID --out RUN_DIR'.",
        show_default=False)] = None,
    model: Annotated[Path | None, typer.Option(help="Unlearned model folder (instead of RUN_DIR).")] = None,
    original: Annotated[Path | None, typer.Option(help="The model before unlearning (with --model).")] = None,
    reference: Annotated[Path | None, typer.Option(
        help="A model never trained on the forget set, if you have one (with --model).")] = None,
    forget: Annotated[Path | None, typer.Option(help="Forget set, JSON lines of {question, answer}.")] = None,
    retain: Annotated[Path | None, typer.Option(help="Retain set, same format.")] = None,
    holdout: Annotated[Path | None, typer.Option(
        help="Holdout set: facts of the same kind the model never saw (stands in for a reference).")] = None,
    probes: Annotated[str, typer.Option(help=PROBES_HELP)] = "all",
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of tables.")] = False,
    out: Annotated[Path | None, typer.Option(
        help="Folder for report.json, report.md and plots (default: RUN_DIR; with --model: not written).")] = None,
    threads: Annotated[int | None, typer.Option(
        help="Torch CPU threads (default: 1 for toy-world runs, torch's own choice otherwise).")] = None,
) -> None:
    """Evaluate an unlearned model: is the forget set still said (behaviour), is it still there
    (knowledge probes), and the verdict: removal-like, suppression-like, ineffective or destructive."""
    from unlearn_kb.evaluation.measure import EvalConfig, parse_probes

    config = EvalConfig(probes=parse_probes(probes), threads=threads)
    log_console = stderr_console()

    def log(message: str) -> None:
        log_console.print(f"[dim]{message}[/dim]")

    if run_dir is not None:
        if model is not None:
            raise UserError("give either RUN_DIR or --model, not both")
        from unlearn_kb.evaluation.runs import evaluate_run

        report = evaluate_run(run_dir, config, write=out is None, log=log)
        target = out
    else:
        missing = [name for name, value in (("--model", model), ("--original", original), ("--forget", forget),
                                            ("--retain", retain), ("--holdout", holdout)) if value is None]
        if missing:
            raise UserError(f"give RUN_DIR, or --model with {', '.join(missing)}")
        from unlearn_kb.evaluation.runs import evaluate_paths

        report = evaluate_paths(model, original=original, forget=forget, retain=retain,  # type: ignore[arg-type]
                                holdout=holdout, reference=reference, config=config, log=log)
        target = out
    if target is not None:
        from unlearn_kb.evaluation.report import write

        write(report, target)
    _show(report, json_out)
    written = target or run_dir
    if written is not None and not json_out:
        stderr_console().print(f"report.json, report.md and plots written to {written}")


def _show(report: object, json_out: bool) -> None:
    from unlearn_kb.evaluation.report import print_report, to_json

    if json_out:
        print(to_json(report))  # type: ignore[arg-type]
    else:
        print_report(report, stdout_console())  # type: ignore[arg-type]


def bench_command(
    methods: Annotated[str | None, typer.Option(
        help="Comma list of method ids (default: every implemented method).")] = None,
    out: Annotated[Path, typer.Option(help="Where to write <method-id>.json results.")] = Path("registry/results"),
    probes: Annotated[str, typer.Option(help=PROBES_HELP)] = "all",
    seed: Annotated[int, typer.Option(help="Random seed of the unlearning runs.")] = 0,
    calibration: Annotated[bool, typer.Option(
        "--calibration", help="Also evaluate the reference, the original and an output guardrail "
                              "(the yardstick's own check; nothing is recorded for them).")] = False,
    runs: Annotated[Path | None, typer.Option(
        help="Keep each run's checkpoint and report under this folder.")] = None,
) -> None:
    """Run every implemented method at its default config on the toy world, evaluate it, and record
    the verdict in registry/results/<method-id>.json."""
    import shlex
    import sys

    from rich.table import Table

    from unlearn_kb.evaluation.bench import bench, calibration_reports
    from unlearn_kb.evaluation.measure import EvalConfig, parse_probes

    config = EvalConfig(probes=parse_probes(probes))
    log_console = stderr_console()

    def log(message: str) -> None:
        log_console.print(f"[dim]{message}[/dim]")

    wanted = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    command = "unlearn-kb " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None
    reports = {}
    if calibration:
        from unlearn_kb.toyworld import WorldConfig, load_toyworld

        world = load_toyworld(WorldConfig())
        reports.update({f"[calibration] {k}": v for k, v in calibration_reports(world, config, log).items()})
    else:
        world = None
    reports.update(bench(wanted, out, config=config, seed=seed, command=command, log=log, world=world,
                         runs_dir=runs))
    table = Table(title="Verdicts on the toy world", title_justify="left")
    for column in ("method", "verdict", "decided by", "holdout-based", "seconds"):
        table.add_column(column)
    for name, report in reports.items():
        table.add_row(name, report.verdict.value if report.verdict else "-", report.decided_by,
                      report.holdout_verdict.value if report.holdout_verdict else "-",
                      f"{report.timings.get('total', {}).get('wall', 0):.0f}")
    stdout_console().print(table)
    stderr_console().print(f"results written to {out}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("eval")(eval_command)
    app.command("bench")(bench_command)
