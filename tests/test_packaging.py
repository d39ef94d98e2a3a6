"""A real wheel, installed in a fresh virtual environment, works from any folder."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(REPO)], check=True)
    [built] = out.glob("unlearn_kb-*.whl")
    return built


def test_wheel_ships_records_and_methods_under_the_package_only(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"unlearn_kb"}
    assert "unlearn_kb/registry_data/taxonomy.yaml" in names
    assert "unlearn_kb/registry_data/methods/npo.yaml" in names
    assert any(n.startswith("unlearn_kb/methods/") for n in names)


@pytest.mark.slow
def test_installed_wheel_answers_queries_from_a_folder_outside_the_repo(wheel, tmp_path):
    env_dir = tmp_path / "fresh-venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # The knowledge base alone: no torch, no transformers (the `run` extra is not installed).
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli = env_dir / "bin" / "unlearn-kb"
    env = {"HOME": str(tmp_path), "PATH": f"{env_dir / 'bin'}:/usr/bin:/bin"}
    result = subprocess.run([str(cli), "query", "--intent", "removal", "--json"], cwd=elsewhere,
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    ids = {r["id"] for r in json.loads(result.stdout)}
    assert {"npo", "ga", "rmu"} <= ids and "guardrail_prompt" not in ids
    shown = subprocess.run([str(cli), "show", "npo"], cwd=elsewhere, capture_output=True, text=True, env=env)
    assert shown.returncode == 0 and "Negative Preference Optimization" in shown.stdout
    validated = subprocess.run([str(cli), "validate"], cwd=elsewhere, capture_output=True, text=True, env=env)
    assert validated.returncode == 0 and validated.stdout.startswith("ok:"), validated.stderr
    # Running a method without the `run` extra says what to install instead of a traceback.
    run = subprocess.run([str(cli), "run", "npo", "--steps", "1"], cwd=elsewhere, capture_output=True,
                         text=True, env=env)
    assert run.returncode == 2 and "unlearn-kb[run]" in run.stderr and "Traceback" not in run.stderr
