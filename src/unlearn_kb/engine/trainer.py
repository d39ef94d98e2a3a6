"""The one training loop every gradient-based method runs through.

Written on ``accelerate``: the same code runs on the CPU, on one GPU, and under
``accelerate launch`` with several processes (the loaders are sharded, gradients are averaged,
only the main process logs). Per step it draws a forget batch (with the alternate answers of the
same questions when the method reads them) and a retain batch (the retain loader cycles when it
is shorter), asks the method for its loss terms through a :class:`~unlearn_kb.engine.method.Step`,
and takes an AdamW step on the trained parameters only.

Reference quantities: a method that reads only reference *sequence* log-probs (NPO, DPO) gets
them computed once per example with the starting model before the first update, and no copy of
the model is kept; a method that reads reference logits or hidden states at every step (KL,
UNDIAL, RMU) gets a frozen copy, or, in a LoRA run, the same model with its adapter switched
off (no copy); a method that reads neither gets nothing.
"""

from __future__ import annotations

import copy
import math
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader

from unlearn_kb.engine.checkpoint import (
    CheckpointPlan,
    StopRequests,
    TrainingState,
    capture,
    full_state_dict,
    random_states,
    restore,
    restore_random_states,
    save_checkpoint,
)
from unlearn_kb.engine.data import (
    IGNORE_INDEX,
    DataError,
    Encoded,
    Example,
    collate,
    encode_all,
    encode_example,
)
from unlearn_kb.engine.method import GradientMethod, LMForward, Reference, Step, decoder_layers
from unlearn_kb.errors import ConfigError, Interrupted, TrainingError

ProgressCallback = Callable[[dict[str, Any]], None]
"""Called after every optimizer step with that step's log record (``step``, ``total_steps``,
``loss`` and each term, ``lr``, ``grad_norm``, ``tokens_per_s``, ``seconds``)."""


@dataclass
class RunConfig:
    """Run settings shared by every method; each is overridable with ``--set key=value``.

    The defaults are open-unlearning's TOFU settings where it has one. A method's record may
    change them at toy scale (``implementation.toy_overrides``).
    """

    lr: float = 1e-5  # peak learning rate (TOFU and MUSE runs in open-unlearning)
    steps: int = 0  # optimizer steps; 0 derives them from `epochs`
    epochs: float = 10.0  # passes over the forget set when steps is 0 (TOFU: 10)
    batch_size: int = 8  # forget examples per micro-batch; retain batches have the same size
    grad_accum: int = 4  # micro-batches per optimizer step (open-unlearning: 8 x 4 = 32)
    max_length: int = 512  # tokens per example (TOFU's max_length); longer prompts lose their start
    warmup: float = 0.0  # fraction of the steps with a linear warm-up from 0
    schedule: Literal["constant", "linear", "cosine"] = "constant"  # after warm-up
    clip: float = 1.0  # maximum gradient norm; 0 disables clipping
    weight_decay: float = 0.01  # AdamW decoupled weight decay (TOFU: 0.01)
    reference_cache_mb: int = 2048  # memory for cached reference quantities (RMU's activations, KL/UNDIAL logits)
    forget_eos: bool = True  # the forget loss covers the end-of-sequence token after each answer, as in peer code
    checkpoint_every: int = 0  # also save a resumable checkpoint every N optimizer steps (0: only when stopped)
    gradient_checkpointing: bool = False  # recompute layer activations in the backward pass: less memory, ~30% more time
    shard_reference: bool = False  # several processes without FSDP (DDP): shard the frozen reference across them
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"  # autocast; auto: bf16 on GPUs, none on the CPU


@dataclass
class TrainResult:
    """What a training run did; the model itself was changed in place."""

    steps: int
    records: list[dict[str, Any]]
    reference: Literal["none", "cached", "live", "sharded"]
    """How reference quantities were obtained: not at all, precomputed once, from a frozen copy,
    or from a frozen copy sharded across the processes."""
    trained_parameters: int
    """Number of scalar parameters that received updates."""
    seconds: float
    tokens: int
    main_process: bool = True
    reference_forwards: dict[tuple[str, int], int] = field(default_factory=dict)
    """Per ``(batch, example index)``: how often the reference computed its sequence log-prob."""
    parallelism: str = "none"
    """How the processes split the work: "none", "DDP", "FSDP2" (or "FSDP1"), "DeepSpeed ZeRO-N"."""
    state_dict: dict[str, Any] | None = None
    """Under FSDP or DeepSpeed ZeRO-3, the full weights gathered on the main process for saving
    (the model's own parameters are shards there); ``None`` when the model itself is whole."""


