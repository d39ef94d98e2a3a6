"""Loading a model and its tokenizer, and writing an unlearned checkpoint safely.

Loading is conservative by default: safetensors weights only (pickle weights can run code when
loaded; ``allow_pickle`` opts in), and no model code from the hub unless ``trust_remote_code``.
Every failure a user can fix becomes a one-line :class:`~unlearn_kb.errors.ModelLoadError`.

Saving writes the checkpoint into a hidden sibling folder, the manifest last, and renames the
folder into place: an output folder either holds a complete run or does not exist.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from unlearn_kb.engine.data import ensure_pad_token
from unlearn_kb.errors import ConfigError, ModelLoadError, UserError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_DTYPES = ("float32", "bfloat16", "float16")


_STAGING_NAME = re.compile(r"^\..+\.partial-[0-9a-f]{8}$")


def _check_local_folder(folder: Path, allow_pickle: bool) -> None:
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: is a file, not a model folder (expected a folder written by save_pretrained)")
    if not (folder / "manifest.json").is_file() and (_STAGING_NAME.match(folder.name)
                                                     or (folder / "log.jsonl").is_file()):
        raise ModelLoadError(f"{folder}: incomplete unlearn-kb output (no manifest.json): the run that wrote "
                             "it stopped before finishing; run it again")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder}: holds no model (no config.json; expected a folder written by "
                             "save_pretrained)")
    names = {p.name for p in folder.iterdir()}
    has_safetensors = any(n.endswith(".safetensors") or n == "model.safetensors.index.json" for n in names)
    has_pickle = any(n.endswith((".bin", ".pt", ".pth", ".ckpt")) for n in names)
    if not has_safetensors and not has_pickle:
        raise ModelLoadError(f"{folder}: has a config.json but no weights (*.safetensors)")
    if not has_safetensors and not allow_pickle:
        raise ModelLoadError(f"{folder}: has only pickle weights (*.bin), which can run code when loaded; "
                             "convert them to safetensors, or pass --allow-pickle if you trust the source")


def load_model(
    path: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a local folder or a hub name; the tokenizer gets a pad token.

    ``dtype`` is the weights' dtype (transformers 5 would otherwise infer it from the config).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the run draws its own progress; no per-load bars

    if dtype not in _DTYPES:
        raise ModelLoadError(f"dtype must be one of {', '.join(_DTYPES)}, got '{dtype}'")
    text = os.fspath(path)
    local = Path(text).expanduser()
    if local.exists():
        _check_local_folder(local, allow_pickle)
        source = str(local)
    elif _HUB_ID.match(text) and not text.startswith((".", "~")):
        source = text  # a hub name; from_pretrained reports whether it exists
    else:
        raise ModelLoadError(f"{text}: no such model folder")

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=getattr(torch, dtype), use_safetensors=None if allow_pickle else True,
            weights_only=True, **kwargs)  # pickles, when allowed, load tensors only (no code)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except pickle.UnpicklingError:
        raise ModelLoadError(f"{text}: cannot load the model: its pickle weights hold more than tensors "
                             "(objects that could run code), so they were refused even with --allow-pickle") from None
    except (OSError, ValueError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            raise ModelLoadError(f"{text}: the model needs its own code from the hub; pass "
                                 "--trust-remote-code if you trust its source") from None
        if "safetensors" in str(exc).lower() and not allow_pickle:
            raise ModelLoadError(f"{text}: no safetensors weights ({message}); pass --allow-pickle to "
                                 "load pickle weights if you trust the source") from None
        raise ModelLoadError(f"{text}: cannot load the model: {message}") from None
    ensure_pad_token(tokenizer)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


class OutputFolder:
    """A run's output folder, written in a hidden sibling and renamed into place on success.

    Use as a context manager: files go to :attr:`staging`; on a clean exit the folder is renamed
    to ``out`` (atomic on one file system); on an error it is removed, so ``out`` never holds a
    partial checkpoint.
    """

    def __init__(self, out: str | os.PathLike[str]):
        self.out = Path(out).expanduser()
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise UserError(f"{self.out}: already exists and is not empty; choose another --out or remove it")
        self.staging = self.out.parent / f".{self.out.name}.partial-{uuid.uuid4().hex[:8]}"
        # Under torchrun / accelerate launch only rank 0 writes, so only it claims the folder.
        self._lock = self._claim() if os.environ.get("RANK", "0") == "0" else None

    def _claim(self) -> Any:
        """Hold an exclusive lock on ``out`` for this process: a second run aimed at the same
        folder is refused at once instead of interleaving with this one. The kernel drops the
        lock if this process dies, so a crash leaves no stale lock."""
        import fcntl

        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.out.parent / f".{self.out.name}.lock", "w")  # noqa: SIM115 - held until exit
        except OSError as exc:
            raise UserError(f"{self.out}: cannot create the output folder: {exc.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise UserError(f"{self.out}: another run is writing to this folder; wait for it or "
                            "choose another --out") from None
        # Holding the lock, any other staging folder of ``out`` belongs to a run that died.
        for leftover in self.out.parent.glob(f".{self.out.name}.partial-*"):
            if _STAGING_NAME.match(leftover.name):
                shutil.rmtree(leftover, ignore_errors=True)
        return handle

    def __enter__(self) -> OutputFolder:
        try:
            self.staging.mkdir(parents=True)
        except OSError as exc:
            raise UserError(f"{self.out}: cannot create the output folder: {exc.strerror}") from None
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if kind is not None:
                shutil.rmtree(self.staging, ignore_errors=True)
                return
            if self.out.exists():  # an empty folder: replace it
                self.out.rmdir()
            os.replace(self.staging, self.out)
        finally:
            if self._lock is not None:
                Path(self._lock.name).unlink(missing_ok=True)
                self._lock.close()

    @contextlib.contextmanager
    def step_log(self) -> Iterator[Callable[[dict[str, Any]], None]]:
        """A writer of per-step records to ``log.jsonl``, flushed per line (a crash keeps them)."""
        with (self.staging / "log.jsonl").open("w", encoding="utf-8") as handle:
            def write(record: dict[str, Any]) -> None:
                handle.write(json.dumps(record) + "\n")
                handle.flush()
            yield write

    def save_model(self, model: Any, tokenizer: Any, state_dict: dict[str, Any] | None = None) -> None:
        """``save_pretrained`` (safetensors) for the model and its tokenizer; ``state_dict``
        replaces the model's own weights (a sharded model's weights, gathered)."""
        model.save_pretrained(self.staging, state_dict=state_dict)
        tokenizer.save_pretrained(self.staging)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write ``manifest.json``; call it last, once everything else is in place."""
        text = json.dumps(manifest, indent=2, ensure_ascii=False, default=str)
        (self.staging / "manifest.json").write_text(text + "\n", encoding="utf-8")


