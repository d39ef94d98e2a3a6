"""run_method, the saved checkpoint, model loading, the CLI, and the registry <-> methods/ link."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from unlearn_kb.engine.data import write_jsonl
from unlearn_kb.engine.method import GradientMethod
from unlearn_kb.engine.models import load_model
from unlearn_kb.engine.run import config_class, resolve_method, resolve_settings, run_method
from unlearn_kb.engine.trainer import train
from unlearn_kb.errors import ModelLoadError, UserError
from unlearn_kb.registry import load_registry

METHODS_DIR = Path(__file__).resolve().parents[2] / "methods"


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture
def data_files(tmp_path, tiny_data):
    forget, retain = tiny_data
    write_jsonl(tmp_path / "forget.jsonl", forget)
    write_jsonl(tmp_path / "retain.jsonl", retain)
    return tmp_path / "forget.jsonl", tmp_path / "retain.jsonl"


# --------------------------------------------------------------------------- registry <-> code


def test_every_method_module_has_a_record_whose_entry_points_at_it(registry):
    modules = {p.stem for p in METHODS_DIR.glob("*.py") if p.stem != "__init__"}
    entries = {m.implementation.entry.split(":")[0].rsplit(".", 1)[-1]
               for m in registry.implemented() if m.implementation.entry}
    assert modules <= entries, f"modules without a record: {sorted(modules - entries)}"


def test_every_implemented_record_resolves_and_runs_one_step(registry, tiny_model_dir, tiny_data):
    forget, retain = tiny_data
    for record in registry.implemented():
        _, method_cls = resolve_method(record.id, registry)
        if not issubclass(method_cls, GradientMethod):
            continue  # a BuildMethod needs the toy world; test_methods_part2 runs each one
        settings = resolve_settings(record, config_class(method_cls), toy=True,
                                    overrides={"steps": "1", "batch_size": "2", "grad_accum": "1"})
        model, tokenizer = load_model(tiny_model_dir)
        result = train(method_cls(), settings.config, settings.run, model=model, tokenizer=tokenizer,
                       forget=forget, retain=retain)
        assert result.steps == 1 and len(result.records) == 1, record.id


def test_records_declare_the_requirements_their_code_has(registry):
    for record in registry.implemented():
        _, method_cls = resolve_method(record.id, registry)
        # Some BuildMethod settings have no paper default (which filter, which base loss): the
        # toy overrides fill them in.
        toy = not issubclass(method_cls, GradientMethod)
        config = resolve_settings(record, config_class(method_cls), toy=toy).config
        method = method_cls()
        assert record.requirements.reference_model == method.uses_reference, record.id
        assert record.requirements.retain_set == method.needs_retain(config), record.id


# --------------------------------------------------------------------------- run_method


def test_run_method_saves_a_checkpoint_with_manifest_and_log(tiny_model_dir, data_files, tmp_path):
    forget, retain = data_files
    out = tmp_path / "out"
    result = run_method("grad_diff", model=tiny_model_dir, forget=forget, retain=retain, out=out,
                        overrides={"lr": "1e-3", "batch_size": "2", "grad_accum": "1"}, steps=3, seed=1)
    assert result.out == out and result.steps == 3
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "manifest.json", "log.jsonl"} <= names
    assert not list(tmp_path.glob(".out.partial-*"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "grad_diff" and manifest["seed"] == 1
    assert manifest["config"] == {"gamma": 1.0, "alpha": 1.0}
    assert manifest["run"]["steps"] == 3 and manifest["sources"]["steps"] == "--set"
    assert manifest["data"]["forget"]["sha256"] and manifest["data"]["retain"]["examples"] == 12
    assert {"torch", "transformers", "accelerate"} <= set(manifest["versions"])
    assert set(manifest["recall"]["before"]) == {"forget", "retain"}
    log_lines = (out / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log_lines] == [1, 2, 3]
    reloaded, _ = load_model(out)
    assert type(reloaded).__name__ == "LlamaForCausalLM"


def test_a_non_empty_output_folder_is_refused_before_training(tiny_model_dir, data_files, tmp_path):
    forget, retain = data_files
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        run_method("ga", model=tiny_model_dir, forget=forget, out=tmp_path / "taken", steps=1)


def test_a_failed_run_leaves_no_output_folder(tiny_model_dir, data_files, tmp_path):
    forget, retain = data_files
    with pytest.raises(UserError):
        run_method("ga", model=tiny_model_dir, forget=forget, out=tmp_path / "out", steps=2,
                   overrides={"lr": "1e9", "clip": "0", "batch_size": "4"})
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_with_a_model_the_forget_set_is_required(tiny_model_dir):
    with pytest.raises(UserError, match="--forget is required"):
        run_method("ga", model=tiny_model_dir, steps=1)


# --------------------------------------------------------------------------- loading models


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model folder"):
        load_model(tmp_path / "nowhere" / "model")


def test_a_folder_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="holds no model"):
        load_model(tmp_path)


def test_pickle_weights_are_refused_without_allow_pickle(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="--allow-pickle"):
        load_model(tmp_path)


# --------------------------------------------------------------------------- the CLI


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unlearn_kb", *args], capture_output=True, text=True,
                          timeout=600, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "200",
                                                       "OMP_NUM_THREADS": "1"})


def test_cli_run_list_shows_the_runnable_methods():
    done = cli("run", "--list")
    assert done.returncode == 0, done.stderr
    for method_id in ("npo", "rmu", "grad_diff"):
        assert method_id in done.stdout


def test_cli_run_reports_an_unknown_setting_in_one_line(tiny_model_dir, data_files):
    forget, _ = data_files
    done = cli("run", "ga", "--model", str(tiny_model_dir), "--forget", str(forget), "--set", "betta=1")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: --set: unknown setting 'betta'")


def test_cli_run_trains_and_prints_the_before_after_table(tiny_model_dir, data_files, tmp_path):
    forget, retain = data_files
    done = cli("run", "npo", "--model", str(tiny_model_dir), "--forget", str(forget), "--retain", str(retain),
               "--steps", "2", "--set", "batch_size=2", "--set", "grad_accum=1", "--out", str(tmp_path / "m"))
    assert done.returncode == 0, done.stderr
    assert "recall before and after" in done.stdout and "forget" in done.stdout
    assert (tmp_path / "m" / "manifest.json").is_file()


def test_importing_the_run_command_does_not_import_torch():
    code = "import sys, unlearn_kb.cli.run; print('torch' in sys.modules or 'transformers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def test_a_second_run_into_the_same_output_folder_is_refused_while_the_first_writes(tmp_path):
    from unlearn_kb.engine.models import OutputFolder
    from unlearn_kb.errors import UserError

    first = OutputFolder(tmp_path / "run")
    with pytest.raises(UserError, match="another run is writing to this folder"):
        OutputFolder(tmp_path / "run")
    with first:
        (first.staging / "manifest.json").write_text("{}")
    assert (tmp_path / "run" / "manifest.json").exists()
    with pytest.raises(UserError, match="already exists and is not empty"):
        OutputFolder(tmp_path / "run")


def test_max_length_is_capped_at_the_model_context_and_the_manifest_says_so(tiny_model_dir, data_files, tmp_path):
    forget, retain = data_files
    result = run_method("ga", model=tiny_model_dir, forget=forget, steps=1, out=tmp_path / "capped",
                        overrides={"max_length": 4096})
    assert result.run["max_length"] == 128  # the tiny model's max_position_embeddings
    manifest = json.loads((tmp_path / "capped" / "manifest.json").read_text())
    assert manifest["run"]["max_length"] == 128
    assert manifest["sources"]["max_length"].startswith("the model's context (128 tokens")
