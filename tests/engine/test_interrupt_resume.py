"""Interrupted runs lose nothing: a signal saves a checkpoint, --resume ends with the same weights,
a divergence keeps the last good state, and a crash while saving leaves nothing that looks complete.

The signal tests run the real CLI in a subprocess and send SIGINT / SIGTERM from this process
while it trains, as a user's Ctrl-C or a cluster's pre-emption would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from processes import environment, interrupt, run_ok, saved_weights, tiny_data_files

from unlearn_kb.engine.checkpoint import load_checkpoint
from unlearn_kb.engine.run import run_method
from unlearn_kb.errors import TrainingError, UserError

STEPS = 300
"""Long enough (about 10 ms a step) that the signal lands mid-run, short enough for CI."""


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    return tiny_data_files(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, data_files, tmp_path_factory) -> Path:
    """The same run, never interrupted: the weights a resumed run must end with."""
    out = tmp_path_factory.mktemp("uninterrupted") / "whole"
    run_ok(_command(tiny_model_dir, data_files, out))
    return out


def _command(model: Path, data: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    forget, retain = data
    return [sys.executable, "-m", "unlearn_kb", "run", "npo", "--model", str(model), "--forget", str(forget),
            "--retain", str(retain), "--out", str(out), "--steps", str(STEPS), "--seed", "3",
            "--set", "batch_size=2", "--set", "grad_accum=2", "--set", "lr=1e-3", *extra]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_checkpoint_and_resume_ends_with_the_samesaved_weights(signum, tiny_model_dir, data_files,
                                                                          uninterrupted, tmp_path):
    out = tmp_path / "interrupted"
    stopped = interrupt(_command(tiny_model_dir, data_files, out), out, signum)
    assert stopped.returncode == 128 + signum, stopped.stderr
    assert "Traceback" not in stopped.stderr
    checkpoint = tmp_path / "interrupted.checkpoint"
    assert f"--resume {checkpoint}" in stopped.stderr
    assert not out.exists(), "an interrupted run must not leave an output that looks complete"
    state = load_checkpoint(checkpoint)
    assert 5 <= state.step < STEPS and len(state.records) == state.step

    run_ok(_command(tiny_model_dir, data_files, out, "--resume", str(checkpoint)))
    expected, resumed = saved_weights(uninterrupted), saved_weights(out)
    assert expected.keys() == resumed.keys()
    different = [name for name in expected if not torch.equal(expected[name], resumed[name])]
    assert not different, f"resumed weights differ from the uninterrupted run's: {different[:3]}"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed_from"]["step"] == state.step
    assert not checkpoint.exists(), "the finished run supersedes its checkpoint"


def test_a_divergence_keeps_the_last_good_state(tiny_model_dir, data_files, tmp_path, monkeypatch):
    import unlearn_kb.methods.npo as npo

    real = npo.npo_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        value = real(*args, **kwargs)
        return value * float("nan") if calls["n"] == 7 else value  # micro-batch 7 = step 4 (2 per step)

    monkeypatch.setattr(npo, "npo_loss", poisoned)
    forget, retain = data_files
    out = tmp_path / "diverged"
    with pytest.raises(TrainingError, match=r"step 4: loss term 'forget' is nan.*state after step 3 is saved"):
        run_method("npo", model=tiny_model_dir, forget=forget, retain=retain, out=out, steps=10,
                   overrides={"batch_size": 2, "grad_accum": 2})
    assert not out.exists()
    state = load_checkpoint(tmp_path / "diverged.checkpoint")
    assert state.step == 3 and all(torch.isfinite(t).all() for t in state.trained.values())

    # The checkpoint continues only its own run: a lower lr is allowed, another seed is not.
    monkeypatch.setattr(npo, "npo_loss", real)
    with pytest.raises(UserError, match=r"belongs to another run \(seed differ"):
        run_method("npo", model=tiny_model_dir, forget=forget, retain=retain, out=out, steps=10, seed=1,
                   overrides={"batch_size": 2, "grad_accum": 2}, resume=tmp_path / "diverged.checkpoint")
    result = run_method("npo", model=tiny_model_dir, forget=forget, retain=retain, out=out, steps=10,
                        overrides={"batch_size": 2, "grad_accum": 2, "lr": 1e-6},
                        resume=tmp_path / "diverged.checkpoint")
    assert [r["step"] for r in result.records] == list(range(1, 11))
    assert json.loads((out / "manifest.json").read_text())["resumed_from"]["changed_settings"] == ["lr"]


def test_periodic_checkpoints_replace_each_other(tiny_model_dir, data_files, tmp_path, monkeypatch):
    from unlearn_kb.engine import checkpoint as checkpoints

    saved_steps = []
    real = checkpoints.save_checkpoint

    def spy(state, folder):
        saved_steps.append(state.step)
        return real(state, folder)

    monkeypatch.setattr("unlearn_kb.engine.trainer.save_checkpoint", spy)
    forget, retain = data_files
    run_method("npo", model=tiny_model_dir, forget=forget, retain=retain, out=tmp_path / "p", steps=7,
               overrides={"batch_size": 2, "grad_accum": 1, "checkpoint_every": 3})
    assert saved_steps == [3, 6]
    assert not (tmp_path / "p.checkpoint").exists(), "removed once the run finished"
    assert not list(tmp_path.glob(".p.checkpoint*")), "no stray partial or old checkpoint folders"


def test_an_incomplete_checkpoint_is_refused(tmp_path):
    folder = tmp_path / "broken.checkpoint"
    folder.mkdir()
    (folder / "trained.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="incomplete checkpoint \\(no manifest.json\\)"):
        load_checkpoint(folder)


KILLED_SAVE = """
import sys, time
from unlearn_kb.engine.models import OutputFolder, load_model
model, tokenizer = load_model(sys.argv[1])
with OutputFolder(sys.argv[2]) as output:
    output.save_model(model, tokenizer)
    print("weights written", flush=True)
    time.sleep(60)  # killed here: everything but the manifest is on disk
    output.write_manifest({"method": "never"})
"""


def test_kill_9_while_saving_leaves_no_output_and_loaders_refuse_the_leftover(tiny_model_dir, tmp_path):
    from unlearn_kb.engine.models import load_model
    from unlearn_kb.evaluation.runs import read_manifest

    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(tiny_model_dir), str(out)],
                               stdout=subprocess.PIPE, text=True, env=environment())
    try:
        assert process.stdout.readline().strip() == "weights written"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not out.exists(), "a killed save must not leave an output folder under its final name"
    (leftover,) = tmp_path.glob(".run.partial-*")
    assert (leftover / "model.safetensors").exists() and not (leftover / "manifest.json").exists()
    with pytest.raises(UserError, match="incomplete unlearn-kb output"):
        load_model(leftover)
    with pytest.raises(UserError, match="no manifest.json"):
        read_manifest(leftover)
    # The dead writer's lock died with it: a new run may write the folder, and clears the leftover.
    from unlearn_kb.engine.models import OutputFolder

    with OutputFolder(out) as output:
        output.write_manifest({"method": "ok"})
    assert (out / "manifest.json").exists()
    assert not list(tmp_path.glob(".run.partial-*"))