def is_main_process() -> bool:
    """Whether this is the process that reports and writes: under torchrun / accelerate launch,
    rank 0; otherwise the only one."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available()).is_main_process


def writes_output(output: OutputFolder | None) -> bool:
    """Whether this process writes ``output``: under torchrun / accelerate launch only rank 0 does."""
    return output is not None and is_main_process()


def load_companion(spec: str, target: Any, world: Any, setting: str, hint: str = "") -> tuple[Any, str]:
    """A smaller model that works next to ``target`` on its vocabulary (ULD's assistant, delta
    unlearning's offset model), and where it came from.

    ``spec`` is ``"assistant"`` (the toy world's small assistant, trained on first use) or a model
    folder. Both models' logits are combined token by token, so their output vocabularies must be
    the same size; ``setting`` names the option for the error messages, ``hint`` adds advice.
    """
    if spec == "assistant":
        if world is None:
            raise ConfigError(f"{setting} 'assistant' is the toy world's; with --model give a folder of a smaller "
                              f"model that shares its tokenizer (--set {setting}=PATH){hint}")
        from unlearn_kb.toyworld import load_toyworld

        load_toyworld(world.config, assistant=True)  # trained on first request only
        small, source = world.load("assistant").model, str(world.assistant_path)
    else:
        small, source = load_model(spec)[0], spec
    vocab = target.get_output_embeddings().weight.shape[0]
    small_vocab = small.get_output_embeddings().weight.shape[0]
    if vocab != small_vocab:
        raise ConfigError(f"{setting} {source} has {small_vocab} output tokens, the model {vocab}: the logits are "
                          f"combined token by token, so both must share one tokenizer{hint}")
    return small, source

