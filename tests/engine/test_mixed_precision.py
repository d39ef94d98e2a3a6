"""Every gradient method also trains under bf16 autocast, as it does on a GPU by default.

On the CPU the engine trains in float32 unless ``--set mixed_precision=bf16``. GPU runs use bf16
autocast; running each objective under it here catches dtype mistakes (a bf16 tensor meeting a
float32 one, a reduction that overflows) that float32 tests cannot see.
"""

from __future__ import annotations

import math

import pytest
import torch

from unlearn_kb.engine.method import GradientMethod, LMForward
from unlearn_kb.engine.run import resolve_method, run_method
from unlearn_kb.registry import load_registry


def _gradient_methods() -> list[str]:
    registry = load_registry()
    return sorted(m.id for m in registry.implemented()
                  if issubclass(resolve_method(m.id, registry)[1], GradientMethod))


@pytest.mark.slow
@pytest.mark.parametrize("method_id", _gradient_methods())
def test_a_gradient_method_trains_under_bf16_autocast(toy_world, method_id, monkeypatch):
    autocast: list[tuple[bool, torch.dtype]] = []
    forward = LMForward.forward

    def spy(self, *args, **kwargs):
        if torch.is_grad_enabled():  # the trained model's forwards, not the reference's
            autocast.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LMForward, "forward", spy)
    torch.manual_seed(0)
    result = run_method(method_id, world=toy_world, steps=2, eval_limit=8,
                        overrides={"mixed_precision": "bf16"})
    assert autocast and set(autocast) == {(True, torch.bfloat16)}, f"bf16 autocast did not engage: {set(autocast)}"
    assert len(result.records) == 2
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in result.records)
    assert all(p.dtype == torch.float32 for p in result.model.parameters()), "the weights stay float32"


def test_the_manifest_records_the_precision_the_run_used(toy_world, tmp_path):
    import json

    run_method("ga", world=toy_world, steps=1, eval_limit=4, overrides={"mixed_precision": "bf16"},
               out=tmp_path / "run")
    device = json.loads((tmp_path / "run" / "manifest.json").read_text())["device"]
    assert device["mixed_precision"] == "bf16"  # asked for on the CPU, where "auto" means none
