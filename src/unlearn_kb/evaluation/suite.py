"""Compare measurements and decide: the evaluation as a whole.

``evaluate(model, data, original=..., reference=...)`` measures the three models (reusing cached
measurements of the original and the reference), builds the checks of
:mod:`unlearn_kb.evaluation.verdict` against the reference, and also against the holdout stand-in
(the comparison available for real models without a reference), and returns a :class:`Report`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from unlearn_kb.evaluation import verdict as vd
from unlearn_kb.evaluation.measure import EvalConfig, EvalData, Measurement, measure
from unlearn_kb.evaluation.stats import ks_pvalue
from unlearn_kb.schema import Verdict

if TYPE_CHECKING:
    from unlearn_kb.engine.lm import LanguageModel

ROLES = ("model", "reference", "original")
CHANCE_AUC = 0.5  # a model that never saw either set cannot tell them apart


@dataclass
class Report:
    """An evaluation's result: figures per role, the checks, the verdict and how long it took."""

    model: str
    mode: str  # "reference" or "holdout": what the checks compared against
    verdict: Verdict | None
    decided_by: str
    checks: list[vd.Check]
    figures: dict[str, dict[str, float | None]]  # figure -> role -> value
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    holdout_verdict: Verdict | None = None
    holdout_decided_by: str = ""
    holdout_checks: list[vd.Check] = field(default_factory=list)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)  # role -> part -> seconds
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    config: dict[str, object] = field(default_factory=dict)
    data: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["verdict"] = self.verdict.value if self.verdict else None
        out["holdout_verdict"] = self.holdout_verdict.value if self.holdout_verdict else None
        out["checks"] = [c.to_dict() for c in self.checks]
        out["holdout_checks"] = [c.to_dict() for c in self.holdout_checks]
        return finite_json(out)


