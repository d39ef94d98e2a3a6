"""Behaviour: is the fact still said? Recall, answer probability, truth ratio, utility, fluency.

Everything here goes through the model *as served* (``LanguageModel.generate_answers`` and
``answer_logprobs``, which apply a wrapper's prompt, logit and output hooks), because behaviour is
what a user of the deployed model sees.

Conventions follow TOFU (arXiv 2401.06121) as open-unlearning implements it
(``src/evals/metrics/memorization.py``, ``utils.py``):

* answer probability ``P(a|q)^{1/|a|} = exp(-mean token NLL)`` over the answer tokens;
* truth ratio per question ``R = P_wrong / P_correct`` where ``P_correct`` is the length-normalised
  probability of the correct answer and ``P_wrong = exp(-mean_i NLL_i)`` the geometric mean over the
  perturbed answers of their length-normalised probabilities. TOFU paraphrases the *answer*; the
  toy world's answers are single words, so we paraphrase the *question* instead (held-out
  templates) and keep the answer;
* forget-set aggregate ``mean(min(R, 1/R))`` (1 = the model cannot tell true from false, as a
  model that never saw the facts); retain-set aggregate ``mean(max(0, 1 - R))`` (1 = it can);
* forget quality = ``ks_2samp(R_model, R_reference).pvalue`` on the per-question forget ratios;
* model utility = harmonic mean of retain ROUGE-L recall, retain answer probability and retain
  truth-ratio score (TOFU's nine-way harmonic mean restricted to the retain set: the toy world has
  no real-author or world-fact sets).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from unlearn_kb.engine.data import Example
from unlearn_kb.evaluation.stats import harmonic_mean, mean
from unlearn_kb.evaluation.text import exact_match, rouge_l_recall

if TYPE_CHECKING:
    from unlearn_kb.engine.lm import LanguageModel

TR_EPSILON = 1e-10  # open-unlearning's guard against a zero correct-answer probability


@dataclass(frozen=True)
class Recall:
    """Greedy answers scored against the gold answers."""

    exact_match: float
    rouge_l: float
    answers: list[str]


def max_new_tokens_for(lm: LanguageModel, examples: Sequence[Example], slack: int = 4) -> int:
    """Enough new tokens for the longest gold answer plus a little: longer answers cannot raise
    ROUGE-L recall, and generation is the slowest part of the behaviour metrics."""
    longest = max(len(lm.tokenizer(" " + e.answer, add_special_tokens=False)["input_ids"]) for e in examples)
    return longest + slack


def recall(lm: LanguageModel, examples: Sequence[Example], max_new_tokens: int | None = None) -> Recall:
    """Exact match and ROUGE-L recall of the served greedy answers (TOFU's ROUGE, arXiv 2401.06121)."""
    if not examples:
        return Recall(math.nan, math.nan, [])
    budget = max_new_tokens or max_new_tokens_for(lm, examples)
    answers = lm.generate_answers([e.question for e in examples], max_new_tokens=budget)
    return Recall(
        exact_match=mean([exact_match(e.answer, a) for e, a in zip(examples, answers, strict=True)]),
        rouge_l=mean([rouge_l_recall(e.answer, a) for e, a in zip(examples, answers, strict=True)]),
        answers=answers,
    )


def mean_logprobs(lm: LanguageModel, examples: Sequence[Example]) -> list[float]:
    """Per-example mean answer-token log-probability, as served."""
    return [float(lp.mean()) if lp.numel() else math.nan for lp in lm.answer_logprobs(examples)]


def answer_probability(lm: LanguageModel, examples: Sequence[Example]) -> float:
    """Mean over examples of ``P(a|q)^{1/|a|}`` (TOFU's length-normalised probability)."""
    return mean([math.exp(v) for v in mean_logprobs(lm, examples)])


def truth_ratios(lm: LanguageModel, examples: Sequence[Example]) -> list[float]:
    """Per-question truth ratio ``R = P_wrong / P_correct`` (TOFU, arXiv 2401.06121, Sec. 2.2.2).

    Examples without ``extras["perturbed"]`` are skipped. One batched scoring pass covers the
    correct and all perturbed answers.
    """
    usable = [e for e in examples if e.is_qa and e.extras.get("perturbed")]
    if not usable:
        return []
    batch: list[Example] = []
    for e in usable:
        batch.append(e)
        batch += [e.with_answer(w) for w in e.extras["perturbed"]]
    scores = mean_logprobs(lm, batch)
    ratios, cursor = [], 0
    for e in usable:
        correct = math.exp(scores[cursor])
        wrong_logs = scores[cursor + 1: cursor + 1 + len(e.extras["perturbed"])]
        wrong = math.exp(sum(wrong_logs) / len(wrong_logs))  # geometric mean, as open-unlearning
        ratios.append(wrong / (correct + TR_EPSILON))
        cursor += 1 + len(e.extras["perturbed"])
    return ratios


def forget_truth_score(ratios: Sequence[float]) -> float:
    """TOFU's forget aggregate ``mean(min(R, 1/R))``: 1 when true and false look alike."""
    return mean([min(r, 1.0 / r) if r > 0 else 0.0 for r in ratios])


def retain_truth_score(ratios: Sequence[float]) -> float:
    """TOFU's retain aggregate ``mean(max(0, 1 - R))``: 1 when the truth is clearly preferred."""
    return mean([max(0.0, 1.0 - r) for r in ratios])


def perplexity(lm: LanguageModel, examples: Sequence[Example]) -> float:
    """Token-level perplexity of the answers (or texts), as served: ``exp(total NLL / tokens)``."""
    total, count = 0.0, 0
    for lp in lm.answer_logprobs(examples):
        total -= float(lp.sum())
        count += lp.numel()
    return math.exp(total / count) if count else math.nan


def model_utility(retain_rouge: float, retain_probability: float, retain_truth: float) -> float:
    """Harmonic mean of the three retain figures (TOFU's model utility, restricted to retain)."""
    parts = [retain_rouge, retain_probability, retain_truth]
    if any(math.isnan(p) for p in parts):
        parts = [p for p in parts if not math.isnan(p)]
    return harmonic_mean(parts) if parts else math.nan
