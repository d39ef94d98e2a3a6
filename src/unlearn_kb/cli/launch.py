"""``unlearn-kb run ... --processes N [--accelerate-config FILE]``: start the run on several processes.

The command re-executes itself under a launcher, with the same arguments minus these options:

- ``--processes N`` alone: ``torchrun --standalone --nproc_per_node N`` (DDP; on a CPU machine
  the processes talk over gloo, on GPUs over NCCL, one GPU each);
- with ``--accelerate-config FILE``: ``accelerate launch --config_file FILE --num_processes N``,
  for the shipped FSDP and DeepSpeed configurations (``configs/accelerate/``).

The launcher replaces this process (``exec``), so Ctrl-C, SIGTERM and the exit code are the
launcher's, which forwards them to every process of the run. torchrun is run through this
module's ``__main__`` (``python -m unlearn_kb.cli.launch``): when a run stops on a signal or on an
error, the processes have already reported it in one line, and torchrun's own traceback is
replaced by its exit code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from unlearn_kb.errors import ConfigError

OPTIONS = ("--processes", "--accelerate-config")


def without_launch_options(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--processes N`` and ``--accelerate-config FILE`` (either spelling) removed."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in OPTIONS)):
            kept.append(arg)
    return kept


def launch_command(processes: int, accelerate_config: Path | None, cli_args: Sequence[str]) -> list[str]:
    """The command that runs ``unlearn-kb CLI_ARGS`` on ``processes`` processes."""
    if processes < 1:
        raise ConfigError(f"--processes must be at least 1, not {processes}")
    if accelerate_config is not None:
        if not accelerate_config.is_file():
            raise ConfigError(f"--accelerate-config {accelerate_config}: no such file")
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config),
                "--num_processes", str(processes), "-m", "unlearn_kb", *cli_args]
    return [sys.executable, "-m", "unlearn_kb.cli.launch", "--standalone", "--nproc_per_node", str(processes),
            "-m", "unlearn_kb", *cli_args]


def relaunch(processes: int, accelerate_config: Path | None) -> None:
    """Replace this process by the launcher running this same command on ``processes`` processes."""
    if "LOCAL_RANK" in os.environ:
        raise ConfigError("--processes: this run was already started by a launcher (torchrun or accelerate "
                          "launch); give the number of processes to the launcher only")
    command = launch_command(processes, accelerate_config, without_launch_options(sys.argv[1:]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


def _torchrun_quietly() -> int:
    """torchrun's ``main`` with the arguments of this process; its exit code instead of a traceback
    when a process of the run failed (it printed its own one-line error) or a signal stopped it."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the processes report
    try:
        main()
    except SignalException as stopped:
        return 128 + int(stopped.sigval)
    except ChildFailedError as failed:
        codes = [failure.exitcode for failure in failed.failures.values()]
        return next((code for code in codes if code > 0), 1)
    return 0


if __name__ == "__main__":
    sys.exit(_torchrun_quietly())
