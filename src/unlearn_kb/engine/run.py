"""Run one registered method end to end: resolve its settings, train, measure, save.

A method's settings come from four layers, later ones winning:

1. the method record's ``hyperparameters`` (the paper's defaults) for the method ``Config``, and
   the engine defaults of :class:`~unlearn_kb.engine.trainer.RunConfig` for the run settings (a
   record hyperparameter named like a run setting, e.g. ``lr``, sets that run setting);
2. the record's ``implementation.toy_overrides``, only when running on the toy world;
3. the user's ``--set key=value`` pairs, parsed to each field's type.

An unknown key or a value of the wrong type is a :class:`~unlearn_kb.errors.ConfigError` that
names the key and lists the valid ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import subprocess
import sys
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import import_module
from pathlib import Path
from typing import Any, Literal

from unlearn_kb.engine.data import Example, read_examples
from unlearn_kb.errors import ConfigError
from unlearn_kb.registry import Registry
from unlearn_kb.schema import Method, Status

# --------------------------------------------------------------------------- settings


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def describe_type(annotation: Any) -> str:
    """How a field's type reads in an error message."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(annotation))
    if origin is list:
        (inner,) = typing.get_args(annotation)
        return f"a comma-separated list of {describe_type(inner).removeprefix('a ').removeprefix('an ')}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        annotation, str(annotation))


def coerce(key: str, value: Any, annotation: Any) -> Any:
    """``value`` (from YAML or from the command line) as a value of type ``annotation``."""
    def wrong() -> ConfigError:
        return ConfigError(f"setting '{key}' expects {describe_type(annotation)}, got {value!r}")

    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value in choices:
            return value
        raise wrong()
    if origin is list:
        (inner,) = typing.get_args(annotation)
        if isinstance(value, str):
            text = value.strip().removeprefix("[").removesuffix("]")
            items: list[Any] = [part.strip() for part in text.split(",") if part.strip()]
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise wrong()
        try:
            return [coerce(key, item, inner) for item in items]
        except ConfigError:
            raise wrong() from None
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise wrong()
    if annotation in (int, float):
        numeric = int if annotation is int else int | float  # an int is a valid float, not vice versa
        if isinstance(value, numeric) and not isinstance(value, bool):
            return annotation(value)
        if isinstance(value, str):
            try:
                return annotation(value.strip())
            except ValueError:
                raise wrong() from None
        raise wrong()
    if annotation is str:
        if isinstance(value, str):
            return value
        raise wrong()
    raise ConfigError(f"setting '{key}' has a type the command line cannot set: {annotation}")


def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's field names and resolved type annotations."""
    hints = typing.get_type_hints(cls, globalns=vars(sys.modules[cls.__module__]))
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def parse_set_options(items: Sequence[str]) -> dict[str, str]:
    """``["beta=0.2", "lr=1e-4"]`` as a mapping; a malformed item is a ConfigError."""
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got '{item}'")
        parsed[key.strip()] = value.strip()
    return parsed


@dataclass
class Settings:
    """A method's resolved ``Config``, the run settings, and where each value came from."""

    config: Any
    run: Any
    sources: dict[str, str]


