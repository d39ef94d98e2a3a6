"""The toy world on disk: build once, cache by config, load at once afterwards.

Layout of a world folder (``<cache>/toyworld/<config key>/``)::

    manifest.json      written last; a folder without it is an interrupted build and is rebuilt
    config.json        the WorldConfig
    forget.jsonl ...   every example set, readable by ``unlearn-kb run --forget``
    original/          transformers checkpoints (safetensors + tokenizer files)
    reference/
    assistant/         only once asked for (``assistant=True``)

Builds happen in a temporary sibling folder that is renamed into place, under an exclusive file
lock, so a crash leaves no half-world behind and two processes never train the same world twice.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unlearn_kb.engine.data import Example, read_examples, write_jsonl
from unlearn_kb.errors import UserError
from unlearn_kb.toyworld.config import FORMAT_VERSION, WorldConfig
from unlearn_kb.toyworld.training import Progress

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from unlearn_kb.engine.lm import LanguageModel
    from unlearn_kb.toyworld.generator import WorldData

MODELS = ("original", "reference", "assistant")
EXAMPLE_SETS = ("forget", "retain", "holdout", "forget_paraphrased", "retain_paraphrased",
                "holdout_paraphrased", "general")
MANIFEST = "manifest.json"


def cache_root() -> Path:
    """``$UNLEARN_KB_CACHE``, else ``$XDG_CACHE_HOME/unlearn-kb``, else ``~/.cache/unlearn-kb``."""
    if os.environ.get("UNLEARN_KB_CACHE"):
        return Path(os.environ["UNLEARN_KB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "unlearn-kb"


def world_path(config: WorldConfig) -> Path:
    return cache_root() / "toyworld" / config.key()


@dataclass
class ToyWorld:
    """A built toy world: its example sets, its checkpoints and what was measured at build time.

    ``forget`` / ``retain`` / ``holdout`` hold the training-template examples (holdout entities
    are never trained on by any model); the ``*_paraphrased`` sets ask the same facts through the
    held-out templates. ``general`` is declarative text about retain entities, for fluency.
    """

    config: WorldConfig
    path: Path
    forget: list[Example]
    retain: list[Example]
    holdout: list[Example]
    forget_paraphrased: list[Example]
    retain_paraphrased: list[Example]
    holdout_paraphrased: list[Example]
    general: list[Example]

    @property
    def original_path(self) -> Path:
        return self.path / "original"

    @property
    def reference_path(self) -> Path:
        return self.path / "reference"

    @property
    def assistant_path(self) -> Path:
        """The small model for logit-offset methods; exists once built with ``assistant=True``."""
        return self.path / "assistant"

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))

    def info(self) -> dict[str, Any]:
        """Sizes, split counts, training times and the recall measured at build time."""
        return {"path": str(self.path), **self.manifest()}

    def load(self, which: str = "original") -> LanguageModel:
        """A checkpoint as a :class:`LanguageModel`: float32, eval mode, on the CPU."""
        if which not in MODELS:
            raise UserError(f"unknown toy-world model {which!r}; choose one of {', '.join(MODELS)}")
        if which not in self.manifest()["models"]:
            raise UserError(f"the toy world at {self.path} has no {which} model yet; build it with "
                            "load_toyworld(config, assistant=True) or 'unlearn-kb toyworld build --assistant'")
        return load_checkpoint(self.path / which)


def load_checkpoint(folder: Path) -> LanguageModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unlearn_kb.engine.lm import LanguageModel

    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to("cpu").eval()
    return LanguageModel(model=model, tokenizer=tokenizer)


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No per-file progress bars for checkpoints of one small shard; the caller's setting after."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


# --------------------------------------------------------------------------- loading and building


def load_toyworld(
    config: WorldConfig | None = None,
    build: bool = True,
    assistant: bool = False,
    progress: Progress | None = None,
) -> ToyWorld:
    """The toy world for ``config`` (default: ``WorldConfig()``), trained first if not cached.

    With ``build=False`` a missing world is a :class:`UserError` instead. ``assistant=True`` also
    makes sure the small assistant model exists (trained on first request only, since most uses
    never need it). ``progress`` receives one-line status messages while building.
    """
    config = config or WorldConfig()
    path = world_path(config)
    if _complete(path, assistant):
        return _open(config, path)
    if not build:
        if _complete(path, assistant=False):
            raise UserError(f"the toy world {config.key()} at {path} has no assistant model; build it with "
                            "'unlearn-kb toyworld build --assistant' or load_toyworld(config, assistant=True)")
        raise UserError(f"the toy world {config.key()} is not built (looked in {path}); build it with "
                        "'unlearn-kb toyworld build' or load_toyworld(config, build=True)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent / f"{path.name}.lock"):
        # Another process may have finished while this one waited for the lock.
        if not (path / MANIFEST).exists():
            _build_world(config, path, progress)
        if assistant and "assistant" not in _read_manifest(path)["models"]:
            _build_assistant(config, path, progress)
    return _open(config, path)


def _read_manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / MANIFEST).read_text(encoding="utf-8"))


def _complete(path: Path, assistant: bool) -> bool:
    try:
        manifest = _read_manifest(path)
    except (OSError, ValueError):
        return False
    return not assistant or "assistant" in manifest["models"]


def _open(config: WorldConfig, path: Path) -> ToyWorld:
    sets = {name: read_examples(path / f"{name}.jsonl") if (path / f"{name}.jsonl").stat().st_size > 1 else []
            for name in EXAMPLE_SETS}
    return ToyWorld(config=config, path=path, **sets)


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive ``flock`` for the block (no-op where fcntl is missing, i.e. Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_json(path: Path, data: object) -> None:
    """Write then rename, so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def _build_world(config: WorldConfig, path: Path, progress: Progress | None) -> None:
    from unlearn_kb.toyworld.generator import generate
    from unlearn_kb.toyworld.tokenizer import build_tokenizer

    started = time.perf_counter()
    _say(progress, f"generating toy world {config.key()}")
    data = generate(config)
    tokenizer = build_tokenizer(data.all_texts())
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        (staging / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
        for name in EXAMPLE_SETS:
            write_jsonl(staging / f"{name}.jsonl", data.examples[name])
        models = {which: _train_and_save(config, data, tokenizer, which, staging, progress)
                  for which in ("original", "reference")}
        manifest = {
            "format": FORMAT_VERSION,
            "key": config.key(),
            "config": config.to_dict(),
            "vocab_size": len(tokenizer),
            "entities": {split: len(entities) for split, entities in data.splits.items()},
            "examples": {name: len(data.examples[name]) for name in EXAMPLE_SETS},
            "models": models,
            "build_seconds": round(time.perf_counter() - started, 1),
        }
        _write_json(staging / MANIFEST, manifest)
        if path.exists():  # an interrupted build's leftovers (no manifest): replace them
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _say(progress, f"toy world ready in {path}")


def _build_assistant(config: WorldConfig, path: Path, progress: Progress | None) -> None:
    from transformers import AutoTokenizer

    from unlearn_kb.toyworld.generator import generate

    data = generate(config)
    tokenizer = AutoTokenizer.from_pretrained(path / "original")  # the very same vocabulary
    staging = Path(tempfile.mkdtemp(prefix=".assistant.", dir=path))
    try:
        record = _train_and_save(config, data, tokenizer, "assistant", staging, progress)
        target = path / "assistant"
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / "assistant", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = _read_manifest(path)
    manifest["models"]["assistant"] = record
    _write_json(path / MANIFEST, manifest)


# Different seeds per model, so the reference is not the original's twin minus the forget set
# by accident of initialisation, and the assistant is an independent small model.
_SEED_OFFSET = {"original": 0, "reference": 1, "assistant": 2}


def training_examples(config: WorldConfig, data: WorldData, which: str) -> list[Example]:
    """What a model learns: the reference never sees the forget facts; no model sees holdout."""
    examples = list(data.examples["retain"])
    if which != "reference":
        examples = data.examples["forget"] + examples
    if config.train_on_general:
        examples += data.examples["general"]
    return examples


def _train_and_save(config: WorldConfig, data: WorldData, tokenizer: PreTrainedTokenizerBase, which: str,
                    folder: Path, progress: Progress | None) -> dict[str, Any]:
    from unlearn_kb.engine.lm import LanguageModel
    from unlearn_kb.toyworld.generator import ATTRIBUTES
    from unlearn_kb.toyworld.training import epochs_of, recall, shape_of, train_model

    examples = training_examples(config, data, which)
    model, record = train_model(shape_of(config, which), tokenizer, examples, config,
                                epochs=epochs_of(config, which),
                                seed=config.seed * 1000 + _SEED_OFFSET[which], label=which, progress=progress)
    _say(progress, f"measuring recall of the {which} model")
    lm = LanguageModel(model=model, tokenizer=tokenizer, batch_size=256)
    record["recall"] = {
        split: {"train_templates": round(recall(lm, data.examples[split]), 4),
                "paraphrases": round(recall(lm, data.examples[f"{split}_paraphrased"]), 4)}
        for split in ("forget", "retain", "holdout")
    }
    record["chance"] = round(1 / min(len(a.values) for a in ATTRIBUTES[: config.n_attributes]), 4)
    with _quiet_transformers():
        model.save_pretrained(folder / which)
        tokenizer.save_pretrained(folder / which)
    return record
