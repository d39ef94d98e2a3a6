"""The yardstick on subjects whose verdict is known: it must be able to fail.

The reference never saw the forget set (removal-like by construction), the original never
forgot it (ineffective), and an output guardrail blocks the answers while the weights still hold
everything (suppression-like: the white-box probes must find it). Each is also judged without the
reference, through the holdout stand-in that real models get, and the two verdicts must agree.
"""

from __future__ import annotations

import json

import pytest

from unlearn_kb.schema import Verdict

pytestmark = pytest.mark.slow

EVAL_BUDGET_SECONDS = 120  # the bound for evaluating one run on the toy world, on 2 CPU cores


@pytest.fixture(scope="module")
def cache():
    from unlearn_kb.evaluation.suite import MeasurementCache

    # a fresh in-memory cache: the first report pays for measuring all three models, honestly timed
    return MeasurementCache()


@pytest.fixture(scope="module")
def calibration(toy_world, cache):
    from unlearn_kb.evaluation.bench import calibration_reports

    return calibration_reports(toy_world, cache=cache)


def test_reference_model_scores_removal_like(calibration):
    report = calibration["reference"]
    assert report.verdict is Verdict.removal_like, report.decided_by
    assert all(c.passed for c in report.checks)


def test_original_model_scores_ineffective(calibration):
    report = calibration["original"]
    assert report.verdict is Verdict.ineffective, report.decided_by
    assert report.decided_by.startswith("forget recall")


def test_output_guardrail_scores_suppression_like_because_every_probe_recovers_the_facts(calibration):
    report = calibration["output guardrail"]
    assert report.verdict is Verdict.suppression_like, report.decided_by
    behaviour = [c for c in report.checks if c.kind == "behaviour"]
    knowledge = [c for c in report.checks if c.kind == "knowledge"]
    assert behaviour and all(c.passed for c in behaviour)
    assert len(knowledge) >= 5 and not any(c.passed for c in knowledge), [c.to_dict() for c in knowledge]


@pytest.mark.parametrize("subject", ["reference", "original", "output guardrail"])
def test_holdout_based_verdict_agrees_with_the_reference_based_one(calibration, subject):
    report = calibration[subject]
    assert report.holdout_verdict is report.verdict, report.holdout_decided_by


def test_reference_membership_auc_is_near_chance_since_neither_set_was_trained(calibration):
    auc = calibration["reference"].figures["mia.min_k_plus_plus"]["model"]
    assert 0.35 < auc < 0.65


def test_evaluating_one_model_on_the_toy_world_fits_the_time_budget(calibration):
    # the reference was evaluated first, with a cold cache: it measured all three models
    first = calibration["reference"]
    assert first.timings["total"]["wall"] < EVAL_BUDGET_SECONDS, first.timings
    # later subjects reuse the cached original and reference measurements
    assert calibration["output guardrail"].timings["total"]["wall"] < EVAL_BUDGET_SECONDS / 2


def test_a_model_without_white_box_access_gets_no_verdict_and_says_why(toy_world, calibration, cache):
    from unlearn_kb.evaluation import EvalData, evaluate
    from unlearn_kb.evaluation.calibration import OutputGuardrail
    from unlearn_kb.evaluation.runs import toy_config

    class ApiOnly(OutputGuardrail):
        @property
        def white_box(self) -> bool:
            return False

    data = EvalData.from_world(toy_world)
    original = toy_world.load("original")
    api = ApiOnly.over(original, {e.extras["entity"] for e in data.forget})
    report = evaluate(api, data, original=original, reference=toy_world.load("reference"),
                      config=toy_config(None), cache=cache)
    assert report.verdict is None and "white-box" in report.decided_by
    assert any("white-box" in reason for reason in report.skipped.values())


def test_report_files_are_written_and_json_is_strict(calibration, tmp_path):
    from unlearn_kb.evaluation.report import write

    written = write(calibration["output guardrail"], tmp_path)
    assert (tmp_path / "report.md").read_text().count("suppression-like") >= 1
    def reject(constant: str) -> None:
        raise AssertionError(f"report.json holds {constant}, which strict JSON parsers refuse")

    data = json.loads((tmp_path / "report.json").read_text(), parse_constant=reject)
    assert data["verdict"] == "suppression-like" and data["figures"]["forget.rouge_l"]["original"] > 0.9
    assert any(p.suffix in (".png", ".svg") for p in written)
