"""``python fsdp_on_cpu.py CONFIG ARGS...``: the unlearn-kb CLI under accelerate's FSDP, on CPU processes.

accelerate only turns FSDP on for GPU-like devices; on CPU processes (gloo) it falls back to
plain data parallelism. This launcher first turns the accelerate config file ``CONFIG`` (the
shipped ``configs/accelerate/fsdp.yaml``) into the environment ``accelerate launch`` would give
each process, through accelerate's own launch code. It then switches the shared accelerator state
to FSDP with the plugin that environment describes, right after accelerate picked its type. So
what runs in CI is the engine's real sharded path with the shipped settings: accelerate's
``fully_shard`` wrapping, the optimizer over sharded parameters, the sharded frozen reference and
the gathered save. Start it with ``torchrun --nproc_per_node 2``.
"""

from __future__ import annotations

import os
import sys


def _launch_environment(config_file: str) -> dict[str, str]:
    """The FSDP settings ``accelerate launch --config_file CONFIG`` passes to its processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", config_file, "--num_processes",
                                               os.environ.get("WORLD_SIZE", "2"), "unused.py"])
    args, _, _ = _validate_launch_command(args)
    return {k: v for k, v in prepare_multi_gpu_env(args).items() if k.startswith("FSDP_") or k == "ACCELERATE_USE_FSDP"}


def _fsdp_on_cpu() -> None:
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    chosen = AcceleratorState.__init__

    def init(self: AcceleratorState, *args: object, **kwargs: object) -> None:
        chosen(self, *args, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = FullyShardedDataParallelPlugin()  # read from the environment set above

    AcceleratorState.__init__ = init


if __name__ == "__main__":
    config, *cli_args = sys.argv[1:]
    os.environ.update(_launch_environment(config))
    _fsdp_on_cpu()
    from unlearn_kb.cli import main

    sys.argv = ["unlearn-kb", *cli_args]
    main()