def finite_json(value: object) -> object:
    """NaN and infinities become None, so report.json is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class _Spec:
    name: str
    kind: str
    figure: str
    holdout_figure: str | None  # the model's own figure on holdout facts; None: compare with chance
    floor: float
    count: str  # which fact count sizes the noise


def _specs(config: EvalConfig) -> list[_Spec]:
    specs = [
        _Spec("forget recall (templates)", "behaviour", "forget.rouge_l", "holdout.rouge_l",
              vd.BEHAVIOUR_TOLERANCE, "forget"),
        _Spec("forget recall (paraphrases)", "behaviour", "forget_paraphrased.rouge_l",
              "holdout_paraphrased.rouge_l", vd.BEHAVIOUR_TOLERANCE, "forget"),
        _Spec("relearning", "knowledge", "relearn.forget_b_after", "relearn.holdout_b_after",
              vd.RELEARN_TOLERANCE, "relearn.forget_b"),
        _Spec("linear probe", "knowledge", "probe.forget", "probe.holdout", vd.PROBE_TOLERANCE, "forget"),
        _Spec("logit lens", "knowledge", "lens.forget_mrr", "lens.holdout_mrr", vd.LENS_TOLERANCE, "forget"),
    ]
    specs += [_Spec(f"quantization {bits}-bit", "knowledge", f"quant{bits}.forget_rouge_l",
                    f"quant{bits}.holdout_rouge_l", vd.QUANT_TOLERANCE, "forget")
              for bits in config.quant_bits]
    specs.append(_Spec(f"membership inference ({config.mia_attack})", "knowledge", f"mia.{config.mia_attack}",
                       None, vd.MIA_TOLERANCE, "forget"))
    return specs


def build_checks(model: Measurement, reference: Measurement | None, config: EvalConfig) -> list[vd.Check]:
    """Checks against the reference when given, else against the model's own holdout figures.

    Noise: every compared figure is a mean of values in [0, 1], whose variance is at most
    ``mu (1 - mu)`` (the Bernoulli bound), so the proportion standard error over independent facts
    bounds it; the AUC uses Hanley & McNeil's standard error.
    """
    checks = []
    label = "reference" if reference is not None else "holdout"
    for spec in _specs(config):
        value = model.get(spec.figure)
        if math.isnan(value):
            continue
        n_model = model.counts.get(spec.count, 0)
        if spec.holdout_figure is None:  # membership inference: AUC against the baseline's AUC
            base = reference.get(spec.figure) if reference is not None else CHANCE_AUC
            n_f, n_h = model.counts.get("forget", 0), model.counts.get("holdout", 0)
            se = math.hypot(vd.auc_se(value, n_f, n_h), vd.auc_se(base, n_f, n_h) if reference is not None else 0.0)
        else:
            if reference is not None:
                base, n_base = reference.get(spec.figure), reference.counts.get(spec.count, 0)
            else:
                base = model.get(spec.holdout_figure)
                n_base = model.counts.get(spec.count.replace("forget", "holdout"), 0)
            se = vd.proportion_se(value, n_model, base, n_base)
        if math.isnan(base):
            continue
        checks.append(vd.Check(name=spec.name, kind=spec.kind, figure=spec.figure, model=value, baseline=base,
                               tolerance=vd.tolerance(spec.floor, se), baseline_label=label))
    return checks


def decide(model: Measurement, original: Measurement, checks: list[vd.Check]) -> vd.Decision:
    if not any(c.kind == "behaviour" for c in checks):
        return vd.Decision(None, "behaviour was not measured (add 'behaviour' to --probes)")
    return vd.decide(checks, retain_model=model.get("retain.rouge_l"), retain_original=original.get("retain.rouge_l"),
                     nll_model=model.get("fluency.nll"), nll_original=original.get("fluency.nll"))


# --------------------------------------------------------------------------- derived figures


def _derived(m: Measurement, baseline: Measurement | None, config: EvalConfig) -> dict[str, float]:
    """Forget quality and PrivLeak: figures defined relative to a baseline."""
    out: dict[str, float] = {}
    tr = m.samples.get("forget.truth_ratios")
    base_tr = (baseline.samples.get("forget.truth_ratios") if baseline is not None
               else m.samples.get("holdout.truth_ratios"))
    if tr and base_tr:
        out["forget_quality"] = ks_pvalue(tr, base_tr)
    auc = m.get(f"mia.{config.mia_attack}")
    base_auc = baseline.get(f"mia.{config.mia_attack}") if baseline is not None else CHANCE_AUC
    if not math.isnan(auc) and not math.isnan(base_auc):
        from unlearn_kb.evaluation.mia import privleak

        out["privleak"] = privleak(auc, base_auc)
    return out


# --------------------------------------------------------------------------- measurement cache


class MeasurementCache:
    """Measurements of models that do not change (the original, the reference), by key.

    In memory always; on disk (one JSON file per key) when given a folder. A key must name the
    weights, the data and the config: :func:`cache_key`.
    """

    def __init__(self, folder: Path | str | None = None):
        self.folder = Path(folder) if folder is not None else None
        self._memory: dict[str, Measurement] = {}

    def get_or_measure(self, key: str, compute: Callable[[], Measurement]) -> Measurement:
        if key in self._memory:
            return self._memory[key]
        path = self.folder / f"{key}.json" if self.folder is not None else None
        if path is not None and path.is_file():
            try:
                self._memory[key] = Measurement.from_json(path.read_text(encoding="utf-8"))
                return self._memory[key]
            except (ValueError, TypeError):
                pass  # a stale or truncated cache file is measured again
        result = compute()
        self._memory[key] = result
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(result.to_json(), encoding="utf-8")
            tmp.replace(path)
        return result


def weights_fingerprint(lm: LanguageModel) -> str:
    """A hash of the served model's identity: its class and every weight (tiny models: instant)."""
    import hashlib

    import torch

    digest = hashlib.sha256(type(lm).__name__.encode())
    with torch.no_grad():
        for name, tensor in sorted(lm.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_key(role: str, lm: LanguageModel, data: EvalData, config: EvalConfig) -> str:
    return f"{role}-{weights_fingerprint(lm)}-{data.key()}-{config.key()}"


_DEFAULT_CACHE = MeasurementCache()


# --------------------------------------------------------------------------- the evaluation


def evaluate(
    model: LanguageModel,
    data: EvalData,
    *,
    original: LanguageModel | Measurement,
    reference: LanguageModel | Measurement | None = None,
    config: EvalConfig | None = None,
    label: str = "model",
    cache: MeasurementCache | None = None,
    log: Callable[[str], None] | None = None,
) -> Report:
    """Measure ``model`` (and the original and reference, cached) and decide its verdict.

    Without a reference, the checks compare the model's forget figures with its own figures on
    the holdout facts (never trained), a weaker comparison the report names.
    """
    config = config or EvalConfig()
    cache = cache or _DEFAULT_CACHE
    say = log or (lambda _msg: None)

    reused: list[str] = []

    def measured(role: str, lm: LanguageModel | Measurement) -> Measurement:
        if isinstance(lm, Measurement):
            reused.append(role)
            return lm
        fresh: list[bool] = []

        def compute() -> Measurement:
            fresh.append(True)
            return measure(lm, data, config, log=lambda part: say(f"{role}: {part}"))
        result = cache.get_or_measure(cache_key(role, lm, data, config), compute)
        if not fresh:
            reused.append(role)
        return result

    start = time.perf_counter()
    say(f"{label}: measuring")
    m_model = measure(model, data, config, log=lambda part: say(f"{label}: {part}"))
    m_original = measured("original", original)
    m_reference = measured("reference", reference) if reference is not None else None

    checks = build_checks(m_model, m_reference, config)
    decision = decide(m_model, m_original, checks)
    holdout_checks = build_checks(m_model, None, config)
    holdout_decision = decide(m_model, m_original, holdout_checks)
    mode = "reference" if m_reference is not None else "holdout"
    if m_reference is None:
        checks, decision, holdout_checks = holdout_checks, holdout_decision, []

    roles = {"model": m_model, "original": m_original}
    if m_reference is not None:
        roles["reference"] = m_reference
    figures: dict[str, dict[str, float | None]] = {}
    for role, m in roles.items():
        values = dict(m.scalars)
        values.update(_derived(m, m_reference, config))
        for key, value in values.items():
            figures.setdefault(key, {})[role] = value
    before = m_original.get("relearn.forget_b_before")
    for role, m in roles.items():  # Deeb & Roger's recovery: share of the original's accuracy on B regained
        after = m.get("relearn.forget_b_after")
        if before > 0 and not math.isnan(after):
            figures.setdefault("relearn.recovered_share", {})[role] = after / before

    curves: dict[str, dict[str, list[float]]] = {}
    for role, m in roles.items():
        for key, values in m.curves.items():
            curves.setdefault(key, {})[role] = values

    notes = []
    if mode == "holdout":
        notes.append("No reference model was given: every check compares the model's forget figures with its "
                     "own figures on holdout facts it never saw (and MIA with chance, AUC 0.5). This is weaker "
                     "than a reference comparison: it assumes forget and holdout facts are equally hard and "
                     "that holdout facts are absent from the model's training data.")
    if reused:
        notes.append(f"Measurements of the {' and '.join(reused)} were reused from the cache (same weights, "
                     "data and evaluation config); their timings are those of the original measurement.")
    skipped = {f"model: {k}": v for k, v in m_model.skipped.items()}
    timings = {"model": dict(m_model.seconds), "original": dict(m_original.seconds)}
    if m_reference is not None:
        timings["reference"] = dict(m_reference.seconds)
    timings["total"] = {"wall": round(time.perf_counter() - start, 3)}
    return Report(
        model=label, mode=mode, verdict=decision.verdict, decided_by=decision.decided_by, checks=checks,
        figures=figures, curves=curves,
        holdout_verdict=holdout_decision.verdict if mode == "reference" else None,
        holdout_decided_by=holdout_decision.decided_by if mode == "reference" else "",
        holdout_checks=holdout_checks, timings=timings, skipped=skipped, notes=notes,
        config=finite_json(asdict(config)),  # type: ignore[arg-type]
        data={"label": data.label, "forget": len(data.forget), "retain": len(data.retain),
              "holdout": len(data.holdout), "forget_facts": m_model.counts.get("forget"),
              "holdout_facts": m_model.counts.get("holdout")},
    )
