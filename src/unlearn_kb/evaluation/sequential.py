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
from typing import TYPE_CHECKING

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
