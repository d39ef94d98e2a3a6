"""``unlearn-kb run --processes N [--accelerate-config FILE]``: the command it hands over to."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unlearn_kb.cli import app
from unlearn_kb.cli.launch import launch_command, without_launch_options
from unlearn_kb.errors import ConfigError

CONFIGS = Path(__file__).parents[1] / "configs" / "accelerate"


def test_the_launch_options_are_removed_in_both_spellings_and_nothing_else():
    argv = ["--debug", "run", "npo", "--processes", "4", "--set", "lr=1e-5",
            "--accelerate-config=configs/accelerate/fsdp.yaml", "--out", "runs/x"]
    assert without_launch_options(argv) == ["--debug", "run", "npo", "--set", "lr=1e-5", "--out", "runs/x"]
    assert without_launch_options(["run", "npo", "--processes=2"]) == ["run", "npo"]


def test_processes_alone_start_torchrun_on_this_machine():
    command = launch_command(2, None, ["run", "npo"])
    assert command == [sys.executable, "-m", "unlearn_kb.cli.launch", "--standalone", "--nproc_per_node", "2",
                       "-m", "unlearn_kb", "run", "npo"]  # torchrun, reporting failures by exit code only


def test_an_accelerate_config_starts_accelerate_launch_with_it():
    config = CONFIGS / "fsdp.yaml"
    command = launch_command(8, config, ["run", "npo", "--model", "m"])
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[3:7] == ["--config_file", str(config), "--num_processes", "8"]
    assert command[7:] == ["-m", "unlearn_kb", "run", "npo", "--model", "m"]
    with pytest.raises(ConfigError, match="no such file"):
        launch_command(2, CONFIGS / "missing.yaml", ["run", "npo"])


def test_an_accelerate_config_without_a_process_count_is_refused():
    result = CliRunner().invoke(app, ["run", "npo", "--accelerate-config", str(CONFIGS / "fsdp.yaml")])
    assert result.exit_code == 2 and "--processes" in result.output


def test_a_run_already_under_a_launcher_does_not_launch_again(monkeypatch):
    from unlearn_kb.cli.launch import relaunch

    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ConfigError, match="already started by a launcher"):
        relaunch(2, None)
