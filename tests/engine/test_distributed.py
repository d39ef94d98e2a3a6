"""Two CPU processes (gloo) take the same steps as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# NPO without its retain term: the loss is a mean over sequences, so the mean of two shards of
# equal size is exactly the mean of the whole batch; what remains is float summation order.
TOLERANCE = 1e-4
ARGS = ["run", "npo", "--steps", "4", "--set", "alpha=0", "--set", "grad_accum=1", "--set", "lr=1e-3"]


def _run(tmp_path: Path, name: str, launcher: list[str], batch_size: int) -> list[dict]:
    out = tmp_path / name
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    result = subprocess.run([*launcher, "-m", "unlearn_kb", *ARGS, "--set", f"batch_size={batch_size}",
                             "--out", str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(toy_world, tmp_path):
    single = _run(tmp_path, "single", [sys.executable], batch_size=16)
    double = _run(tmp_path, "double", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                       "--master_port", "29517"], batch_size=8)
    assert len(single) == len(double) == 4
    for one, two in zip(single, double, strict=True):
        assert one["tokens"] == two["tokens"]  # the same examples went into each step
        assert abs(one["loss"] - two["loss"]) <= TOLERANCE * max(1.0, abs(one["loss"])), (one, two)
    # The checkpoint written by rank 0 loads as an ordinary transformers model.
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "double")
    manifest = json.loads((tmp_path / "double" / "manifest.json").read_text())
    assert manifest["device"]["processes"] == 2 and model.config.num_hidden_layers == toy_world.config.n_layers


SHARDED_REFERENCE = """
import sys, torch, torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from unlearn_kb.engine.method import LMForward
from unlearn_kb.engine.models import load_model
from unlearn_kb.engine.trainer import frozen_copy, shard_frozen

dist.init_process_group("gloo")
model, _ = load_model(sys.argv[1])
ids = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(dist.get_rank()))
mask = torch.ones_like(ids)
with torch.no_grad():
    whole = LMForward(model.eval())(ids, mask)
sharded = LMForward(shard_frozen(frozen_copy(model), init_device_mesh("cpu", (dist.get_world_size(),))))
with torch.no_grad():
    logits = sharded(ids, mask)
    hidden = sharded(ids, mask, stop_at_layer=1)
    expected_hidden = LMForward(model)(ids, mask, stop_at_layer=1)
held = sum(p.to_local().numel() for p in sharded.lm.parameters() if hasattr(p, "to_local"))
total = sum(p.numel() for p in model.parameters())
print(float((logits - whole).abs().max()), float((hidden - expected_hidden).abs().max()), held, total)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_a_sharded_frozen_reference_gives_the_full_models_outputs_and_holds_a_share(tiny_model_dir, tmp_path):
    """FSDP2 on two gloo processes: what a GPU FSDP run uses for GA+KL's, UNDIAL's and RMU's reference."""
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED_REFERENCE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           "29519", str(script), str(tiny_model_dir)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.strip()]
    assert len(rows) == 2  # one per process
    for logits_gap, hidden_gap, held, total in rows:
        assert float(logits_gap) < 1e-5 and float(hidden_gap) < 1e-5
        assert int(held) < 0.75 * int(total), "each process holds only a share of the weights"
