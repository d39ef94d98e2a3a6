"""Two CPU processes (gloo) take the same steps as one process with the same global batch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from processes import run_ok, run_to_end, saved_weights, sigterm_then_resume, tiny_data_files, torchrun

# NPO without its retain term: the loss is a mean over sequences, so the mean of two shards of
# equal size is exactly the mean of the whole batch; what remains is float summation order.
TOLERANCE = 1e-4
ARGS = ["run", "npo", "--steps", "4", "--set", "alpha=0", "--set", "grad_accum=1", "--set", "lr=1e-3"]


def _run(tmp_path: Path, name: str, launcher: list[str], batch_size: int) -> list[dict]:
    out = tmp_path / name
    done = run_ok([*launcher, "-m", "unlearn_kb", *ARGS, "--set", f"batch_size={batch_size}", "--out", str(out)],
                  timeout=900)
    assert done.stdout.count("exact-match recall before and after") == 1  # the main process reports
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(toy_world, tmp_path):
    single = _run(tmp_path, "single", [sys.executable], batch_size=16)
    double = _run(tmp_path, "double", torchrun(29517), batch_size=8)
    assert len(single) == len(double) == 4
    for one, two in zip(single, double, strict=True):
        assert one["tokens"] == two["tokens"]  # the same examples went into each step
        assert abs(one["loss"] - two["loss"]) <= TOLERANCE * max(1.0, abs(one["loss"])), (one, two)
    # The checkpoint written by rank 0 loads as an ordinary transformers model.
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "double")
    manifest = json.loads((tmp_path / "double" / "manifest.json").read_text())
    assert manifest["device"]["processes"] == 2 and manifest["device"]["parallelism"] == "DDP" and model.config.num_hidden_layers == toy_world.config.n_layers


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
report = f"{float((logits - whole).abs().max())} {float((hidden - expected_hidden).abs().max())} {held} {total}"
open(f"{sys.argv[2]}/rank{dist.get_rank()}.txt", "w").write(report)  # one file per rank: prints interleave
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_a_sharded_frozen_reference_gives_the_full_models_outputs_and_holds_a_share(tiny_model_dir, tmp_path):
    """FSDP2 on two gloo processes: what a GPU FSDP run uses for GA+KL's, UNDIAL's and RMU's reference."""
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED_REFERENCE)
    run_ok(torchrun(29519, str(script), str(tiny_model_dir), str(tmp_path)), timeout=300)
    rows = [(tmp_path / f"rank{rank}.txt").read_text().split() for rank in (0, 1)]
    assert len(rows) == 2  # one per process
    for logits_gap, hidden_gap, held, total in rows:
        assert float(logits_gap) < 1e-5 and float(hidden_gap) < 1e-5
        assert int(held) < 0.75 * int(total), "each process holds only a share of the weights"


@pytest.mark.slow
def test_two_processes_interrupted_by_sigterm_resume_to_the_same_weights(tiny_model_dir, tmp_path):
    """A pre-empted multi-process job: torchrun forwards SIGTERM, the ranks agree to stop after the
    same step, rank 0 saves the checkpoint, and a resumed two-process run ends bit-identical."""
    whole, cut = sigterm_then_resume(["-m", "unlearn_kb"], tiny_model_dir, tmp_path, (29521, 29522, 29523))
    expected, got = saved_weights(whole), saved_weights(cut)
    assert all(torch.equal(expected[k], got[k]) for k in expected), "resumed weights differ"


GATHERED_SAVE = """
import sys, torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from unlearn_kb.engine.method import decoder_layers
from unlearn_kb.engine.models import load_model
from unlearn_kb.engine.trainer import full_state_dict

dist.init_process_group("gloo")
model, tokenizer = load_model(sys.argv[1])
whole = {k: v.clone() for k, v in model.state_dict().items()}
for layer in decoder_layers(model):
    fully_shard(layer)
fully_shard(model)
state = full_state_dict(model)
if dist.get_rank() == 0:
    same = state.keys() == whole.keys() and all(torch.equal(state[k], whole[k]) for k in whole)
    model.save_pretrained(sys.argv[2], state_dict=state)
open(f"{sys.argv[2]}.rank{dist.get_rank()}.txt", "w").write(  # one file per rank: prints interleave
    f"{same} {len(state)}" if dist.get_rank() == 0 else f"{len(state)}")
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_a_sharded_model_is_gathered_once_on_rank_0_and_saves_as_a_plain_checkpoint(tiny_model_dir, tmp_path):
    """What an FSDP run saves: every shard gathered on rank 0, one ordinary safetensors model."""
    from transformers import AutoModelForCausalLM

    script = tmp_path / "gather.py"
    script.write_text(GATHERED_SAVE)
    run_ok(torchrun(29524, str(script), str(tiny_model_dir), str(tmp_path / "saved")), timeout=300)
    rank0, rank1 = ((tmp_path / f"saved.rank{rank}.txt").read_text() for rank in (0, 1))
    assert rank0.startswith("True ") and rank1 == "0", (rank0, rank1)  # gathered whole on rank 0 only
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), original.state_dict().values(),
                                                 strict=True))


ONE_RANK_DIVERGES = """
import os, sys
import torch
import unlearn_kb.methods.npo as npo