def _alternate_answer(example: Example, index: int) -> str:
    alternate = example.extras.get("alternate")
    if isinstance(alternate, list) and alternate:
        alternate = alternate[index % len(alternate)]  # a fixed pick per example, as TOFU's random one
    if not isinstance(alternate, str) or not alternate.strip():
        raise DataError(
            f"forget example {index} has no 'alternate' answer; this method trains towards an "
            "alternate (refusal) answer, so every forget example needs one, e.g. "
            '{"question": ..., "answer": ..., "alternate": "I don\'t know."}'
        )
    return alternate


class _ForgetSet(torch.utils.data.Dataset):
    """Forget examples by index, with the alternate answer of the same question when needed."""

    def __init__(self, forget: list[Encoded], alternate: list[Encoded] | None):
        self.forget, self.alternate = forget, alternate

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, i: int) -> tuple[Encoded, Encoded | None]:
        return self.forget[i], self.alternate[i] if self.alternate is not None else None


def _without_final_eos(encoded: list[Encoded], eos_id: int | None) -> list[Encoded]:
    """The same examples with the label of a final end-of-sequence token masked out."""
    out = []
    for e in encoded:
        labels = list(e.labels)
        if eos_id is not None and labels and labels[-1] == eos_id:
            labels[-1] = IGNORE_INDEX
        out.append(Encoded(input_ids=e.input_ids, labels=labels, index=e.index))
    return out


def _forget_collate(pad_id: int) -> Callable[[list[tuple[Encoded, Encoded | None]]], dict[str, Any]]:
    def collate_pairs(rows: list[tuple[Encoded, Encoded | None]]) -> dict[str, Any]:
        out = {"forget": collate([f for f, _ in rows], pad_id)}
        if rows[0][1] is not None:
            out["alternate"] = collate([a for _, a in rows], pad_id)  # type: ignore[misc]
        return out
    return collate_pairs


