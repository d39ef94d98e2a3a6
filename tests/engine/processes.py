"""Real processes for the tests that need them: the CLI in a subprocess, torchrun, and signals."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


def torchrun(port: int, *args: str) -> list[str]:
    """A command that starts ``args`` (a script or ``-m module ...``) in two gloo processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
            *args]


def environment() -> dict[str, str]:
    # One thread in every process: CPU float sums are then reproducible bit for bit.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run_ok(command: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``command`` to the end; it must succeed."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment())
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def interrupt(command: list[str], out: Path, signum: int, after_step: int = 5) -> subprocess.CompletedProcess:
    """Start a run writing to ``out``, wait until its log shows ``after_step`` steps, send ``signum``
    from this process (as Ctrl-C or a cluster's pre-emption would), and return how it ended."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment())
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
            process.kill()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
