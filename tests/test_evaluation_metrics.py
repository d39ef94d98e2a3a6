"""Every metric of the evaluation on a case whose answer is known in advance."""

from __future__ import annotations

import itertools
import math
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearn_kb.engine.data import Example
from unlearn_kb.evaluation import behaviour as bh
from unlearn_kb.evaluation import verdict as vd
from unlearn_kb.evaluation.measure import parse_probes
from unlearn_kb.evaluation.relearn import split_by_entity
from unlearn_kb.evaluation.stats import harmonic_mean, ks_pvalue, mann_whitney_auc
from unlearn_kb.evaluation.text import exact_match, lcs_length, rouge_l_recall, words
from unlearn_kb.schema import Verdict

# --------------------------------------------------------------------------- ROUGE-L


def _brute_lcs(a: list[str], b: list[str]) -> int:
    """Longest common subsequence by trying every subsequence of ``a`` (tiny inputs only)."""
    best = 0
    for r in range(len(a) + 1):
        for picked in itertools.combinations(a, r):
            it = iter(b)
            if all(any(x == y for y in it) for x in picked):
                best = max(best, r)
    return best


def test_rouge_l_recall_matches_a_hand_computed_lcs():
    # reference "the cat sat on the mat" (6 words); candidate shares "the cat on the mat" in order: LCS 5
    assert lcs_length(words("the cat sat on the mat"), words("the cat was on the red mat")) == 5
    assert rouge_l_recall("the cat sat on the mat", "the cat was on the red mat") == pytest.approx(5 / 6)
    # order matters: "mat the" shares only one word in order with "the mat"
    assert rouge_l_recall("the mat", "mat the") == pytest.approx(1 / 2)


def test_rouge_l_normalises_case_and_punctuation_like_rouge_score():
    assert words("Paris, France!") == ["paris", "france"]
    assert rouge_l_recall("Paris", "paris.") == 1.0
    assert rouge_l_recall("Paris", "I do not know") == 0.0
    assert rouge_l_recall("", "anything") == 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abcd"), max_size=7), st.lists(st.sampled_from("abcd"), max_size=7))
def test_lcs_equals_brute_force(a, b):
    assert lcs_length(a, b) == _brute_lcs(a, b)


def test_exact_match_ignores_case_and_punctuation_but_not_extra_words():
    assert exact_match("Oslo", "oslo.") == 1.0
    assert exact_match("Oslo", "Oslo Norway") == 0.0


# --------------------------------------------------------------------------- AUC, KS, means


def _brute_auc(pos: list[float], neg: list[float]) -> float:
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=12), st.lists(st.integers(0, 5), min_size=1, max_size=12))
def test_auc_equals_brute_force_pair_count_with_ties(pos, neg):
    assert mann_whitney_auc(pos, neg) == pytest.approx(_brute_auc(pos, neg))


def test_auc_is_one_for_separated_scores_and_half_for_identical_ones():
    assert mann_whitney_auc([3, 4, 5], [0, 1, 2]) == 1.0
    assert mann_whitney_auc([0, 1], [2, 3]) == 0.0
    assert mann_whitney_auc([1, 1, 1], [1, 1]) == 0.5
    with pytest.raises(ValueError):
        mann_whitney_auc([], [1.0])


