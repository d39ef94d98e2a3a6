"""accelerate's FSDP2 path, on two CPU processes: the steps of one process, and one plain checkpoint.

``fsdp_on_cpu.py`` switches accelerate to FSDP2 on gloo processes (accelerate itself only does so
on GPUs), so what runs is the engine's real sharded path: accelerate's ``fully_shard`` wrapping,
the optimizer over sharded parameters, gradient clipping over them, the sharded frozen reference,
the early-stopping forward, the evaluation afterwards and the weights gathered once for saving.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from processes import run_ok, saved_weights, sigterm_then_resume, torchrun

# The launcher and the shipped config it applies: the test runs the settings users get.
LAUNCHER = [str(Path(__file__).with_name("fsdp_on_cpu.py")),
            str(Path(__file__).parents[2] / "configs" / "accelerate" / "fsdp.yaml")]
STEPS = ["--steps", "3", "--set", "grad_accum=1"]


def _single_and_sharded(tmp_path: Path, port: int, args: list[str]) -> tuple[Path, Path]:
    """The same run in one process (batch 8) and in two FSDP processes (4 each)."""
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    run_ok([sys.executable, "-m", "unlearn_kb", *args, *STEPS, "--set", "batch_size=8", "--out", str(single)])
    run_ok(torchrun(port, *LAUNCHER, *args, *STEPS, "--set", "batch_size=4", "--out", str(sharded)))
    return single, sharded


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_fsdp_takes_the_steps_of_one_process_and_saves_one_plain_checkpoint(toy_world, tmp_path):
    # NPO without its retain term: a mean over sequences, so the shards' mean is the batch's mean.
    single, sharded = _single_and_sharded(tmp_path, 29531, ["run", "npo", "--set", "alpha=0", "--set", "lr=1e-3"])
    for one, two in zip(_log(single), _log(sharded), strict=True):
        assert one["tokens"] == two["tokens"]
        assert abs(one["loss"] - two["loss"]) <= 1e-5 * abs(one["loss"]), (one, two)
        assert abs(one["grad_norm"] - two["grad_norm"]) <= 1e-4 * one["grad_norm"], (one, two)
    whole, gathered = saved_weights(single), saved_weights(sharded)
    assert sorted(whole) == sorted(gathered)  # one ordinary checkpoint, not shards
    assert max(float((whole[k] - gathered[k]).abs().max()) for k in whole) < 1e-5
    manifest = json.loads((sharded / "manifest.json").read_text())
    assert manifest["device"]["processes"] == 2 and manifest["device"]["parallelism"] == "FSDP2"
    assert json.loads((single / "manifest.json").read_text())["device"]["parallelism"] == "none"
    assert manifest["recall"]["after"]["forget"] == json.loads((single / "manifest.json").read_text())[
        "recall"]["after"]["forget"]  # the sharded model was evaluated after training, as the whole one


def _moved_apart(single: Path, sharded: Path, original: Path, name: str = "model.safetensors") -> float:
    """How far the two runs' weights are apart, relative to how far training moved them."""
    start, one, two = saved_weights(original, name), saved_weights(single, name), saved_weights(sharded, name)
    gap = sum(float((one[k] - two[k]).float().norm() ** 2) for k in one) ** 0.5
    moved = sum(float((one[k] - start[k]).float().norm() ** 2) for k in one) ** 0.5
    assert moved > 0, "training changed nothing"
    return gap / moved


@pytest.mark.slow
def test_fsdp_rmu_with_a_sharded_frozen_reference_matches_one_process(toy_world, tmp_path):
    single, sharded = _single_and_sharded(tmp_path, 29533, ["run", "rmu"])
    assert json.loads((sharded / "manifest.json").read_text())["reference"] == "sharded"
    # RMU's losses are means over each process's tokens: close, not equal, to the batch's mean.
    assert _moved_apart(single, sharded, toy_world.original_path) < 1e-3  # measured 1.5e-6


@pytest.mark.slow
def test_fsdp_lora_run_merges_the_gathered_adapter_into_a_plain_checkpoint(toy_world, tmp_path):
    single, sharded = _single_and_sharded(
        tmp_path, 29535, ["run", "ga_kl", "--lora", "r=4,alpha=8", "--set", "lr=1e-3"])
    gathered = saved_weights(sharded)
    assert not any("lora" in key for key in gathered)
    assert sorted(gathered) == sorted(saved_weights(single))
    assert _moved_apart(single, sharded, toy_world.original_path) < 5e-3  # measured 3e-4


@pytest.mark.slow
def test_an_fsdp_run_interrupted_by_sigterm_resumes_to_the_samesaved_weights(tiny_model_dir, tmp_path):
    """The checkpoint of a sharded run is gathered whole (weights and AdamW state) by every process
    together, and a resumed sharded run puts each shard back: it ends bit-identical."""
    def whole_tensors(checkpoint: Path) -> None:
        saved, model = saved_weights(checkpoint, "trained.safetensors"), saved_weights(tiny_model_dir)
        assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in model.items()}, \
            "the checkpoint holds whole tensors, not shards"

    whole, cut = sigterm_then_resume(LAUNCHER, tiny_model_dir, tmp_path, (29537, 29538, 29539), whole_tensors)
    expected, got = saved_weights(whole), saved_weights(cut)
    assert all(torch.equal(expected[k], got[k]) for k in expected), "resumed weights differ"
