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
