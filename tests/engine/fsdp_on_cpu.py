"""``python fsdp_on_cpu.py ARGS...``: the unlearn-kb CLI under accelerate's FSDP2, on CPU processes.

accelerate only turns FSDP on for GPU-like devices; on CPU processes (gloo) it falls back to
plain data parallelism. This launcher switches the shared accelerator state to FSDP2, with the
plugin settings of ``configs/accelerate/fsdp.yaml``, right after accelerate picked its type, so
the engine's real FSDP path runs in CI: accelerate's ``fully_shard`` wrapping of the model,
sharded parameters in the optimizer, the sharded frozen reference and the gathered save.
Start it with ``torchrun --nproc_per_node 2``.
"""

from __future__ import annotations

import sys

from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

_chosen = AcceleratorState.__init__


def _fsdp_on_cpu(self: AcceleratorState, *args: object, **kwargs: object) -> None:
    _chosen(self, *args, **kwargs)
    if self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = FullyShardedDataParallelPlugin(
            fsdp_version=2, reshard_after_forward=True, auto_wrap_policy="transformer_based_wrap",
            state_dict_type="FULL_STATE_DICT")


if __name__ == "__main__":
    AcceleratorState.__init__ = _fsdp_on_cpu
    from unlearn_kb.cli import main

    sys.argv = ["unlearn-kb", *sys.argv[1:]]
    main()
