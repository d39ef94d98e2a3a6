"""``unlearn-kb eval`` and ``bench`` end to end on the toy world: run folders, model folders, records."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from unlearn_kb.cli import app
from unlearn_kb.schema import MeasuredResult, Verdict

pytestmark = pytest.mark.slow

runner = CliRunner()


def test_eval_of_a_model_folder_without_reference_uses_the_holdout_and_says_so(toy_world, tmp_path):
    path = toy_world.path
    result = runner.invoke(app, [
        "eval", "--model", str(toy_world.original_path), "--original", str(toy_world.original_path),
        "--forget", str(path / "forget.jsonl"), "--retain", str(path / "retain.jsonl"),
        "--holdout", str(path / "holdout.jsonl"), "--probes", "behaviour,mia", "--json", "--threads", "1",
        "--out", str(tmp_path),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mode"] == "holdout" and report["verdict"] == "ineffective"
    assert any("holdout" in note and "weaker" in note for note in report["notes"])
    assert (tmp_path / "report.md").is_file()


def test_eval_requires_either_a_run_folder_or_a_complete_set_of_paths(tmp_path):
    result = runner.invoke(app, ["eval", "--model", str(tmp_path)])
    assert result.exit_code != 0
    assert "--original" in str(result.exception) or "--original" in result.output


def test_eval_of_a_run_folder_writes_the_report_into_it(toy_world, tmp_path):
    from unlearn_kb.engine.run import run_method

    run_dir = tmp_path / "ga-run"
    run_method("ga", world=toy_world, out=run_dir, seed=0, eval_limit=20)
    result = runner.invoke(app, ["eval", str(run_dir), "--probes", "behaviour,relearn"])
    assert result.exit_code == 0, result.output
    report = json.loads((run_dir / "report.json").read_text())
    assert report["mode"] == "reference" and report["verdict"] in {v.value for v in Verdict}
    assert "relearn.forget_b_after" in report["figures"]
    assert set(report["figures"]["forget.rouge_l"]) == {"model", "reference", "original"}


def test_bench_records_a_valid_measured_result_per_method(toy_world, tmp_path):
    from unlearn_kb.evaluation.bench import bench
    from unlearn_kb.evaluation.measure import EvalConfig

    reports = bench(["ga"], tmp_path, config=EvalConfig(probes=("behaviour", "mia")), world=toy_world)
    record = MeasuredResult.model_validate_json((tmp_path / "ga.json").read_text())
    assert record.method == "ga" and record.verdict is reports["ga"].verdict
    assert record.figures["forget.rouge_l"]["reference"] is not None
