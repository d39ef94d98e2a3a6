"""Real processes for the tests that need them: the CLI in a subprocess, torchrun, and signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def torchrun(port: int, *args: str) -> list[str]:
    """A command that starts ``args`` (a script or ``-m module ...``) in two gloo processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
            *args]


def environment() -> dict[str, str]:
    # One thread in every process: CPU float sums are then reproducible bit for bit.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run_to_end(command: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``command`` in its own process group; past ``timeout`` the whole group is killed (a hung
    torchrun's workers would otherwise outlive the test) and the test fails."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment(), start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(command[:6])} ... still ran after {timeout} s (hung?): {stderr[-2000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_ok(command: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``command`` to the end; it must succeed."""
    done = run_to_end(command, timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def interrupt(command: list[str], out: Path, signum: int, after_step: int = 5) -> subprocess.CompletedProcess:
    """Start a run writing to ``out``, wait until its log shows ``after_step`` steps, send ``signum``
    from this process (as Ctrl-C or a cluster's pre-emption would), and return how it ended."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment(), start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            logs = list(out.parent.glob(f".{out.name}.partial-*/log.jsonl"))
            if logs and len(logs[0].read_text().splitlines()) >= after_step:
                process.send_signal(signum)
                break
            if process.poll() is not None:
                pytest.fail(f"the run ended before it could be interrupted: {process.communicate()[1]}")
            time.sleep(0.02)
        else:
            pytest.fail("the run never reached the step to interrupt")
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # torchrun's workers too
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def saved_weights(folder: Path, name: str = "model.safetensors") -> dict:
    """The tensors of a saved model (or of a checkpoint's ``trained.safetensors``) by name."""
    from safetensors.torch import load_file

    return load_file(folder / name)


def tiny_data_files(folder: Path) -> tuple[Path, Path]:
    """The tiny forget and retain sets (``tiny.examples``) as JSON-lines files in ``folder``."""
    from tiny import examples

    from unlearn_kb.engine.data import write_jsonl

    forget, retain = examples()
    paths = folder / "forget.jsonl", folder / "retain.jsonl"
    write_jsonl(paths[0], forget)
    write_jsonl(paths[1], retain)
    return paths


def sigterm_then_resume(launcher: list[str], model: Path, folder: Path, ports: tuple[int, int, int],
                        between: Callable[[Path], None] | None = None) -> tuple[Path, Path]:
    """A 300-step NPO run on two processes (``launcher`` runs the CLI: ``-m unlearn_kb`` or a
    script), once whole and once pre-empted by SIGTERM after step 10 then resumed; ``between``
    sees the checkpoint before the resume. Returns the two output folders."""
    forget, retain = tiny_data_files(folder)

    def command(out: str, port: int, *extra: str) -> list[str]:
        return torchrun(port, *launcher, "run", "npo", "--model", str(model), "--forget", str(forget),
                        "--retain", str(retain), "--steps", "300", "--seed", "3", "--set", "batch_size=1",
                        "--set", "grad_accum=2", "--set", "lr=1e-3", "--out", str(folder / out), *extra)

    run_ok(command("whole", ports[0]))
    stopped = interrupt(command("cut", ports[1]), folder / "cut", signal.SIGTERM, after_step=10)
    assert "interrupted by SIGTERM after step" in stopped.stderr, stopped.stderr[-3000:]
    assert not (folder / "cut").exists()
    if between is not None:
        between(folder / "cut.checkpoint")
    run_ok(command("cut", ports[2], "--resume", str(folder / "cut.checkpoint")))
    return folder / "whole", folder / "cut"