def resolve_settings(record: Method, config_cls: type, *, toy: bool,
                     overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build the method config and run config from the record, toy overrides and user overrides."""
    from unlearn_kb.engine.trainer import RunConfig

    method_fields = field_types(config_cls)
    run_fields = field_types(RunConfig)
    method_id = record.id
    overlap = set(method_fields) & set(run_fields)
    if overlap:
        raise ConfigError(f"method '{method_id}': config fields {sorted(overlap)} clash with run settings")

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for run_field in dataclasses.fields(RunConfig):
        values[run_field.name] = run_field.default
        sources[run_field.name] = "engine default"

    def set_value(key: str, value: Any, source: str, where: str) -> None:
        if key in method_fields:
            annotation = method_fields[key]
        elif key in run_fields:
            annotation = run_fields[key]
        else:
            valid = sorted(method_fields) + sorted(run_fields)
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{where}: unknown setting '{key}' for method '{method_id}'{hint}. Method settings: "
                f"{', '.join(sorted(method_fields)) or '(none)'}. Run settings: {', '.join(sorted(run_fields))}"
            )
        values[key] = None if value is None else coerce(key, value, annotation)
        sources[key] = source

    for hp in record.hyperparameters:
        set_value(hp.name, hp.default, "paper default (registry record)",
                  f"registry record '{method_id}' hyperparameters")
    missing = sorted(set(method_fields) - set(values))
    if missing:
        raise ConfigError(f"registry record '{method_id}' lacks hyperparameters {missing} that its "
                          f"implementation reads; add them with their paper defaults")
    if toy:
        for key, value in record.implementation.toy_overrides.items():
            set_value(key, value, "toy-world override (registry record)",
                      f"registry record '{method_id}' implementation.toy_overrides")
    for key, value in (overrides or {}).items():
        set_value(key, value, "--set", "--set")

    unset = sorted(k for k in method_fields if values[k] is None)
    if unset:
        raise ConfigError(f"method '{method_id}': {', '.join(unset)} has no default in the paper; "
                          f"give it with --set {unset[0]}=VALUE")
    config = config_cls(**{k: values[k] for k in method_fields})
    run = RunConfig(**{k: values[k] for k in run_fields})
    return Settings(config=config, run=run, sources=sources)


# --------------------------------------------------------------------------- methods


def runnable(registry: Registry) -> list[Method]:
    """Records with an implementation, sorted by id."""
    return sorted(registry.implemented(), key=lambda m: m.id)


def resolve_method(method_id: str, registry: Registry) -> tuple[Method, type]:
    """The record (by id or alias) and the method class its ``implementation.entry`` names: a
    :class:`~unlearn_kb.engine.method.GradientMethod` (the trainer runs its loss) or a
    :class:`~unlearn_kb.engine.method.BuildMethod` (its ``build`` returns the served model)."""
    from unlearn_kb.engine.method import BuildMethod, GradientMethod

    record = registry.method(method_id)
    impl = record.implementation
    if impl.status is not Status.implemented or not impl.entry:
        ids = ", ".join(m.id for m in runnable(registry)) or "(none yet)"
        raise ConfigError(f"method '{record.id}' has no runnable implementation here (status: "
                          f"{impl.status.value}); runnable methods: {ids}")
    module_name, _, attr = impl.entry.partition(":")
    try:
        cls = getattr(import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"registry record '{record.id}': implementation.entry '{impl.entry}' does "
                          f"not resolve ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, GradientMethod | BuildMethod)):
        raise ConfigError(f"registry record '{record.id}': '{impl.entry}' is neither a GradientMethod "
                          "nor a BuildMethod")
    return record, cls


def config_class(method_cls: type) -> type:
    """The module-level ``Config`` dataclass of a method's module."""
    config_cls = getattr(sys.modules[method_cls.__module__], "Config", None)
    if config_cls is None or not dataclasses.is_dataclass(config_cls):
        raise ConfigError(f"{method_cls.__module__} defines no Config dataclass")
    return config_cls


# --------------------------------------------------------------------------- measuring


def exact_match_recall(lm: Any, examples: Sequence[Example]) -> float | None:
    """Share of questions whose greedy answer is exactly the gold answer (the ``exact_match``
    metric of :mod:`unlearn_kb.evaluation.behaviour`); ``None`` for a set without questions."""
    from unlearn_kb.evaluation.behaviour import recall

    qa = [e for e in examples if e.is_qa]
    return recall(lm, qa).exact_match if qa else None


def _sample(examples: Sequence[Example], limit: int | None) -> list[Example]:
    """At most ``limit`` examples, evenly spread over the set (deterministic)."""
    if not limit or len(examples) <= limit:
        return list(examples)
    stride = len(examples) / limit
    return [examples[int(i * stride)] for i in range(limit)]


# --------------------------------------------------------------------------- provenance


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True,
                               timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "") if head else None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for name in ("unlearn-kb", "torch", "transformers", "accelerate", "tokenizers", "safetensors"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def _device() -> dict[str, Any]:
    import torch
    from accelerate import PartialState

    cuda = torch.cuda.is_available()
    return {"type": "cuda" if cuda else "cpu", "count": torch.cuda.device_count() if cuda else 1,
            "processes": PartialState(cpu=not cuda).num_processes,
            "name": torch.cuda.get_device_name(0) if cuda else "cpu"}


# --------------------------------------------------------------------------- the run


@dataclass
class RunResult:
    """What :func:`run_method` did and measured; ``model`` is the unlearned model (for a
    :class:`~unlearn_kb.engine.method.BuildMethod`, the served ``LanguageModel``, which may be a
    wrapper around the unchanged original)."""

    method: str
    entry: str
    config: dict[str, Any]
    run: dict[str, Any]
    sources: dict[str, str]
    seed: int
    toy: bool
    before: dict[str, float | None]
    after: dict[str, float | None]
    evaluated: dict[str, int]
    steps: int
    seconds: float
    reference: str
    trained_parameters: int
    records: list[dict[str, Any]]
    out: Path | None
    model: Any = field(repr=False, default=None)
    tokenizer: Any = field(repr=False, default=None)
    reference_forwards: dict[tuple[str, int], int] = field(repr=False, default_factory=dict)
    main_process: bool = True
    """False on the other processes of a multi-process run: only the main one reports."""


DataArg = str | Path | Sequence[Example] | None


def _examples(data: DataArg, what: str, provenance: dict[str, Any]) -> list[Example] | None:
    if data is None:
        return None
    if isinstance(data, str | Path):
        path = Path(data)
        examples = read_examples(path)
        provenance[what] = {"path": str(path), "sha256": _sha256(path), "examples": len(examples)}
        return examples
    examples = list(data)
    payload = json.dumps([[e.question, e.answer, e.text] for e in examples]).encode()
    provenance[what] = {"in_memory": True, "sha256": hashlib.sha256(payload).hexdigest(), "examples": len(examples)}
    return examples


def run_method(
    method_id: str,
    *,
    model: str | Path | None = None,
    forget: DataArg = None,
    retain: DataArg = None,
    holdout: DataArg = None,
    out: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    steps: int | None = None,
    seed: int = 0,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    lora: str | None = None,
    dtype: str = "float32",
    resume: str | Path | None = None,
    checkpoints: bool = True,
    eval_limit: int | None = 200,
    progress: Callable[[dict[str, Any]], None] | None = None,
    registry: Registry | None = None,
    world: Any = None,
) -> RunResult:
    """Unlearn with a registered method and measure forget / retain recall before and after.

    Without ``model`` the toy world supplies the original model and the data (``world`` may pass
    an already loaded one). ``forget``/``retain``/``holdout`` are JSON-lines files (or lists of
    examples). With ``out`` the unlearned model is saved there as a transformers checkpoint with
    ``manifest.json`` and ``log.jsonl``. ``eval_limit`` caps the examples recall is measured on.

    Ctrl-C or SIGTERM stops a gradient method's training after the current step and saves a
    checkpoint (``<out>.checkpoint``, or ``runs/<method>-<time>.checkpoint`` without ``out``);
    ``resume`` names such a checkpoint to continue from. The same method, model, data, seed and
    settings are required, except those in :data:`~unlearn_kb.engine.checkpoint.RESUMABLE_CHANGES`
    (e.g. lr); the result equals that of an uninterrupted run. A checkpoint is removed once its run
    has finished. ``checkpoints=False`` saves none (for callers that cannot resume a single run,
    such as ``bench``).
    """
    from unlearn_kb.engine.lm import LanguageModel
    from unlearn_kb.engine.models import OutputFolder, load_model, writes_output
    from unlearn_kb.engine.trainer import autocast_precision, train

    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    if registry is None:
        from unlearn_kb.cli.common import registry as shipped_registry

        registry = shipped_registry()
    record, method_cls = resolve_method(method_id, registry)
    toy = model is None
    all_overrides = dict(overrides or {})
    if steps is not None:
        all_overrides["steps"] = steps
    settings = resolve_settings(record, config_class(method_cls), toy=toy, overrides=all_overrides)
    method = method_cls()
    output = OutputFolder(out) if out is not None else None  # refuse a non-empty --out before training

    data: dict[str, Any] = {}
    forget_set = _examples(forget, "forget", data)
    retain_set = _examples(retain, "retain", data)
    _examples(holdout, "holdout", data)
    if toy:
        if world is None:
            from unlearn_kb.toyworld import WorldConfig, load_toyworld

            world = load_toyworld(WorldConfig())
        world_config = getattr(world, "config", None)
        data["toy_world"] = {
            "key": world_config.key() if hasattr(world_config, "key") else None,
            "config": world_config.to_dict() if hasattr(world_config, "to_dict") else None,
        }
        forget_set = forget_set if forget_set is not None else list(world.forget)
        retain_set = retain_set if retain_set is not None else list(world.retain)
        model_path: str | Path = world.original_path
    else:
        if forget_set is None:
            raise ConfigError("--forget is required with --model (the data to unlearn)")
        model_path = model  # type: ignore[assignment]
    if method.needs_retain(settings.config) and not retain_set:
        drop = " (or --set alpha=0 to run without its retain term)" if hasattr(settings.config, "alpha") else ""
        raise ConfigError(f"method '{record.id}' needs retain data: give --retain{drop}")

    from unlearn_kb.engine.checkpoint import CheckpointPlan, check_identity, load_checkpoint
    from unlearn_kb.engine.method import BuildMethod

    if resume is not None and isinstance(method, BuildMethod):
        raise ConfigError(f"'{record.id}' builds its result in several stages and cannot resume from a "
                          "checkpoint; run it again without --resume")
    identity = {"method": record.id, "config": dataclasses.asdict(settings.config),
                "run": dataclasses.asdict(settings.run), "seed": seed, "data": data, "model": str(model_path),
                "lora": lora}
    resumed = changed = None
    if resume is not None:
        resumed = load_checkpoint(Path(resume))
        changed = check_identity(resumed.identity, identity, Path(resume))
        checkpoint_folder = Path(resume)
    elif out is not None:
        checkpoint_folder = Path(out).parent / f"{Path(out).name}.checkpoint"
    else:
        checkpoint_folder = Path("runs") / f"{record.id}-{datetime.now().strftime('%Y%m%d-%H%M%S')}.checkpoint"
    plan = CheckpointPlan(checkpoint_folder, identity) if checkpoints else None

    lm_model, tokenizer = load_model(model_path, dtype=dtype, trust_remote_code=trust_remote_code,
                                     allow_pickle=allow_pickle)
    lora_spec = trainable = None
    if lora is not None:
        from unlearn_kb.engine.lora import add_adapter, parse_lora

        if isinstance(method, BuildMethod):
            raise ConfigError(f"--lora applies to gradient methods; '{record.id}' is not trained that way")
        lora_spec = parse_lora(lora)
        lm_model, trainable = add_adapter(lm_model, lora_spec, seed)
    context = getattr(lm_model.config, "max_position_embeddings", None)
    if isinstance(context, int) and settings.run.max_length > context:
        # Longer inputs would run past the positions the model was trained on: cap them, and say so.
        settings.sources["max_length"] = (f"the model's context ({context} tokens; the setting asked for "
                                          f"{settings.run.max_length})")
        settings.run.max_length = context
    lm = LanguageModel(lm_model, tokenizer, max_length=settings.run.max_length)
    sets = {"forget": _sample(forget_set, eval_limit), "retain": _sample(retain_set or [], eval_limit)}
    before = {name: exact_match_recall(lm, examples) for name, examples in sets.items()}

    def finish(log: Callable[[dict[str, Any]], None] | None) -> tuple[Any, dict[str, float | None]]:
        result = train(method, settings.config, settings.run, model=lm_model, tokenizer=tokenizer,
                       forget=forget_set, retain=retain_set, seed=seed, progress=progress, log=log,
                       trainable=trainable, checkpoint=plan, resume=resumed)
        after = {name: exact_match_recall(lm, examples) for name, examples in sets.items()}
        return result, after

    def manifest(result: Any, after: dict[str, float | None]) -> dict[str, Any]:
        return {
            "method": record.id, "entry": record.implementation.entry,
            "config": dataclasses.asdict(settings.config), "run": dataclasses.asdict(settings.run),
            "sources": settings.sources, "seed": seed, "toy_world": toy,
            "model": str(model_path), "data": data, "versions": _versions(),
            "device": {**_device(), "mixed_precision": autocast_precision(settings.run.mixed_precision),
                       "parallelism": result.parallelism},
            "git_revision": _git_revision(), "reference": result.reference,
            "trained_parameters": result.trained_parameters, "steps": result.steps,
            "recall": {"before": before, "after": after, "examples": {k: len(v) for k, v in sets.items()}},
            "lora": dataclasses.asdict(lora_spec) if lora_spec is not None else None,
            "resumed_from": None if resumed is None else {"checkpoint": str(resume), "step": resumed.step,
                                                          "changed_settings": changed},
            "started_at": started_at, "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - clock, 3),
        }

    clock = time.perf_counter()
    if isinstance(method, BuildMethod):
        return _run_build(method, record, settings, lm, sets, before, forget_set=forget_set,
                          retain_set=retain_set, seed=seed, world=world if toy else None, output=output,
                          progress=progress, clock=clock, describe=manifest, tokenizer=tokenizer)
    if not writes_output(output):
        result, after = finish(None)
    else:
        with output:
            with output.step_log() as write:
                result, after = finish(write)
            # A LoRA adapter is merged first; a sharded (FSDP / ZeRO-3) model saves its gathered weights.
            weights = result.state_dict
            if lora_spec is not None:
                from unlearn_kb.engine.lora import for_saving

                lm_model, weights = for_saving(lm_model, lora_spec, weights)
            output.save_model(lm_model, tokenizer, state_dict=weights)
            output.write_manifest(manifest(result, after))
    if result.main_process and plan is not None:
        import shutil

        shutil.rmtree(plan.folder, ignore_errors=True)  # the finished run supersedes its checkpoint

    return RunResult(
        method=record.id, entry=record.implementation.entry or "",
        config=dataclasses.asdict(settings.config), run=dataclasses.asdict(settings.run),
        sources=settings.sources, seed=seed, toy=toy, before=before, after=after,
        evaluated={k: len(v) for k, v in sets.items()}, steps=result.steps,
        seconds=time.perf_counter() - clock, reference=result.reference,
        trained_parameters=result.trained_parameters, records=result.records,
        out=output.out if output is not None else None, model=lm_model, tokenizer=tokenizer,
        reference_forwards=result.reference_forwards, main_process=result.main_process,
    )


def _run_build(method: Any, record: Method, settings: Settings, lm: Any, sets: dict[str, list[Example]],
               before: dict[str, float | None], *, forget_set: list[Example], retain_set: list[Example] | None,
               seed: int, world: Any, output: Any, progress: Any, clock: float,
               describe: Callable[[Any, dict[str, float | None]], dict[str, Any]], tokenizer: Any) -> RunResult:
    """The :class:`~unlearn_kb.engine.method.BuildMethod` path of :func:`run_method`.

    Saved to ``out``: a method that changed the weights (``intervention == "weights"``) gets a
    checkpoint, as a gradient method does; a wrapper gets no weights at all, since its weights
    *are* the original's, and the manifest says so (``weights``) next to the method's state
    (``state``, plus any files its ``save`` writes, e.g. a blocklist or the offset model).
    """
    from unlearn_kb.engine.models import is_main_process, writes_output
    from unlearn_kb.engine.trainer import TrainResult

    def finish(log: Callable[[dict[str, Any]], None] | None) -> tuple[Any, TrainResult, dict[str, float | None]]:
        built = method.build(lm, settings.config, settings.run, forget=forget_set, retain=retain_set, seed=seed,
                             world=world, log=log, progress=progress)
        trained = built.train or TrainResult(steps=0, records=[], reference="none", trained_parameters=0,
                                             seconds=0.0, tokens=0)
        after = {name: exact_match_recall(built.lm, examples) for name, examples in sets.items()}
        return built, trained, after

    if not writes_output(output):
        built, trained, after = finish(None)
    else:
        with output:
            with output.step_log() as write:
                built, trained, after = finish(write)
            changed = built.lm.intervention == "weights"
            if changed:
                output.save_model(built.lm.model, tokenizer)
            if built.save is not None:
                built.save(output.staging)
            manifest = describe(trained, after)
            manifest["intervention"] = built.lm.intervention
            manifest["weights"] = ("this folder (changed weights)" if changed else
                                   f"unchanged: the original model at {manifest['model']}")
            manifest["state"] = built.state
            output.write_manifest(manifest)

    return RunResult(
        method=record.id, entry=record.implementation.entry or "",
        config=dataclasses.asdict(settings.config), run=dataclasses.asdict(settings.run),
        sources=settings.sources, seed=seed, toy=world is not None, before=before, after=after,
        evaluated={k: len(v) for k, v in sets.items()}, steps=trained.steps,
        seconds=time.perf_counter() - clock, reference=trained.reference,
        trained_parameters=trained.trained_parameters, records=trained.records,
        out=output.out if output is not None else None, model=built.lm, tokenizer=tokenizer,
        reference_forwards=trained.reference_forwards, main_process=is_main_process(),
    )
