"""CLI command: ``unlearn-kb run``, unlearning with a registered method.

Thin over :func:`unlearn_kb.engine.run.run_method`. Torch and transformers are imported inside
the command only: this module is imported by every knowledge command, which must stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from unlearn_kb.cli.common import complete_method_id, registry, stderr_console, stdout_console


def _list_runnable() -> None:
    from rich.table import Table

    from unlearn_kb.engine.run import runnable

    methods = runnable(registry())
    table = Table(title=f"Runnable methods ({len(methods)})", title_justify="left")
    for column in ("id", "name", "intention", "needs", "hyperparameters (paper defaults)", "tested"):
        table.add_column(column, overflow="fold")
    for m in methods:
        needs = [word for word, flag in (("retain", m.requirements.retain_set),
                                         ("reference", m.requirements.reference_model)) if flag]
        defaults = ", ".join(f"{h.name}={h.default}" for h in m.hyperparameters) or "-"
        table.add_row(m.id, m.name, m.intention.stated.value, ", ".join(needs) or "-", defaults,
                      "yes" if m.implementation.tested else "no")
    stdout_console().print(table)


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _print_summary(result: Any) -> None:
    from rich.table import Table

    table = Table()
    for column in ("set", "examples", "before", "after"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for name in ("forget", "retain"):
        table.add_row(name, str(result.evaluated.get(name, 0)), _format(result.before.get(name)),
                      _format(result.after.get(name)))
    console = stdout_console()
    console.print(f"[bold]{result.method}[/]: exact-match recall before and after "
                  f"({result.steps} steps, {result.seconds:.1f} s)")
    console.print(table)
    if result.out is not None:
        console.print(f"Unlearned model, manifest.json and log.jsonl written to {result.out}")
    else:
        console.print("No --out given: the unlearned model was not saved.")


def _run_sequential(method_id: str, k: int, overrides: dict[str, str], seed: int, out: Path | None) -> None:
    from rich.table import Table

    from unlearn_kb.evaluation.sequential import run_sequential, sequence_table

    console = stderr_console()
    reports = run_sequential(method_id, k, overrides=overrides, seed=seed, out=out,
                             log=lambda line: console.print(f"[dim]{line}[/dim]"))
    rows = sequence_table(reports)
    table = Table(title=f"{method_id}: after each of {k} successive forget requests", title_justify="left")
    for column in rows[0]:
        table.add_column(str(column))
    for row in rows:
        table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()))
    stdout_console().print(table)


def run(
    method_id: Annotated[str | None, typer.Argument(
        metavar="ID", help="Method id or alias (see 'unlearn-kb run --list').",
        autocompletion=complete_method_id, show_default=False)] = None,
    list_methods: Annotated[bool, typer.Option("--list", help="List the runnable methods and exit.")] = False,
    model: Annotated[Path | None, typer.Option(
        help="Model folder (save_pretrained) or hub name. Default: the toy world's original model.")] = None,
    forget: Annotated[Path | None, typer.Option(
        help="Forget set: JSON lines of {question, answer[, alternate]} or {text}.")] = None,
    retain: Annotated[Path | None, typer.Option(help="Retain set, same format.")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Folder for the unlearned checkpoint, manifest.json and log.jsonl (must not exist).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE",
        help="Override a method hyperparameter or run setting (lr, steps, batch_size, ...); repeatable.")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (default: from epochs).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    trust_remote_code: Annotated[bool, typer.Option(
        "--trust-remote-code", help="Allow model code from the hub (runs code from the model's repo).")] = False,
    allow_pickle: Annotated[bool, typer.Option(
        "--allow-pickle", help="Allow pickle (*.bin) weights, which can run code when loaded.")] = False,
    lora: Annotated[str | None, typer.Option(
        help="Train a LoRA adapter instead of the weights: r=16,alpha=32,targets=q_proj,v_proj[,merge=false]. "
             "The adapter is merged into the saved model unless merge=false.")] = None,
    sequential: Annotated[int | None, typer.Option(
        help="Toy world: unlearn the forget set as K successive requests, each from the previous "
             "checkpoint, and report after every request.", min=1)] = None,
    evaluate: Annotated[bool, typer.Option(
        "--eval", help="Then evaluate the run (as 'unlearn-kb eval'); without --out it is kept under runs/.")] = False,
    resume: Annotated[Path | None, typer.Option(
        help="Continue an interrupted run from its checkpoint (Ctrl-C or SIGTERM saves one, to "
             "<out>.checkpoint); give the same method, data and settings as the first time.")] = None,
    processes: Annotated[int | None, typer.Option(
        help="Run on N processes (data parallel; one GPU each on a GPU machine) through torchrun, "
             "or through accelerate with --accelerate-config.", min=1, show_default=False)] = None,
    accelerate_config: Annotated[Path | None, typer.Option(
        help="With --processes: an accelerate config (configs/accelerate/fsdp.yaml, deepspeed_zero3.yaml, "
             "ddp.yaml) to launch with.", show_default=False)] = None,
) -> None:
    """Unlearn the forget set from a model with a registered method, and compare recall before and after."""
    if list_methods:
        _list_runnable()
        return
    if method_id is None:
        raise typer.BadParameter("give a method ID, or --list to see the runnable ones", param_hint="ID")
    if accelerate_config is not None and processes is None:
        raise typer.BadParameter("give the number of processes too (--processes N)", param_hint="--accelerate-config")
    if processes is not None:
        from unlearn_kb.cli.launch import relaunch

        relaunch(processes, accelerate_config)

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from unlearn_kb.engine.run import parse_set_options, run_method

    overrides = parse_set_options(set_ or [])
    if sequential is not None:
        if resume is not None:
            raise typer.BadParameter("--resume continues a single run; it does not apply to --sequential",
                                     param_hint="--resume")
        _run_sequential(method_id, sequential, overrides, seed, out)
        return
    if evaluate and out is None:
        import time

        out = Path("runs") / f"{method_id}-{time.strftime('%Y%m%d-%H%M%S')}"
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[terms]}"), TimeElapsedColumn(), TimeRemainingColumn())
    bar = Progress(*columns, console=stderr_console())
    task = bar.add_task(method_id, total=None, terms="")

    def show(record: dict[str, Any]) -> None:
        if record["step"] == 1:
            bar.start()  # only once training runs: loading and errors before it print no bar
        skip = {"step", "total_steps", "lr", "grad_norm", "tokens", "tokens_per_s", "seconds"}
        terms = " ".join(f"{k}={v:.4g}" for k, v in record.items() if k not in skip)
        bar.update(task, completed=record["step"], total=record["total_steps"],
                   terms=f"{terms} {record['tokens_per_s']:.0f} tok/s")

    try:
        result = run_method(
            method_id, model=model, forget=forget, retain=retain, out=out, overrides=overrides,
            steps=steps, seed=seed, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
            lora=lora, resume=resume, progress=show,
        )
    finally:
        if bar.live.is_started:  # a bar never started (an error before training) prints nothing
            bar.stop()
    if not result.main_process:
        return  # the other processes of a multi-process run: the main one reports and evaluates
    _print_summary(result)
    if evaluate:
        from unlearn_kb.evaluation import evaluate_run
        from unlearn_kb.evaluation.report import print_report

        print_report(evaluate_run(result.out), stdout_console())


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("run")(run)
