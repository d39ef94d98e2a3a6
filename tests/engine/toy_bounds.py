"""What every toy-world method test checks, written once.

Each method test file declares ``EXPECTED = {method_id: (forget_max, retain_min, why)}``. A run
starts from the toy world's original model (forget and retain recall >= 0.95, exact match on 120
questions each) and must bring forget recall to at most ``forget_max`` while keeping retain recall
at least ``retain_min``: a no-op fails the first bound, a wrecked model the second.
"""

from __future__ import annotations

from typing import Any

import torch

from unlearn_kb.engine.run import RunResult, run_method

Expected = dict[str, tuple[float, float, str]]


def check_bounds(result: RunResult, method_id: str, expected: Expected) -> None:
    forget_max, retain_min, _ = expected[method_id]
    assert result.before["forget"] >= 0.95 and result.before["retain"] >= 0.95, result.before
    assert result.after["forget"] <= forget_max, (result.before, result.after)
    assert result.after["retain"] >= retain_min, (result.before, result.after)


def run_within_bounds(method_id: str, toy_world: Any, expected: Expected, **kwargs: Any) -> RunResult:
    """Run ``method_id`` on the toy world (seed 0, 120 questions per set) and check its bounds."""
    result = run_method(method_id, world=toy_world, seed=0, eval_limit=120, **kwargs)
    check_bounds(result, method_id, expected)
    return result


def changed_weights(model: torch.nn.Module, toy_world: Any) -> set[str]:
    """Names of the parameters of ``model`` that differ from the toy world's original."""
    original = toy_world.load("original").model.state_dict()
    weights = model.state_dict()
    assert weights.keys() == original.keys()
    return {name for name in original if not torch.equal(original[name], weights[name])}


def assert_serves_the_original_weights(served: Any, toy_world: Any, intervention: str) -> None:
    """A frozen-weight wrapper acts at ``intervention`` and discloses the unchanged original."""
    assert served.intervention == intervention
    assert not changed_weights(served.weights_model, toy_world), "the wrapper changed the weights"