def test_ks_pvalue_is_the_exact_two_sided_value_for_fully_separated_samples():
    # D = 1 for [1,2,3] vs [4,5,6]; exact two-sided p = 2 / C(6, 3) = 0.1
    assert ks_pvalue([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)
    assert ks_pvalue([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)


def test_ks_pvalue_agrees_with_scipy():
    from scipy.stats import ks_2samp

    a, b = [0.1, 0.5, 0.7, 0.9, 1.3], [0.2, 0.4, 1.5, 1.6, 2.0, 2.2]
    assert ks_pvalue(a, b) == pytest.approx(ks_2samp(a, b).pvalue)


def test_harmonic_mean_is_zero_when_any_part_is_zero():
    assert harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    assert harmonic_mean([1.0, 0.0]) == 0.0


# --------------------------------------------------------------------------- truth ratio


def test_truth_ratio_aggregates_follow_tofu():
    # R = 1: true and false alike (a model that never saw the fact); R = 0.25: the truth preferred 4:1
    assert bh.forget_truth_score([1.0, 1.0]) == 1.0
    assert bh.forget_truth_score([0.25, 4.0]) == pytest.approx(0.25)  # min(R, 1/R) is symmetric
    assert bh.retain_truth_score([0.25, 2.0]) == pytest.approx((0.75 + 0.0) / 2)


# --------------------------------------------------------------------------- relearning split


def test_relearning_halves_share_no_entity_and_cover_everything():
    examples = [Example(question=f"q{e}{a}", answer="x", extras={"entity": f"E{e}", "attribute": a})
                for e in range(9) for a in "abc"]
    first, second = split_by_entity(examples, seed=3)
    assert {x.extras["entity"] for x in first}.isdisjoint({x.extras["entity"] for x in second})
    assert len(first) + len(second) == len(examples)
    assert split_by_entity(examples, seed=3) == (first, second)


# --------------------------------------------------------------------------- verdict rule


def _check(name: str, kind: str, model: float, base: float, tol: float = 0.1) -> vd.Check:
    return vd.Check(name=name, kind=kind, figure=name, model=model, baseline=base, tolerance=tol,
                    baseline_label="reference")


def _decide(checks, retain=0.9, nll=0.1):
    return vd.decide(checks, retain_model=retain, retain_original=0.9, nll_model=nll, nll_original=0.1)


def test_verdict_removal_when_behaviour_and_every_probe_are_at_the_reference():
    checks = [_check("recall", "behaviour", 0.05, 0.06), _check("relearning", "knowledge", 0.1, 0.08)]
    assert _decide(checks).verdict is Verdict.removal_like


def test_verdict_suppression_names_the_probe_furthest_past_its_tolerance():
    checks = [_check("recall", "behaviour", 0.05, 0.06), _check("relearning", "knowledge", 0.3, 0.08),
              _check("linear probe", "knowledge", 0.9, 0.1)]
    decision = _decide(checks)
    assert decision.verdict is Verdict.suppression_like
    assert decision.decided_by.startswith("linear probe")


def test_verdict_ineffective_when_the_fact_is_still_said_whatever_the_probes():
    checks = [_check("recall", "behaviour", 0.9, 0.06), _check("relearning", "knowledge", 0.9, 0.1)]
    assert _decide(checks).verdict is Verdict.ineffective


def test_verdict_destructive_takes_precedence_on_collapsed_utility_or_fluency():
    checks = [_check("recall", "behaviour", 0.0, 0.06)]
    assert _decide(checks, retain=0.3).verdict is Verdict.destructive
    assert _decide(checks, nll=2.0).verdict is Verdict.destructive


def test_verdict_is_open_without_any_knowledge_probe():
    assert _decide([_check("recall", "behaviour", 0.0, 0.06)]).verdict is None


def test_tolerance_never_falls_below_the_sampling_noise():
    se = vd.proportion_se(0.5, 10, 0.5, 10)
    assert vd.tolerance(0.1, se) == pytest.approx(vd.NOISE_Z * math.sqrt(0.05))
    assert vd.tolerance(0.1, 0.0) == 0.1
    assert vd.auc_se(0.5, 100, 100) < vd.auc_se(0.5, 10, 10)


def test_probe_selection_accepts_groups_and_rejects_unknown_names():
    from unlearn_kb.errors import UserError

    assert parse_probes("all")[0] == "behaviour"
    assert parse_probes("knowledge") == ("relearn", "probe", "lens", "quant", "mia")
    assert parse_probes("mia,behaviour") == ("behaviour", "mia")
    with pytest.raises(UserError):
        parse_probes("jailbreak")


def test_zlib_score_divides_the_loss_by_the_compressed_length():
    import torch

    from unlearn_kb.evaluation.mia import TokenStats, score

    stats = TokenStats(logp=torch.tensor([-1.0, -3.0]), mu=torch.tensor([-2.0, -2.0]), sigma=torch.tensor([1.0, 0.5]))
    assert score(stats, "abc", "loss") == pytest.approx(-2.0)
    assert score(stats, "abc", "zlib") == pytest.approx(-2.0 / len(zlib.compress(b"abc")))
    assert score(stats, "abc", "min_k") == pytest.approx(-3.0)  # max(1, int(0.4 * 2)) = 1 lowest token
    # z = [(-1 + 2) / 1, (-3 + 2) / 0.5] = [1, -2]; the lowest one is -2
    assert score(stats, "abc", "min_k_plus_plus") == pytest.approx(-2.0)


# --------------------------------------------------------------------------- sequential requests


def test_sequential_requests_partition_the_forget_entities_and_accumulate():
    from unlearn_kb.evaluation.measure import EvalData
    from unlearn_kb.evaluation.sequential import data_after, split_requests

    forget = [Example(question=f"q{e}{a}", answer="x", extras={"entity": f"E{e}"}) for e in range(7) for a in "ab"]
    requests = split_requests(forget, 3)
    entity_sets = [{x.extras["entity"] for x in r} for r in requests]
    assert sum(len(s) for s in entity_sets) == 7 and set.union(*entity_sets) == {f"E{e}" for e in range(7)}
    data = EvalData(forget=forget, retain=[], holdout=[])
    sizes = [len(data_after(data, requests, step).forget) for step in range(3)]
    assert sizes == sorted(sizes) and sizes[-1] == len(forget)


# --------------------------------------------------------------------------- report files


def test_report_renders_markdown_and_plots_without_matplotlib(tmp_path, monkeypatch):
    import xml.dom.minidom

    from unlearn_kb.evaluation import plots
    from unlearn_kb.evaluation.report import to_markdown, write
    from unlearn_kb.evaluation.suite import Report

    monkeypatch.setattr(plots, "has_matplotlib", lambda: False)
    report = Report(
        model="m", mode="reference", verdict=Verdict.suppression_like, decided_by="linear probe",
        checks=[_check("linear probe", "knowledge", 0.9, 0.1)],
        figures={"forget.probability": {"model": 0.1, "reference": 0.2, "original": 0.9}},
        curves={"probe.forget": {"model": [0.1, 0.9], "reference": [0.1, 0.2]}},
    )
    written = write(report, tmp_path)
    assert {p.name for p in written} >= {"report.json", "report.md", "probe_forget.svg", "checks.svg"}
    for svg in tmp_path.glob("*.svg"):
        xml.dom.minidom.parse(str(svg))
    table_row = next(line for line in to_markdown(report).splitlines() if "answer probability" in line)
    assert table_row.count(" | ") == 3  # the '|' inside P(a|q) is escaped, so the row keeps 4 cells


# --------------------------------------------------------------------------- checks: reference vs holdout


def test_checks_compare_with_the_reference_or_else_with_the_models_own_holdout_figures():
    from unlearn_kb.evaluation.measure import EvalConfig, Measurement
    from unlearn_kb.evaluation.suite import CHANCE_AUC, build_checks

    model = Measurement(scalars={"forget.rouge_l": 0.5, "holdout.rouge_l": 0.05, "mia.min_k_plus_plus": 0.9},
                        counts={"forget": 80, "holdout": 80})
    reference = Measurement(scalars={"forget.rouge_l": 0.08, "mia.min_k_plus_plus": 0.55},
                            counts={"forget": 80, "holdout": 80})
    config = EvalConfig()
    by_reference = {c.name: c for c in build_checks(model, reference, config)}
    by_holdout = {c.name: c for c in build_checks(model, None, config)}
    assert by_reference["forget recall (templates)"].baseline == 0.08
    assert by_holdout["forget recall (templates)"].baseline == 0.05
    assert by_holdout["forget recall (templates)"].baseline_label == "holdout"
    mia = "membership inference (min_k_plus_plus)"
    assert by_reference[mia].baseline == 0.55 and by_holdout[mia].baseline == CHANCE_AUC
    assert "relearning" not in by_reference  # a figure that was not measured makes no check
