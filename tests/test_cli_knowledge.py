"""The knowledge commands, as a user calls them: tables, JSON, CSV, errors and start-up cost."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from unlearn_kb.cli import app, common

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "registry"
runner = CliRunner()


@pytest.fixture
def fixture_registry(fixture_root, tmp_path, monkeypatch) -> Path:
    root = fixture_root
    monkeypatch.setenv("UNLEARN_KB_REGISTRY", str(root))
    monkeypatch.setenv("UNLEARN_KB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(common, "_registry", None)
    monkeypatch.setattr(common, "_catalog", None)
    return root


@pytest.fixture
def shipped_registry(monkeypatch):
    monkeypatch.delenv("UNLEARN_KB_REGISTRY", raising=False)
    monkeypatch.setattr(common, "_registry", None)
    monkeypatch.setattr(common, "_catalog", None)


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def test_query_json_is_a_list_of_records_valid_against_the_published_schema(fixture_registry):
    result = invoke("query", "--intent", "removal", "--json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["id"] for r in records] == ["alpha_ascent", "beta_preference"]
    schema = json.loads(invoke("schema", "--kind", "method").stdout)["method"]
    for record in records:
        jsonschema.validate(record, schema)
        assert record["intention"]["stated"] == "removal"
        assert "arxiv" in record["citation"] and "status" in record["implementation"]


def test_query_table_lists_matching_methods_only(fixture_registry):
    result = invoke("query", "--level", "input")
    assert result.exit_code == 0
    assert "gamma_prompt" in result.stdout and "alpha_ascent" not in result.stdout


def test_query_csv_has_one_row_per_method(fixture_registry):
    result = invoke("query", "--csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["id"] for r in rows] == ["alpha_ascent", "beta_preference", "gamma_prompt"]
    assert rows[0]["intention_observed"] == "suppression-like" and rows[1]["reference_model"] == "true"


def test_invalid_enum_value_lists_the_valid_ones(fixture_registry):
    result = invoke("query", "--intent", "erase")
    assert result.exit_code == 2
    assert "removal" in result.output and "suppression" in result.output


def test_show_prints_summary_formula_and_citation(fixture_registry):
    result = invoke("show", "beta_preference")
    assert result.exit_code == 0, result.output
    for expected in ("Beta Preference", "Treats forgotten answers", r"\log\sigma(\beta)", "2401.00002"):
        assert expected in result.stdout


def test_show_resolves_an_old_id_kept_as_alias(fixture_registry):
    result = invoke("show", "old_alpha", "--json")
    assert json.loads(result.stdout)["id"] == "alpha_ascent"


def test_list_and_stats(fixture_registry):
    assert "bench_one" in invoke("list", "benchmarks").stdout
    findings = json.loads(invoke("list", "findings", "--json").stdout)
    assert findings[0]["methods"] == ["alpha_ascent"]
    families = json.loads(invoke("list", "families", "--json").stdout)
    assert "gradient_objective" in {f["id"] for f in families}
    grid = json.loads(invoke("stats", "--json").stdout)
    assert grid["parameter"]["removal"] == ["alpha_ascent", "beta_preference"]
    assert grid["input"]["suppression"] == ["gamma_prompt"]


def test_validate_reports_every_problem_in_one_line_each_with_exit_code_2(fixture_registry):
    bad = fixture_registry / "methods" / "alpha_ascent.yaml"
    bad.write_text(bad.read_text().replace("level: parameter", "level: weights"))
    result = invoke("validate", str(fixture_registry))
    assert result.exit_code != 0


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run([sys.executable, "-m", "unlearn_kb", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def test_unknown_id_answers_in_one_line_with_the_closest_ids_and_exit_code_2(shipped_registry):
    result = run_cli("show", "npx")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: no method 'npx'; did you mean 'npo'?"
    assert "Traceback" not in result.stderr


def test_a_bad_registry_gives_lines_naming_file_record_and_field_and_no_traceback(fixture_registry):
    bad = fixture_registry / "methods" / "alpha_ascent.yaml"
    bad.write_text(bad.read_text().replace("level: parameter", "level: weights"))
    result = run_cli("validate", str(fixture_registry))
    assert result.returncode == 2
    first = result.stderr.splitlines()[0]
    assert "alpha_ascent.yaml:7: record 'alpha_ascent': field 'level': Input should be" in first
    assert "Traceback" not in result.stderr
    debug = run_cli("--debug", "validate", str(fixture_registry))
    assert "Traceback" in debug.stderr and debug.returncode == 2


def test_cite_bibtex(shipped_registry):
    result = run_cli("cite", "npo", "--format", "bibtex")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("@") and "2404.05868" in result.stdout
    assert "Negative Preference Optimization" in result.stdout


@pytest.mark.parametrize("command", [["query", "--intent", "removal"], ["show", "npo"], ["stats"],
                                     ["list", "metrics"], ["cite", "npo"], ["--help"]])
def test_knowledge_commands_never_import_torch_or_transformers(shipped_registry, command):
    probe = (
        "import sys, runpy\n"
        f"sys.argv = ['unlearn-kb', *{command!r}]\n"
        "try:\n    runpy.run_module('unlearn_kb', run_name='__main__')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'accelerate', 'numpy') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
