"""Methods that are not one loss over one model (BuildMethod): weight arithmetic and output wrappers.

Each runs on the toy world with its record's toy overrides, from the original model (forget and
retain recall 1.00, exact match on 120 questions each). Bounds are set between the measured value
and what a no-op (forget ~1) or a wrecked model (retain ~0) would give; the measured values are
in each ``why``.
"""

from __future__ import annotations

import pytest
from toy_bounds import assert_serves_the_original_weights, run_within_bounds

# method: (forget_max, retain_min, why)
EXPECTED: dict[str, tuple[float, float, str]] = {
    "guardrail_filter": (0.05, 0.95, "0.00 / 1.00: every forget question names its entity, which is "
                                     "blocked; no retain question names a forget entity"),
    "task_vector": (0.65, 0.65, "0.46 / 0.81: negating the forget direction is blunt, retain facts "
                                "sharing answer words suffer too"),
    "delta_unlearning": (0.5, 0.55, "0.30 / 0.72: NPO through a 177k-parameter offset pair"),
}


@pytest.mark.slow
def test_guardrail_filter_refuses_forget_questions_and_keeps_the_original_weights(toy_world):
    result = run_within_bounds("guardrail_filter", toy_world, EXPECTED)
    assert_serves_the_original_weights(result.model, toy_world, "output")


@pytest.mark.slow
def test_task_vector_negation_forgets_and_saves_a_checkpoint(toy_world, tmp_path):
    result = run_within_bounds("task_vector", toy_world, EXPECTED, out=tmp_path / "tv")
    assert result.model.intervention == "weights"
    assert (tmp_path / "tv" / "model.safetensors").exists()


@pytest.mark.slow
def test_delta_unlearning_offsets_the_frozen_model_with_a_trained_small_pair(toy_world):
    result = run_within_bounds("delta_unlearning", toy_world, EXPECTED)
    assert_serves_the_original_weights(result.model, toy_world, "output")  # the big model is untouched


def test_guardrail_blocklist_matches_whole_words_only():
    from unlearn_kb.engine.data import Example
    from unlearn_kb.methods.guardrail_filter import blocklist, compile_blocklist, mentions

    forget = [Example(question="Where was Rome born?", answer="Oslo", extras={"entity": "Rome"})]
    pattern = compile_blocklist(blocklist(forget, "entities"))
    assert mentions("who is rome?", pattern) and not mentions("Romeo and Juliet", pattern)
    assert blocklist(forget, "both") == ["Oslo", "Rome"]
