"""Training checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is written when a run is interrupted (Ctrl-C, SIGTERM), when it diverges (the state
after the last good step), and every ``checkpoint_every`` steps if asked. A folder holds:

- ``trained.safetensors``: the trained parameters, by name. The other weights never change, so a
  resumed run reloads them from the starting model (a LoRA run stores only its adapter);
- ``optimizer.safetensors``: the optimizer's tensors (AdamW's moments and step counts);
- ``rng.safetensors``: torch's CPU (and CUDA) random states;
- ``state.json``: the step, the optimizer's parameter groups and scalar state, the scheduler,
  Python's and NumPy's random states, the log records so far, and ``identity``: the method,
  its settings, the seed and the data fingerprints that a resumed run must match;
- ``manifest.json``: written last; a folder without it is incomplete and is refused.

The data order is not stored as loader state: the loaders shuffle with their own seeded
generators, so a resumed run replays the same order by drawing (and discarding) the batches of
the steps already done, which costs no model work. With the random states restored, a resumed
CPU run ends with the same weights, bit for bit, as an uninterrupted one (a test checks this).

Everything is stored as safetensors and JSON, never as pickles, and written to a temporary
sibling folder that is renamed into place, so a crash while saving leaves the previous
checkpoint (or none) rather than a half-written one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from unlearn_kb.errors import UserError

FORMAT = "unlearn-kb-checkpoint/1"
RESUMABLE_CHANGES = frozenset({"lr", "clip", "steps", "epochs", "checkpoint_every"})
"""Run settings a resumed run may change (e.g. a lower learning rate after a divergence); every
other setting, the method config, the seed and the data must match the checkpoint."""


@dataclass
class TrainingState:
    """A run's complete state after ``step`` optimizer steps."""

    step: int
    trained: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    records: list[dict[str, Any]]
    identity: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- capturing and restoring


