"""Evaluating what the engine wrote: a run folder, or model folders and data files given by hand.

A run folder (``unlearn-kb run ID --out DIR``) holds the unlearned checkpoint and
``manifest.json``: the original model's path, the data files (or the toy world's config), and
the run settings. For a toy-world run the world supplies the original, the reference and all
data; for a run on a real model the holdout set stands in for the missing reference.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unlearn_kb.engine.data import read_examples
from unlearn_kb.errors import UserError
from unlearn_kb.evaluation.measure import EvalConfig, EvalData
from unlearn_kb.evaluation.suite import MeasurementCache, Report, evaluate

if TYPE_CHECKING:
    from unlearn_kb.engine.lm import LanguageModel

Log = Callable[[str], None]


def read_manifest(run_dir: Path | str) -> dict[str, Any]:
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        raise UserError(f"{run_dir}: not a run folder (no manifest.json); evaluate a model folder with "
                        "--model PATH --original PATH --forget F --retain R --holdout H instead")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None


def load_lm(path: Path | str, max_length: int = 256) -> LanguageModel:
    from unlearn_kb.engine.lm import LanguageModel
    from unlearn_kb.engine.models import load_model

    model, tokenizer = load_model(path)
    model.eval()
    return LanguageModel(model=model, tokenizer=tokenizer, max_length=max_length)


TOY_THREADS = 1
"""Torch threads for evaluating toy-world models. Their matrices are too small for intra-op
parallelism to pay: measured on the 2-core dev machine under load, a cold evaluation of three
models took 41 s on one thread and 304 s on two (thread contention), so one is the default."""


def toy_config(config: EvalConfig | None) -> EvalConfig:
    """``config`` with the toy-world thread count unless the caller chose one."""
    config = config or EvalConfig()
    return config if config.threads else replace(config, threads=TOY_THREADS)


def world_cache(world: Any) -> MeasurementCache:
    """Measurements of the world's original and reference live next to its models, keyed by
    weights, data and evaluation config, so every run evaluated on one world measures them once."""
    base = Path(getattr(world, "reference_path", None) or ".").parent
    return MeasurementCache(base / "eval-cache")


def evaluate_run(run_dir: Path | str, config: EvalConfig | None = None, *, write: bool = True,
                 log: Log | None = None, world: Any = None) -> Report:
    """Evaluate the run folder ``run_dir`` and (by default) write report.json, report.md and plots
    into it. The function ``unlearn-kb run ID --eval`` calls."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    max_length = int(manifest.get("run", {}).get("max_length", 256))
    model = load_lm(run_dir, max_length)
    label = f"{manifest.get('method', 'model')} ({run_dir.name})"
    data_info = manifest.get("data", {})
    if manifest.get("toy_world"):
        if world is None:
            from unlearn_kb.toyworld import WorldConfig, load_toyworld

            world_config = (data_info.get("toy_world") or {}).get("config") or {}
            world = load_toyworld(WorldConfig(**world_config))
        report = evaluate(model, EvalData.from_world(world), original=world.load("original"),
                          reference=world.load("reference"), config=toy_config(config), label=label,
                          cache=world_cache(world), log=log)
    else:
        def data_path(name: str) -> Path | None:
            entry = data_info.get(name)
            return Path(entry["path"]) if isinstance(entry, dict) and entry.get("path") else None

        forget, retain, holdout = data_path("forget"), data_path("retain"), data_path("holdout")
        if forget is None or retain is None or holdout is None:
            raise UserError(f"{run_dir}/manifest.json: the run recorded no "
                            f"{'forget' if forget is None else 'retain' if retain is None else 'holdout'} "
                            "file; evaluate with --model/--original/--forget/--retain/--holdout instead")
        report = evaluate_paths(model, original=manifest["model"], forget=forget, retain=retain,
                                holdout=holdout, config=config, label=label, log=log, max_length=max_length)
    if write:
        from unlearn_kb.evaluation.report import write as write_report

        write_report(report, run_dir)
    return report


def evaluate_paths(model: LanguageModel | Path | str, *, original: Path | str, forget: Path | str,
                   retain: Path | str, holdout: Path | str, reference: Path | str | None = None,
                   config: EvalConfig | None = None, label: str | None = None, log: Log | None = None,
                   max_length: int = 256) -> Report:
    """Evaluate a model folder against its original, on data files; reference optional."""
    lm = model if not isinstance(model, Path | str) else load_lm(model, max_length)
    data = EvalData(forget=read_examples(forget), retain=read_examples(retain), holdout=read_examples(holdout),
                    label=f"{Path(forget).name} / {Path(retain).name} / {Path(holdout).name}")
    for name, examples in (("forget", data.forget), ("holdout", data.holdout)):
        if not all(e.is_qa for e in examples):
            raise UserError(f"the {name} set must hold question-answer pairs: recall and the probes ask questions")
    return evaluate(lm, data, original=load_lm(original, max_length),
                    reference=load_lm(reference, max_length) if reference is not None else None,
                    config=config, label=label or str(model), log=log)