def _cycle(loader: DataLoader) -> Iterator[Any]:
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def _schedule(run: RunConfig, total: int) -> Callable[[int], float]:
    warmup = int(round(run.warmup * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if run.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if run.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _chunks(items: Sequence[Encoded], size: int) -> Iterator[list[Encoded]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def _freeze(model: torch.nn.Module, names: list[str] | None) -> list[torch.nn.Parameter]:
    """Set ``requires_grad`` for the trained parameters only; return them."""
    params = dict(model.named_parameters())
    if names is None:
        names = list(params)
    unknown = sorted(set(names) - set(params))
    if unknown:
        raise ConfigError(f"the method asks to train parameters the model does not have: {unknown[:3]}")
    chosen = set(names)
    for name, p in params.items():
        p.requires_grad_(name in chosen)
    return [params[n] for n in params if n in chosen]


def _activation_checkpointing(model: torch.nn.Module, enable: bool) -> None:
    """Switch gradient (activation) checkpointing on or off, non-reentrant: correct when only some
    parameters (RMU's) need gradients. transformers 5 renamed the API; both names are accepted."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"{type(model).__name__} does not support gradient checkpointing")
    if hasattr(model, "activation_checkpointing_enable"):
        if enable:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif enable:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def _gathered_state(accelerator: Any, model: torch.nn.Module, forward: torch.nn.Module) -> dict[str, Any] | None:
    """The weights to save for a sharded run, gathered once on the main process; ``None`` when
    every process already holds the whole model (one process, DDP). Every process must call it.

    FSDP goes through :func:`full_state_dict` (tested on CPU processes with FSDP2); DeepSpeed
    ZeRO-3 through accelerate, which needs GPUs and is untested here.
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        state = full_state_dict(model)
    elif accelerator.distributed_type == DistributedType.DEEPSPEED:
        state = {name.removeprefix("lm."): tensor  # LMForward's prefix
                 for name, tensor in (accelerator.get_state_dict(forward) or {}).items()}
    else:
        return None
    return state if accelerator.is_main_process else None


def autocast_precision(setting: str) -> str:
    """The autocast precision a run uses: the setting, with ``auto`` = bf16 on a GPU, none on the CPU."""
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() else "no"


def _allow_precision(precision: str) -> None:
    """Let a single process train again with another autocast precision (``bench``, tests).

    accelerate keeps one accelerator state per process and refuses a second ``Accelerator`` with
    another ``mixed_precision``. A single-process state holds nothing else worth keeping, so it is
    cleared; the process group of a multi-process run (one precision throughout) is never touched.
    """
    from accelerate.state import AcceleratorState, PartialState

    if AcceleratorState._shared_state and PartialState().num_processes == 1 \
            and AcceleratorState().mixed_precision != precision:
        AcceleratorState._reset_state()


def parallelism(accelerator: Any) -> str:
    """A short name for how ``accelerator`` splits the work across processes (for the manifest)."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        return "FSDP2" if getattr(accelerator, "is_fsdp2", False) else "FSDP1"
    if kind == DistributedType.DEEPSPEED:
        return f"DeepSpeed ZeRO-{accelerator.state.deepspeed_plugin.zero_stage}"
    return "DDP" if accelerator.num_processes > 1 else "none"


def shard_frozen(model: torch.nn.Module, mesh: Any = None) -> torch.nn.Module:
    """Shard a frozen model across the processes with FSDP2 (``fully_shard``), layer by layer.

    Each process keeps 1/N of the weights; a forward gathers one decoder layer at a time and
    frees it again. Every process must call every forward (the gathers are collectives).
    ``mesh`` defaults to all processes on the current device type.
    """
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


class AdapterOffForward(LMForward):
    """The reference of a LoRA run: the trained module itself with its adapter switched off.

    LoRA starts at ``B = 0`` and never changes the base weights, so with the adapter off the model
    *is* the starting model, and no second copy of the weights is needed (the copy a full
    fine-tuning run keeps costs a whole model's memory). Runs without gradients, in eval mode.
    """

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                stop_at_layer: int | None = None) -> torch.Tensor:
        was_training = self.lm.training
        self.lm.eval()
        try:
            with torch.no_grad(), self.lm.disable_adapter():
                return super().forward(input_ids, attention_mask, stop_at_layer)
        finally:
            self.lm.train(was_training)


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of the starting model: the reference for objectives read at every step."""
    return copy.deepcopy(model).eval().requires_grad_(False)


def train(
    method: GradientMethod,
    config: Any,
    run: RunConfig,
    *,
    model: torch.nn.Module,
    tokenizer: Any,
    forget: Sequence[Example],
    retain: Sequence[Example] | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
    trainable: list[str] | None = None,
    checkpoint: CheckpointPlan | None = None,
    resume: TrainingState | None = None,
) -> TrainResult:
    """Unlearn ``forget`` from ``model`` (in place) with ``method``; return what happened.

    ``log`` receives every step's record (the run writes them as JSON lines); ``progress`` gets
    the same record, for a progress bar. A non-finite loss term or gradient norm stops the run with
    a :class:`~unlearn_kb.errors.TrainingError` naming the step and the term.

    Ctrl-C or SIGTERM stops the run after the current optimizer step with
    :class:`~unlearn_kb.errors.Interrupted`. With a ``checkpoint`` plan the state is saved first
    (also on divergence: the state after the last good step; and every ``checkpoint_every``
    steps); ``resume`` continues from such a state (:mod:`unlearn_kb.engine.checkpoint`).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if not forget:
        raise DataError("the forget set is empty")
    if run.batch_size < 1 or run.grad_accum < 1 or run.max_length < 2 or run.lr <= 0:
        raise ConfigError("batch_size, grad_accum must be >= 1, max_length >= 2 and lr > 0")
    needs_retain = method.needs_retain(config)
    if needs_retain and not retain:
        raise DataError(f"{type(method).__name__} has a retain term (alpha = {getattr(config, 'alpha', '?')}) "
                        "and needs retain data; give --retain, or --set alpha=0 to drop the term")

    # cpu=True lets torchrun start several CPU processes over gloo (accelerate only detects them so).
    precision = autocast_precision(run.mixed_precision)
    _allow_precision(precision)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision)
    set_seed(seed)
    device = accelerator.device
    pad_id = tokenizer.pad_token_id

    # -------------------------------------------------------------- what is trained
    # A LoRA adapter (engine.lora) decides what is trained; otherwise the method does.
    trained = _freeze(model, trainable if trainable is not None else method.trainable_parameters(model, config))
    if not trained:
        raise ConfigError("the method selected no parameters to train")
    model.to(device)
    generator = torch.Generator().manual_seed(seed)
    method.prepare(model, config, generator)

    # -------------------------------------------------------------- data
    forget_encoded = encode_all(tokenizer, forget, run.max_length)
    if not run.forget_eos:
        forget_encoded = _without_final_eos(forget_encoded, tokenizer.eos_token_id)
    alternate_encoded = None
    if method.uses_alternate:
        alternate_encoded = [encode_example(tokenizer, ex.with_answer(_alternate_answer(ex, i)), i, run.max_length)
                             for i, ex in enumerate(forget)]
    forget_loader = DataLoader(_ForgetSet(forget_encoded, alternate_encoded), batch_size=run.batch_size,
                               shuffle=True, collate_fn=_forget_collate(pad_id),
                               generator=torch.Generator().manual_seed(seed))
    retain_loader = None
    if needs_retain:
        retain_encoded = encode_all(tokenizer, list(retain or []), run.max_length)
        retain_loader = DataLoader(retain_encoded, batch_size=run.batch_size, shuffle=True,
                                   collate_fn=lambda rows: collate(rows, pad_id),
                                   generator=torch.Generator().manual_seed(seed + 1))

    # -------------------------------------------------------------- reference quantities
    forward = LMForward(model)
    reference: Reference | None = None
    mode: Literal["none", "cached", "live", "sharded"] = "none"
    live = method.uses_reference and method.live_reference(config)
    if method.uses_reference and (live or method.reference_sequences):
        cache_bytes = run.reference_cache_mb << 20
        if live and hasattr(model, "disable_adapter"):
            # A LoRA run: the starting model is the same module with its adapter off; no copy.
            reference, mode = Reference(AdapterOffForward(model), cache_bytes), "live"
        elif live and (getattr(accelerator, "is_fsdp2", False)
                       or (run.shard_reference and accelerator.num_processes > 1)):
            # Sharded (like the trained model under FSDP): each process holds 1/N of the frozen
            # weights. Every forward is then a collective, so nothing is cached (ranks would
            # disagree on hits and wait for each other forever).
            reference, mode = Reference(LMForward(shard_frozen(frozen_copy(model))), 0), "sharded"
        elif live:
            reference, mode = Reference(LMForward(frozen_copy(model)), cache_bytes), "live"
        else:
            # The starting model *is* the reference before the first update: no copy needed.
            reference, mode = Reference(forward, cache_bytes), "cached"
        was_training = model.training
        model.eval()
        with accelerator.autocast():
            for name in method.reference_sequences:
                encoded = forget_encoded if name == "forget" else alternate_encoded
                if encoded is None:
                    raise RuntimeError(f"reference_sequences names '{name}', which this run does not build")
                for chunk in _chunks(encoded, run.batch_size):
                    batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
                    reference.sequence_logprobs(name, batch)
        model.train(was_training)
        if not live:
            reference.release()

    # -------------------------------------------------------------- optimiser and schedule
    optimizer = torch.optim.AdamW(trained, lr=run.lr, weight_decay=run.weight_decay,
                                  fused=device.type == "cuda")
    if retain_loader is not None:
        forward, optimizer, forget_loader, retain_loader = accelerator.prepare(
            forward, optimizer, forget_loader, retain_loader)
    else:
        forward, optimizer, forget_loader = accelerator.prepare(forward, optimizer, forget_loader)
    total = run.steps or max(1, math.ceil(run.epochs * len(forget_loader) / run.grad_accum))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(run, total))
    forget_batches = _cycle(forget_loader)
    retain_batches = _cycle(retain_loader) if retain_loader is not None else None
    # FSDP2 replaces each parameter by a sharded one (and re-points the optimizer): read them again.
    named_trained = {name: p for name, p in model.named_parameters() if p.requires_grad}
    trained = list(named_trained.values())

    records: list[dict[str, Any]] = []
    first_step = 1
    if resume is not None:
        if resume.step >= total:
            raise ConfigError(f"the checkpoint is at step {resume.step}, and this run has {total} steps: nothing "
                              "is left to do (raise --steps to train further)")
        restore(resume, named_trained, optimizer, scheduler, run.lr, model=model)
        for _ in range(resume.step * run.grad_accum):  # replay the data order; no model work
            next(forget_batches)
            if retain_batches is not None:
                next(retain_batches)
        restore_random_states(resume.rng)
        records, first_step = list(resume.records), resume.step + 1
        if accelerator.is_main_process and log is not None:
            for record in records:
                log(record)

    def save_state(step: int, rng: dict[str, Any] | None = None) -> Any:
        """Save the state after ``step`` steps: every process calls it, the main one writes; return
        the folder, or None without a checkpoint plan."""
        if checkpoint is None:
            return None
        # Every process calls capture: a sharded model's weights are gathered collectively.
        state = capture(step, named_trained, optimizer, scheduler, records, checkpoint.identity,
                        model=model, main=accelerator.is_main_process)
        if state is not None:
            if rng is not None:
                state.rng = rng
            save_checkpoint(state, checkpoint.folder)
        accelerator.wait_for_everyone()
        return checkpoint.folder

    def diverged(step: int, what: str, value: float, rng: dict[str, Any] | None) -> TrainingError:
        # Parameters were last updated by a step with a finite loss and gradient: they are good.
        saved = save_state(step - 1, rng)
        kept = (f" The state after step {step - 1} is saved in {saved}: continue from it with --resume "
                f"{saved} and a lower --set lr=..." if saved is not None else "")
        return TrainingError(f"step {step}: {what} is {value}; the run diverged. Lower the learning rate "
                             f"(now {run.lr:g}, --set lr=...) or check the data.{kept}")

    def accumulate(step_number: int, step_rng: dict[str, Any] | None) -> tuple[dict[str, float], int]:
        """Forward and backward over ``grad_accum`` micro-batches; the loss terms and tokens."""
        sums: dict[str, float] = {}
        tokens = 0
        for micro in range(run.grad_accum):
            batches = dict(next(forget_batches))
            if retain_batches is not None:
                batches["retain"] = next(retain_batches)
            # Gradients are all-reduced on the last micro-batch only.
            with nullcontext() if micro == run.grad_accum - 1 else accelerator.no_sync(forward):
                with accelerator.autocast():
                    step = Step(forward, batches, reference, number=step_number, total=total)
                    terms = method.loss(step, config)
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach()) / run.grad_accum
                accelerator.backward(terms["loss"] / run.grad_accum)
            tokens += step.tokens
        if accelerator.num_processes > 1:
            # Log the global batch's loss, not the main process's shard of it.
            names = sorted(sums)
            local = torch.tensor([sums[n] for n in names] + [float(tokens)], device=device)
            summed = accelerator.reduce(local, reduction="sum")
            sums = {n: float(v) / accelerator.num_processes for n, v in zip(names, summed[:-1], strict=True)}
            tokens = int(summed[-1])
        # Checked on the global sums, so every process sees a non-finite term on any of them and
        # all stop together (before the optimizer step: the weights are still the last good ones).
        broken = [name for name, number in sums.items() if not math.isfinite(number)]
        if broken:  # name the term that broke, not only the total
            name = next((n for n in broken if n != "loss"), broken[0])
            raise diverged(step_number, f"loss term '{name}'", sums[name], step_rng)
        return sums, tokens

    def stop_signal(stops: StopRequests) -> int | None:
        """The signal that asked this run to stop, agreed across processes."""
        if accelerator.num_processes == 1:
            return stops.signal
        flag = accelerator.gather(torch.tensor([stops.signal or 0], device=device))
        return int(flag.max()) or None

    # -------------------------------------------------------------- the loop
    checkpointing = run.gradient_checkpointing
    if checkpointing:
        _activation_checkpointing(model, True)
    model.train()
    all_tokens = 0
    started = time.perf_counter()
    with StopRequests() as stops:
        for step_number in range(first_step, total + 1):
            step_rng = random_states() if checkpoint is not None else None
            step_started = time.perf_counter()
            sums, tokens = accumulate(step_number, step_rng)
            grad_norm = float(accelerator.clip_grad_norm_(trained, run.clip if run.clip > 0 else float("inf")))
            if not math.isfinite(grad_norm):
                raise diverged(step_number, "the gradient norm", grad_norm, step_rng)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            seconds = time.perf_counter() - step_started
            all_tokens += tokens
            record = {"step": step_number, "total_steps": total, **sums, "lr": lr,
                      "grad_norm": grad_norm, "tokens": tokens,
                      "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
                      "seconds": time.perf_counter() - started}
            if accelerator.is_main_process:
                records.append(record)
                if log is not None:
                    log(record)
                if progress is not None:
                    progress(record)

            stop = stop_signal(stops)
            if stop is not None and step_number < total:  # on the last step, finishing is quicker
                raise Interrupted(signal.Signals(stop).name, stop, step_number, total, save_state(step_number))
            if checkpoint is not None and run.checkpoint_every and step_number % run.checkpoint_every == 0 \
                    and step_number < total:
                save_state(step_number)

    accelerator.wait_for_everyone()
    full_state = _gathered_state(accelerator, model, forward)
    if getattr(accelerator, "is_fsdp2", False):
        # Keep the root's own weights (embeddings, final norm, head) whole, so that the model can be
        # called directly afterwards (evaluation); each decoder layer still gathers its shard in its
        # own forward, so every process must make the same calls.
        forward.unshard()
    if checkpointing:
        _activation_checkpointing(model, False)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return TrainResult(
        steps=total, records=records, reference=mode,
        trained_parameters=sum(p.numel() for p in trained),
        seconds=time.perf_counter() - started, tokens=all_tokens,
        main_process=accelerator.is_main_process, parallelism=parallelism(accelerator),
        state_dict=full_state,
        reference_forwards=dict(reference.forwards) if reference is not None else {},
    )