real, calls = npo.npo_loss, {"n": 0}

def poisoned(*args, **kwargs):  # NaN on the second process only, at step 4 (two micro-batches a step)
    calls["n"] += 1
    value = real(*args, **kwargs)
    return value * float("nan") if calls["n"] == 7 and os.environ["RANK"] == "1" else value

npo.npo_loss = poisoned
from unlearn_kb.cli import main
sys.argv = ["unlearn-kb", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_a_divergence_on_one_process_stops_every_process_with_the_last_good_state(tiny_model_dir, tmp_path):
    """A non-finite loss on one rank only: the ranks agree (the check reads the all-reduced terms),
    so none waits forever in a collective, and the state after the last good step is saved."""
    from unlearn_kb.engine.checkpoint import load_checkpoint

    forget, retain = tiny_data_files(tmp_path)
    script = tmp_path / "diverge.py"
    script.write_text(ONE_RANK_DIVERGES)
    done = run_to_end(
        torchrun(29526, str(script), "run", "npo", "--model", str(tiny_model_dir), "--forget",
                 str(forget), "--retain", str(retain), "--steps", "10",
                 "--set", "batch_size=1", "--set", "grad_accum=2", "--out", str(tmp_path / "run")),
        timeout=300)
    assert done.returncode != 0 and "step 4: loss term 'forget' is nan" in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "run").exists()
    state = load_checkpoint(tmp_path / "run.checkpoint")
    assert state.step == 3 and all(torch.isfinite(t).all() for t in state.trained.values())


@pytest.mark.slow
def test_ddp_with_a_sharded_reference_takes_the_same_steps_as_with_a_copy_per_process(toy_world, tmp_path):
    """--set shard_reference=true under DDP: each process holds a share of GA+KL's frozen reference
    (FSDP2, see the test above) instead of a whole copy, and the steps do not change."""
    args = ["run", "ga_kl", "--steps", "3", "--set", "batch_size=4", "--set", "grad_accum=1", "--set", "lr=1e-3"]
    for port, flag in ((29527, "false"), (29528, "true")):
        run_ok(torchrun(port, "-m", "unlearn_kb", *args, "--set", f"shard_reference={flag}",
                        "--out", str(tmp_path / flag)))
    manifests = {flag: json.loads((tmp_path / flag / "manifest.json").read_text()) for flag in ("false", "true")}
    assert manifests["false"]["reference"] == "live" and manifests["true"]["reference"] == "sharded"
    assert manifests["true"]["device"]["parallelism"] == "DDP"
    copy, sharded = (saved_weights(tmp_path / flag) for flag in ("false", "true"))
    assert max(float((copy[k] - sharded[k]).abs().max()) for k in copy) < 1e-6  # measured 0.0


@pytest.mark.slow
def test_processes_option_runs_the_command_on_two_processes(toy_world, tmp_path):
    """``unlearn-kb run ... --processes 2`` hands itself over to torchrun: a two-process DDP run."""
    out = tmp_path / "run"
    done = run_ok([sys.executable, "-m", "unlearn_kb", "run", "npo", "--steps", "2", "--set", "batch_size=4",
                   "--processes", "2", "--out", str(out)])
    assert done.stdout.count("exact-match recall before and after") == 1
    device = json.loads((out / "manifest.json").read_text())["device"]
    assert device["processes"] == 2 and device["parallelism"] == "DDP"


@pytest.mark.slow
def test_a_mistake_in_a_multi_process_run_is_one_line_and_exit_code_2(toy_world):
    done = run_to_end([sys.executable, "-m", "unlearn_kb", "run", "npo", "--set", "lr=abc", "--processes", "2"],
                      timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-3000:]
    assert lines == ["error: setting 'lr' expects a number, got 'abc'"], lines  # not once per process