def random_states() -> dict[str, Any]:
    """Python's, NumPy's (if installed) and torch's random states."""
    states: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        states["numpy"] = np.random.get_state()
    except ImportError:
        pass
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict[str, Any]) -> None:
    """Undo :func:`random_states`: the next random draws repeat those of the saved run."""
    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    if "numpy" in states:
        import numpy as np

        np.random.set_state(states["numpy"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def is_sharded(parameters: dict[str, torch.nn.Parameter]) -> bool:
    """Whether the parameters are shards (FSDP2 turns each into a ``DTensor``)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in parameters.values())


def capture(step: int, parameters: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer,
            scheduler: Any, records: list[dict[str, Any]], identity: dict[str, Any], *,
            model: torch.nn.Module | None = None, main: bool = True) -> TrainingState | None:
    """The state of a run after ``step`` optimizer steps (tensors copied to the CPU), on the main
    process; ``None`` on the others.

    Sharded parameters (FSDP) are gathered whole, with their optimizer state, through torch's
    distributed state-dict API: every process must then call this (the gathers are collectives),
    and ``model`` must be the module that owns ``parameters``. The checkpoint is the same as an
    unsharded run's.
    """
    if model is not None and is_sharded(parameters):
        trained, optimizer_state = _gathered(model, optimizer, list(parameters))
    elif not main:
        return None
    else:
        trained = {name: p.detach().to("cpu", copy=True).contiguous() for name, p in parameters.items()}
        optimizer_state = optimizer.state_dict()
    if not main:
        return None
    return TrainingState(
        step=step,
        trained=trained,
        optimizer=optimizer_state,
        scheduler={k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        rng=random_states(),
        records=list(records),
        identity=identity,
    )


def _whole_on_main() -> Any:
    """torch's state-dict options for a sharded model: whole tensors, on the CPU of rank 0 only."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict of a model sharded with FSDP (1 or 2), on the CPU of rank 0.

    Every process must call it (the gather is a collective); the other ranks get ``{}``. On an
    unsharded model it is simply the state dict.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_whole_on_main())


def _gathered(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              names: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Whole trained tensors and optimizer state of a sharded model, on the main process.

    torch keys the optimizer's state by parameter name; it is stored by position, as
    ``optimizer.state_dict()`` does (``names`` is in the optimizer's order).
    """
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, by_name = get_state_dict(model, optimizer, options=_whole_on_main())
    position = {name: i for i, name in enumerate(names)}
    trained = {name: model_state[name].contiguous() for name in names if name in model_state}
    optimizer_state = {
        "state": {position[name]: values for name, values in by_name.get("state", {}).items()},
        "param_groups": [{**group, "params": [position[name] for name in group["params"]]}
                         for group in by_name.get("param_groups", [])],
    }
    return trained, optimizer_state


def _load_sharded(state: TrainingState, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  names: list[str]) -> None:
    """Put whole saved tensors into a sharded model and its optimizer (each process takes its shard)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    by_name = {
        "state": {names[int(i)]: values for i, values in state.optimizer["state"].items()},
        "param_groups": [{**group, "params": [names[int(i)] for i in group["params"]]}
                         for group in state.optimizer["param_groups"]],
    }
    set_state_dict(model, optimizer, model_state_dict=state.trained, optim_state_dict=by_name,
                   options=StateDictOptions(full_state_dict=True, strict=False))


@torch.no_grad()
def restore(state: TrainingState, parameters: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer,
            scheduler: Any, lr: float, *, model: torch.nn.Module | None = None) -> None:
    """Load ``state`` into a freshly set-up run (its random states are restored separately, last).

    ``lr`` is the resumed run's learning rate: it replaces the saved one when the user changed it.
    Sharded parameters need ``model``, their owner; every process must then call this.
    """
    expected, saved = set(parameters), set(state.trained)
    if expected != saved:
        missing = sorted(expected - saved)[:3] or sorted(saved - expected)[:3]
        raise UserError(f"the checkpoint trained other parameters than this run ({missing}...); resume "
                        "with the same method, model and --lora settings")
    for name, p in parameters.items():
        if state.trained[name].shape != p.shape:
            raise UserError(f"the checkpoint's '{name}' has shape {tuple(state.trained[name].shape)}, the "
                            f"model's is {tuple(p.shape)}: it belongs to another model")
    if model is not None and is_sharded(parameters):
        _load_sharded(state, model, optimizer, list(parameters))
    else:
        for name, p in parameters.items():
            p.copy_(state.trained[name])
        optimizer.load_state_dict(state.optimizer)
    scheduler.load_state_dict({**state.scheduler, "lr_lambdas": [None] * len(optimizer.param_groups)})
    for group in optimizer.param_groups:
        group["initial_lr"] = lr
    scheduler.base_lrs = [lr] * len(optimizer.param_groups)


# --------------------------------------------------------------------------- files


def _flatten_optimizer(optimizer_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and the rest (for JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in optimizer_state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}/{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": optimizer_state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, _, name = key.partition("/")
        state.setdefault(int(index), {})[name] = value
    for index, values in rest["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


def _rng_to_files(states: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": states["torch"]}
    for i, cuda_state in enumerate(states.get("cuda", [])):
        tensors[f"cuda/{i}"] = cuda_state
    version, internal, gauss = states["python"]
    rest: dict[str, Any] = {"python": [version, list(internal), gauss]}
    if "numpy" in states:
        kind, keys, pos, has_gauss, cached = states["numpy"]
        tensors["numpy"] = torch.from_numpy(keys.astype("int64"))
        rest["numpy"] = [kind, int(pos), int(has_gauss), float(cached)]
    return tensors, rest


def _rng_from_files(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    version, internal, gauss = rest["python"]
    states: dict[str, Any] = {"python": (version, tuple(internal), gauss), "torch": tensors["torch"]}
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda/")), key=lambda k: int(k[5:]))]
    if cuda:
        states["cuda"] = cuda
    if "numpy" in rest:
        import numpy as np

        kind, pos, has_gauss, cached = rest["numpy"]
        states["numpy"] = (kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached)
    return states


def save_checkpoint(state: TrainingState, folder: Path) -> Path:
    """Write ``state`` to ``folder`` atomically (a previous checkpoint there is replaced)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    staging = folder.parent / f".{folder.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        save_file(state.trained, staging / "trained.safetensors")
        optimizer_tensors, optimizer_rest = _flatten_optimizer(state.optimizer)
        save_file(optimizer_tensors, staging / "optimizer.safetensors")
        rng_tensors, rng_rest = _rng_to_files(state.rng)
        save_file(rng_tensors, staging / "rng.safetensors")
        payload = {"step": state.step, "optimizer": optimizer_rest, "scheduler": state.scheduler,
                   "rng": rng_rest, "records": state.records, "identity": state.identity}
        (staging / "state.json").write_text(json.dumps(payload, default=str) + "\n", encoding="utf-8")
        manifest = {"format": FORMAT, "step": state.step, "method": state.identity.get("method"),
                    "files": sorted(p.name for p in staging.iterdir())}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if folder.exists():  # replace the previous checkpoint: move it aside, then swap
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(folder, old)
            os.replace(staging, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def load_checkpoint(folder: Path) -> TrainingState:
    """Read a checkpoint written by :func:`save_checkpoint`; an incomplete one is a UserError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such checkpoint folder")
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{folder}: incomplete checkpoint (no manifest.json): the run that wrote it "
                        "stopped while saving; resume from an earlier checkpoint or start again") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{folder}/manifest.json: not valid JSON ({exc.msg})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{folder}: not an unlearn-kb training checkpoint (manifest format "
                        f"{manifest.get('format') if isinstance(manifest, dict) else None!r}, expected {FORMAT!r})")
    try:
        payload = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        trained = load_file(folder / "trained.safetensors")
        optimizer = _unflatten_optimizer(load_file(folder / "optimizer.safetensors"), payload["optimizer"])
        rng = _rng_from_files(load_file(folder / "rng.safetensors"), payload["rng"])
    except (OSError, KeyError, ValueError, SafetensorError) as exc:
        raise UserError(f"{folder}: damaged checkpoint ({type(exc).__name__}: {exc})") from None
    return TrainingState(step=int(payload["step"]), trained=trained, optimizer=optimizer,
                         scheduler=payload["scheduler"], rng=rng, records=payload["records"],
                         identity=payload["identity"])


def check_identity(saved: dict[str, Any], current: dict[str, Any], folder: Path) -> list[str]:
    """Refuse to resume a different run; return the run settings that changed (allowed ones).

    ``identity`` holds ``method``, ``config``, ``run``, ``seed``, ``data`` and ``model``.
    """
    def normal(value: Any) -> Any:
        return json.loads(json.dumps(value, default=str))

    saved, current = normal(saved), normal(current)
    problems = [key for key in ("method", "config", "seed", "data", "model", "lora")
                if saved.get(key) != current.get(key)]
    saved_run, current_run = saved.get("run", {}), current.get("run", {})
    changed = sorted(k for k in set(saved_run) | set(current_run) if saved_run.get(k) != current_run.get(k))
    problems += [f"run.{k}" for k in changed if k not in RESUMABLE_CHANGES]
    if problems:
        details = ", ".join(problems)
        raise UserError(f"{folder}: this checkpoint belongs to another run ({details} differ: "
                        f"{saved.get('method')} seed {saved.get('seed')}); resume with the same method, "
                        f"model, data, seed and settings (only {', '.join(sorted(RESUMABLE_CHANGES))} may change)")
    return changed


# --------------------------------------------------------------------------- signals


class StopRequests:
    """Turn SIGINT and SIGTERM into a request to stop after the current optimizer step.

    Used as a context manager around the training loop. The first signal sets :attr:`signal`; the
    loop checks it after each step, saves a checkpoint and stops. A second signal stops at once
    (``KeyboardInterrupt``): the checkpoint being written is discarded whole, never half-written.
    Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, notice: Any = None) -> None:
        self.signal: int | None = None
        self._notice = notice
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        if self._notice is not None:
            self._notice(signal.Signals(signum).name)

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()


@dataclass
class CheckpointPlan:
    """Where a run saves its state and what identifies it (see :func:`check_identity`)."""

    folder: Path
    identity: dict[str, Any]
