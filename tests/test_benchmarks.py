"""The benchmark scripts still run (their figures are measured by hand, never asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.mark.slow
def test_step_cost_measures_each_method_next_to_its_fine_tuning_baseline(tmp_path):
    figures = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "step_cost.py"), "--methods",
                           "finetune_hf_trainer,ga,rmu", "--steps", "3", "--json", str(figures)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["method"]: row for row in json.loads(figures.read_text())["rows"]}
    assert sorted(rows) == ["finetune_hf_trainer", "ga", "rmu"]
    for row in rows.values():
        assert row["median_step_s"] > 0 and row["baseline_step_s"] > 0 and row["ratio"] > 0
    # Only RMU's three steered matrices get gradients; GA and fine-tuning train everything.
    assert rows["rmu"]["trained_parameters"] < rows["ga"]["trained_parameters"] // 5
    assert rows["ga"]["trained_parameters"] == rows["finetune_hf_trainer"]["trained_parameters"]
    assert rows["rmu"]["reference"] != "none" and rows["ga"]["reference"] == "none"
