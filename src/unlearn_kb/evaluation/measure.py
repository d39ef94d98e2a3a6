"""Measure one model: every behaviour figure and every knowledge probe, with their timings.

A :class:`Measurement` is what one model scores on one :class:`EvalData` under one
:class:`EvalConfig`: flat scalar figures (``"forget.rouge_l"``, ``"relearn.forget_b_after"``, ...),
per-layer curves, per-question truth ratios (for the KS test), fact counts (for the noise-aware
tolerances), seconds per part, and the reason for every probe that did not run. Comparing
measurements (the verdict) is :mod:`unlearn_kb.evaluation.suite`'s job.

Behaviour runs on the model as served; knowledge probes run on :func:`weights_view`, the bare
``lm.weights_model`` an attacker with the weights holds.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from unlearn_kb.engine.data import Example
from unlearn_kb.evaluation import behaviour as bh
from unlearn_kb.evaluation.relearn import RelearnConfig, entity_of, relearn, split_by_entity

if TYPE_CHECKING:
    from unlearn_kb.engine.lm import LanguageModel

BEHAVIOUR = "behaviour"
KNOWLEDGE_PROBES = ("relearn", "probe", "lens", "quant", "mia")
ALL_PROBES = (BEHAVIOUR, *KNOWLEDGE_PROBES)
PROBE_NAMES = {
    BEHAVIOUR: "behaviour (recall, probability, truth ratio, utility, fluency)",
    "relearn": "relearning attack",
    "probe": "linear probe",
    "lens": "logit lens",
    "quant": "weight quantization (RTN)",
    "mia": "membership inference",
}


def parse_probes(text: str) -> tuple[str, ...]:
    """``all``, ``behaviour``, ``knowledge`` or a comma list of probe names, in canonical order."""
    from unlearn_kb.errors import UserError

    wanted: set[str] = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "all":
            wanted.update(ALL_PROBES)
        elif part == "knowledge":
            wanted.update(KNOWLEDGE_PROBES)
        elif part in ALL_PROBES:
            wanted.add(part)
        else:
            raise UserError(f"--probes: unknown probe {part!r}; valid: all, knowledge, {', '.join(ALL_PROBES)}")
    if not wanted:
        raise UserError("--probes: name at least one probe")
    return tuple(p for p in ALL_PROBES if p in wanted)


@dataclass(frozen=True)
class EvalConfig:
    """How much to measure, and the fixed attack budgets. Part of every cache key."""

    probes: tuple[str, ...] = ALL_PROBES
    retain_entities: int = 40  # retain entities sampled for utility and as probe training data
    relearn: RelearnConfig = field(default_factory=RelearnConfig)
    quant_bits: tuple[int, ...] = (8, 4)
    quant_group_size: int | None = None
    mia_attack: str = "min_k_plus_plus"  # the attack PrivLeak and the verdict use
    seed: int = 0
    threads: int | None = None  # torch CPU threads while measuring; None leaves torch's setting

    def key(self) -> str:
        """Hash of everything that changes a figure (not ``threads``)."""
        fields = {k: v for k, v in asdict(self).items() if k != "threads"}
        payload = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class EvalData:
    """The sets an evaluation reads. Paraphrased sets and fluency texts are optional."""

    forget: list[Example]
    retain: list[Example]
    holdout: list[Example]
    forget_paraphrased: list[Example] = field(default_factory=list)
    retain_paraphrased: list[Example] = field(default_factory=list)
    holdout_paraphrased: list[Example] = field(default_factory=list)
    fluency: list[Example] = field(default_factory=list)  # plain texts; retain answers if empty
    label: str = "data"

    @classmethod
    def from_world(cls, world: object) -> EvalData:
        """The toy world's sets. Fluency is the perplexity of ``world.general`` (declarative
        sentences about retain entities) when the world's models trained on them; otherwise of
        the retain answers, since perplexity on text a model never learned says nothing."""
        def get(name: str) -> list[Example]:
            return list(getattr(world, name, None) or [])
        trained_on_general = bool(getattr(getattr(world, "config", None), "train_on_general", False))
        return cls(forget=get("forget"), retain=get("retain"), holdout=get("holdout"),
                   forget_paraphrased=get("forget_paraphrased"),
                   retain_paraphrased=get("retain_paraphrased"),
                   holdout_paraphrased=get("holdout_paraphrased"),
                   fluency=get("general") if trained_on_general else [], label="toy world")

    def key(self) -> str:
        digest = hashlib.sha256()
        for name in ("forget", "retain", "holdout", "forget_paraphrased", "retain_paraphrased",
                     "holdout_paraphrased", "fluency"):
            for e in getattr(self, name):
                digest.update(f"{name}\x00{e.question}\x00{e.answer}\x00{e.text}\n".encode())
        return digest.hexdigest()[:12]

    def sample_retain(self, n_entities: int, seed: int) -> tuple[list[Example], list[Example], list[Example]]:
        """Retain, retain-paraphrased and fluency examples of ``n_entities`` sampled entities."""
        entities = sorted({entity_of(e) for e in self.retain})
        random.Random(f"retain-sample-{seed}").shuffle(entities)
        keep = set(entities[:n_entities])

        def pick(examples: list[Example]) -> list[Example]:
            kept = [e for e in examples if entity_of(e) in keep]
            if kept:
                return kept
            # texts without an entity (a general corpus): an even spread of comparable size
            count = min(len(examples), 4 * n_entities)
            return [examples[i * len(examples) // count] for i in range(count)]
        return pick(self.retain), pick(self.retain_paraphrased) if self.retain_paraphrased else [], \
            pick(self.fluency) if self.fluency else []


def n_facts(examples: Iterable[Example]) -> int:
    """Independent facts among examples: templates of one fact count once (they are correlated)."""
    return len({str(e.extras.get("fact_id") or (entity_of(e), e.extras.get("attribute", e.answer)))
                for e in examples})


@dataclass
class Measurement:
    """What one model scored; JSON-serialisable for the disk cache."""

    scalars: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> float:
        return self.scalars.get(key, math.nan)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> Measurement:
        return cls(**json.loads(text))


def weights_view(lm: LanguageModel) -> LanguageModel:
    """The bare weights as an attacker holding them would run them: no prompt, logit or output hook."""
    from unlearn_kb.engine.lm import LanguageModel

    return LanguageModel(model=lm.weights_model, tokenizer=lm.tokenizer, max_length=lm.max_length,
                         batch_size=lm.batch_size)


def _timed(m: Measurement, part: str, fn: Callable[[], None]) -> None:
    start = time.perf_counter()
    fn()
    m.seconds[part] = round(m.seconds.get(part, 0.0) + time.perf_counter() - start, 3)


def measure(lm: LanguageModel, data: EvalData, config: EvalConfig | None = None,
            log: Callable[[str], None] | None = None) -> Measurement:
    """Every figure ``config.probes`` asks for, on ``lm``."""
    import torch

    config = config or EvalConfig()
    say = log or (lambda _msg: None)
    m = Measurement()
    retain, retain_para, fluency = data.sample_retain(config.retain_entities, config.seed)
    m.counts.update(forget=n_facts(data.forget), holdout=n_facts(data.holdout), retain=n_facts(retain))
    was_training = lm.model.training
    threads_before = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    lm.model.eval()
    try:
        with torch.no_grad():
            if BEHAVIOUR in config.probes:
                say("behaviour")
                _timed(m, BEHAVIOUR, lambda: _behaviour(m, lm, data, retain, retain_para, fluency))
        knowledge = [p for p in config.probes if p in KNOWLEDGE_PROBES]
        if knowledge and not lm.white_box:
            for probe in knowledge:
                m.skipped[probe] = "skipped: the model gives no white-box access (lm.white_box is False)"
            return m
        view = weights_view(lm)
        if "relearn" in knowledge:
            say("relearning attack")
            _timed(m, "relearn", lambda: _relearn(m, view, data, config))
        with torch.no_grad():
            if "probe" in knowledge:
                say("linear probe")
                _timed(m, "probe", lambda: _probe(m, view, data, retain))
            if "lens" in knowledge:
                say("logit lens")
                _timed(m, "lens", lambda: _lens(m, view, data))
            if "quant" in knowledge:
                say("quantization")
                _timed(m, "quant", lambda: _quant(m, view, data, retain, config))
            if "mia" in knowledge:
                say("membership inference")
                _timed(m, "mia", lambda: _mia(m, view, data))
    finally:
        lm.model.train(was_training)
        torch.set_num_threads(threads_before)
    return m


# --------------------------------------------------------------------------- the parts


def _behaviour(m: Measurement, lm: LanguageModel, data: EvalData, retain: list[Example],
               retain_para: list[Example], fluency: list[Example]) -> None:
    sets = {"forget": data.forget, "forget_paraphrased": data.forget_paraphrased,
            "holdout": data.holdout, "holdout_paraphrased": data.holdout_paraphrased,
            "retain": retain, "retain_paraphrased": retain_para}
    for name, examples in sets.items():
        if not examples:
            continue
        r = bh.recall(lm, examples)
        m.scalars[f"{name}.exact_match"] = r.exact_match
        m.scalars[f"{name}.rouge_l"] = r.rouge_l
        m.scalars[f"{name}.probability"] = bh.answer_probability(lm, examples)
    for name, primary, fallback in (("forget", data.forget_paraphrased, data.forget),
                                    ("holdout", data.holdout_paraphrased, data.holdout),
                                    ("retain", retain_para, retain)):
        ratios = bh.truth_ratios(lm, primary or fallback)
        if not ratios:
            continue
        m.samples[f"{name}.truth_ratios"] = ratios
        aggregate = bh.retain_truth_score if name == "retain" else bh.forget_truth_score
        m.scalars[f"{name}.truth_ratio"] = aggregate(ratios)
    texts = fluency or retain
    ppl = bh.perplexity(lm, texts)
    m.scalars["fluency.perplexity"] = ppl
    m.scalars["fluency.nll"] = math.log(ppl) if ppl > 0 else math.nan
    m.scalars["utility"] = bh.model_utility(m.get("retain.rouge_l"), m.get("retain.probability"),
                                            m.get("retain.truth_ratio"))


def _rouge(lm: LanguageModel, examples: Sequence[Example]) -> float:
    return bh.recall(lm, examples).rouge_l if examples else math.nan


def _relearn(m: Measurement, view: LanguageModel, data: EvalData, config: EvalConfig) -> None:
    import torch

    from unlearn_kb.engine.lm import LanguageModel

    for name, examples in (("forget", data.forget), ("holdout", data.holdout)):
        if len({entity_of(e) for e in examples}) < 2:
            m.skipped.setdefault("relearn", f"skipped for {name}: fewer than two entities to split")
            continue
        first, second = split_by_entity(examples, config.seed)
        m.counts[f"relearn.{name}_b"] = n_facts(second)
        m.scalars[f"relearn.{name}_b_before"] = _rouge(view, second)
        attacked = LanguageModel(model=relearn(view.model, view.tokenizer, first, config.relearn, view.max_length),
                                 tokenizer=view.tokenizer, max_length=view.max_length, batch_size=view.batch_size)
        with torch.no_grad():
            m.scalars[f"relearn.{name}_a_after"] = _rouge(attacked, first)
            m.scalars[f"relearn.{name}_b_after"] = _rouge(attacked, second)
        del attacked


def _probe(m: Measurement, view: LanguageModel, data: EvalData, retain: list[Example]) -> None:
    from unlearn_kb.evaluation.probes import linear_probe

    results = linear_probe(view, retain, {"forget": data.forget, "holdout": data.holdout})
    if "forget" not in results:
        m.skipped["probe"] = ("skipped: no attribute with enough retain examples whose values also occur "
                              "in the forget set")
    for name, result in results.items():
        m.scalars[f"probe.{name}"] = result.best
        m.scalars[f"probe.{name}_layer"] = float(result.best_layer)
        m.scalars[f"probe.{name}_majority"] = result.chance
        m.curves[f"probe.{name}"] = result.per_layer


def _lens(m: Measurement, view: LanguageModel, data: EvalData) -> None:
    from unlearn_kb.evaluation.probes import logit_lens

    for name, examples in (("forget", data.forget), ("holdout", data.holdout)):
        result = logit_lens(view, examples)
        if result is None:
            m.skipped.setdefault("lens", "skipped: no final norm / output embedding found for this architecture")
            continue
        m.scalars[f"lens.{name}_mrr"] = result.best
        m.scalars[f"lens.{name}_layer"] = float(result.best_layer)
        m.scalars[f"lens.{name}_final_mrr"] = result.mrr[-1]
        m.curves[f"lens.{name}_mrr"] = result.mrr
        m.curves[f"lens.{name}_median_rank"] = result.median_rank


def _quant(m: Measurement, view: LanguageModel, data: EvalData, retain: list[Example], config: EvalConfig) -> None:
    from unlearn_kb.engine.lm import LanguageModel
    from unlearn_kb.evaluation.quantization import library_quantization_status, quantize_model

    for bits in config.quant_bits:
        quantized = quantize_model(view.model, bits, config.quant_group_size)
        qlm = LanguageModel(model=quantized, tokenizer=view.tokenizer, max_length=view.max_length,
                            batch_size=view.batch_size)
        m.scalars[f"quant{bits}.forget_rouge_l"] = _rouge(qlm, data.forget)
        m.scalars[f"quant{bits}.holdout_rouge_l"] = _rouge(qlm, data.holdout)
        m.scalars[f"quant{bits}.retain_rouge_l"] = _rouge(qlm, retain)
        del quantized, qlm
    m.skipped["quant_library"] = library_quantization_status()


def _mia(m: Measurement, view: LanguageModel, data: EvalData) -> None:
    from unlearn_kb.evaluation.mia import attack_aucs

    if not data.holdout:
        m.skipped["mia"] = "skipped: membership inference needs a holdout set (non-members)"
        return
    for attack, auc in attack_aucs(view, data.forget, data.holdout).items():
        m.scalars[f"mia.{attack}"] = auc
