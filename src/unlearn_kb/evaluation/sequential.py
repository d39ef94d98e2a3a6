"""Evaluation after each of K successive forget requests (``unlearn-kb run ID --sequential K``).

Sequential unlearning (e.g. TOFU's growing forget splits, arXiv 2401.06121; the SoK's
"practical challenges") asks whether a method keeps working as requests accumulate: after
request k the forget set is the union of requests 1..k, and utility should not erode step by
step. The reference model never saw any forget fact, so it stays the yardstick for every prefix.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unlearn_kb.engine.data import Example
from unlearn_kb.evaluation.measure import EvalConfig, EvalData
from unlearn_kb.evaluation.relearn import entity_of
from unlearn_kb.evaluation.suite import MeasurementCache, Report, evaluate

if TYPE_CHECKING:
    from unlearn_kb.engine.lm import LanguageModel


def split_requests(forget: Sequence[Example], k: int, seed: int = 0) -> list[list[Example]]:
    """``k`` forget requests that share no entity (round-robin over shuffled entities)."""
    entities = sorted({entity_of(e) for e in forget})
    if not 1 <= k <= len(entities):
        raise ValueError(f"cannot split {len(entities)} entities into {k} requests")
    random.Random(f"sequential-{seed}").shuffle(entities)
    request_of = {entity: i % k for i, entity in enumerate(entities)}
    return [[e for e in forget if request_of[entity_of(e)] == i] for i in range(k)]


def data_after(data: EvalData, requests: Sequence[Sequence[Example]], step: int) -> EvalData:
    """The evaluation data after request ``step`` (0-based): the forget sets so far, by entity."""
    seen = {entity_of(e) for request in requests[: step + 1] for e in request}
    return replace(data, forget=[e for e in data.forget if entity_of(e) in seen],
                   forget_paraphrased=[e for e in data.forget_paraphrased if entity_of(e) in seen],
                   label=f"{data.label}, requests 1..{step + 1}")


def evaluate_sequence(models: Sequence[LanguageModel], data: EvalData, requests: Sequence[Sequence[Example]], *,
                      original: LanguageModel, reference: LanguageModel | None = None,
                      config: EvalConfig | None = None, log: Callable[[str], None] | None = None) -> list[Report]:
    """One report per request: ``models[k]`` is the model after requests 1..k+1.

    Defaults to the behaviour probes only (``EvalConfig(probes=("behaviour",))``): K full
    evaluations are K times the cost; pass a config to run the knowledge probes too.
    """
    if len(models) != len(requests):
        raise ValueError(f"{len(models)} models for {len(requests)} requests")
    config = config or EvalConfig(probes=("behaviour",))
    cache = MeasurementCache()
    return [evaluate(model, data_after(data, requests, step), original=original, reference=reference,
                     config=config, label=f"after request {step + 1}/{len(requests)}", cache=cache, log=log)
            for step, model in enumerate(models)]


def sequence_table(reports: Sequence[Report]) -> list[dict[str, object]]:
    """Per request: verdict and the headline figures, for a table or a plot."""
    rows = []
    for step, report in enumerate(reports, start=1):
        figures = report.figures
        rows.append({
            "request": step,
            "verdict": report.verdict.value if report.verdict else None,
            "decided_by": report.decided_by,
            "forget_rouge_l": figures.get("forget.rouge_l", {}).get("model"),
            "reference_forget_rouge_l": figures.get("forget.rouge_l", {}).get("reference"),
            "retain_rouge_l": figures.get("retain.rouge_l", {}).get("model"),
            "utility": figures.get("utility", {}).get("model"),
        })
    return rows


def run_sequential(method_id: str, k: int, *, overrides: dict[str, Any] | None = None, seed: int = 0,
                   world: Any = None, out: Path | None = None, registry: Any = None,
                   log: Callable[[str], None] | None = None) -> list[Report]:
    """Unlearn the toy world's forget set as ``k`` successive requests, each from the previous
    checkpoint, and report after every request (the deployment problem the SoK names).

    Request 1 starts from the original; request ``i`` unlearns its entities from the model left
    by request ``i - 1``, with the method's toy-world settings. With ``out``, each request's
    checkpoint is kept in ``out/request-<i>``.
    """
    import tempfile

    from unlearn_kb.cli.common import registry as shipped_registry
    from unlearn_kb.engine.lm import LanguageModel
    from unlearn_kb.engine.run import run_method

    if world is None:
        from unlearn_kb.toyworld import WorldConfig, load_toyworld

        world = load_toyworld(WorldConfig())
    registry = registry or shipped_registry()
    record = registry.method(method_id)
    settings = {**record.implementation.toy_overrides, **(overrides or {})}
    requests = split_requests(world.forget, k, seed)
    say = log or (lambda _m: None)
    keep = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="unlearn-kb-sequential-"))
    models: list[LanguageModel] = []
    previous: Path | None = None
    for step, request in enumerate(requests, start=1):
        say(f"request {step}/{k}: {len(request)} forget examples")
        target = keep / f"request-{step}"
        result = run_method(method_id, model=previous if previous is not None else world.original_path,
                            forget=request, retain=list(world.retain), overrides=settings, seed=seed,
                            out=target, eval_limit=40, registry=registry, checkpoints=False)
        if isinstance(result.model, LanguageModel):
            raise ValueError(f"'{method_id}' keeps the weights frozen; successive requests apply to "
                             "methods that change the weights")
        models.append(LanguageModel(result.model, result.tokenizer))
        previous = target
    return evaluate_sequence(models, EvalData.from_world(world), requests, original=world.load("original"),
                             reference=world.load("reference"), log=log)
