"""``unlearn-kb bench``: every implemented method at its default config on the toy world, evaluated.

Each method runs through the engine (:func:`unlearn_kb.engine.run.run_method`) with the record's
paper defaults and toy overrides, is evaluated against the world's reference and original, and
its verdict is written as ``<out>/<method-id>.json``, a :class:`unlearn_kb.schema.MeasuredResult`.
The calibration subjects (reference, original, output guardrail) can be evaluated alongside, to
show that the yardstick itself gives the expected answers.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from unlearn_kb.errors import UserError
from unlearn_kb.evaluation.measure import EvalConfig, EvalData
from unlearn_kb.evaluation.suite import MeasurementCache, Report, evaluate, finite_json
from unlearn_kb.schema import MeasuredResult

Log = Callable[[str], None]


def result_figures(report: Report) -> dict[str, Any]:
    """The report's figures in MeasuredResult's shape: ``{figure: {role: value}}`` plus one entry per check."""
    figures: dict[str, Any] = {key: dict(values) for key, values in report.to_dict()["figures"].items()}
    for check in report.checks:
        figures[f"check: {check.name}"] = {"model": check.model, "baseline": check.baseline,
                                           "gap": check.gap, "tolerance": check.tolerance,
                                           "passed": check.passed}
    figures["verdict (holdout-based)"] = report.holdout_verdict.value if report.holdout_verdict else None
    return finite_json(figures)  # type: ignore[return-value]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for name in ("unlearn-kb", "torch", "transformers"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def measured_result(method_id: str, report: Report, command: str, seed: int) -> MeasuredResult:
    if report.verdict is None:
        raise UserError(f"{method_id}: the evaluation reached no verdict ({report.decided_by}); nothing to record")
    return MeasuredResult(method=method_id, verdict=report.verdict, decided_by=report.decided_by,
                          figures=result_figures(report), command=command, seed=seed, versions=_versions(),
                          date=datetime.now(UTC).date().isoformat())


def calibration_reports(world: Any, config: EvalConfig | None = None, log: Log | None = None,
                        cache: MeasurementCache | None = None) -> dict[str, Report]:
    """Reference, original and output guardrail, evaluated like any method."""
    from unlearn_kb.evaluation.calibration import OutputGuardrail
    from unlearn_kb.evaluation.runs import toy_config, world_cache

    data = EvalData.from_world(world)
    original, reference = world.load("original"), world.load("reference")
    guard = OutputGuardrail.over(original, {e.extras["entity"] for e in data.forget})
    cache = cache or world_cache(world)
    config = toy_config(config)
    return {label: evaluate(lm, data, original=original, reference=reference, config=config, label=label,
                            cache=cache, log=log)
            for label, lm in (("reference", reference), ("original", original), ("output guardrail", guard))}


def bench(methods: Sequence[str] | None = None, out: Path | str = "registry/results", *,
          config: EvalConfig | None = None, seed: int = 0, command: str | None = None,
          log: Log | None = None, world: Any = None, runs_dir: Path | str | None = None) -> dict[str, Report]:
    """Run, evaluate and record each method; returns the reports by method id."""
    from unlearn_kb.cli.common import registry as shipped_registry
    from unlearn_kb.engine.lm import LanguageModel
    from unlearn_kb.engine.run import run_method, runnable
    from unlearn_kb.evaluation.runs import TOY_THREADS, toy_config, world_cache
    from unlearn_kb.toyworld.training import cpu_threads

    config = toy_config(config)
    registry = shipped_registry()
    available = [m.id for m in runnable(registry)]
    chosen = [registry.method(m).id for m in methods] if methods else available
    not_runnable = [m for m in chosen if m not in available]
    if not_runnable:
        raise UserError(f"not implemented here: {', '.join(not_runnable)}; runnable: {', '.join(available) or '(none)'}")
    if world is None:
        from unlearn_kb.toyworld import WorldConfig, load_toyworld

        world = load_toyworld(WorldConfig())
    data = EvalData.from_world(world)
    original, reference = world.load("original"), world.load("reference")
    cache = world_cache(world)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    command = command or "unlearn-kb bench " + shlex.join(["--methods", ",".join(chosen)])
    reports: dict[str, Report] = {}
    say = log or (lambda _m: None)
    for method_id in chosen:
        say(f"{method_id}: unlearning")
        run_out = Path(runs_dir) / method_id if runs_dir is not None else None
        with cpu_threads(TOY_THREADS):  # same reason as the evaluation's: tiny models, busy CPUs
            result = run_method(method_id, world=world, seed=seed, out=run_out, registry=registry, checkpoints=False)
        if isinstance(result.model, LanguageModel):  # a frozen-weight method serves a wrapper
            lm = result.model
        else:
            lm = LanguageModel(model=result.model, tokenizer=result.tokenizer,
                               max_length=int(result.run.get("max_length", original.max_length)))
        report = evaluate(lm, data, original=original, reference=reference, config=config,
                          label=method_id, cache=cache, log=log)
        reports[method_id] = report
        if run_out is not None:
            from unlearn_kb.evaluation.report import write as write_report

            write_report(report, run_out)
        record = measured_result(method_id, report, command, seed)
        (out / f"{method_id}.json").write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return reports
