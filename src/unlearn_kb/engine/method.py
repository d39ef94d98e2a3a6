"""The contract between a method module and the engine.

A method module (``methods/<id>.py``, shipped as ``unlearn_kb.methods.<id>``) holds, in order:

1. a docstring: the method in one sentence, the paper and its arXiv id, the objective in the
   paper's notation, and where the code departs from the usual reference implementation and why;
2. ``Config``: a dataclass whose fields have **no defaults**. The defaults are the method record's
   ``hyperparameters`` (the paper's values), so they are written once, in the registry; field
   comments say what each field is;
3. the objective as pure functions of tensors (token log-probs, logits, hidden states, masks),
   with shapes in comments, so tests can check them against values computed by hand;
4. a class deriving from :class:`GradientMethod` that declares what the objective needs
   (``uses_reference``, ``uses_retain``, ``uses_alternate``, optionally the trainable parameters)
   and turns a :class:`Step` into loss terms; or, for a method that is not one loss over one
   model (weight arithmetic, an output filter, a logit offset), a class deriving from
   :class:`BuildMethod` whose ``build`` returns the served model (see there).

No loops, data loading or model building live in a method module: they belong to the trainer
(:mod:`unlearn_kb.engine.trainer`).

The :class:`Step` is how a method reads the models. Every quantity is computed on first use and
memoised for the rest of the step, so two terms reading the same log-probs share one forward
pass, and a quantity no term reads is never computed (a retain weight of 0 costs nothing).
Reference quantities come from :class:`Reference`: sequence log-probs of the frozen starting
model are cached per example (NPO and DPO compute them once, not at every step), hidden states
are cached while they fit in a memory budget, and logits are computed live without gradients.
A method whose objective reads no reference never causes one to be built.

Conventions shared by every method (and by the tests):

- batches are right-padded; ``labels`` are ``-100`` on prompt and padding tokens
  (:data:`unlearn_kb.engine.data.IGNORE_INDEX`);
- positions are *shifted*: position ``t`` of ``logits``/``token_logprobs``/``mask`` is the
  prediction of token ``t + 1``, so every per-token tensor is ``(B, T - 1)``;
- ``mask`` marks the tokens the loss covers (answer tokens, or every token of a plain text);
  ``attention`` marks every real (non-padding) predicted token, prompt included.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from unlearn_kb.engine.data import IGNORE_INDEX
from unlearn_kb.errors import ConfigError

Batch = Mapping[str, torch.Tensor]
"""``input_ids``, ``attention_mask``, ``labels`` (all ``(B, T)``) and ``index`` ``(B,)``."""

BATCH_NAMES = ("forget", "retain", "alternate")
"""The batches a step may hold: forget examples, retain examples, and the forget questions with
their alternate (refusal) answers, row-aligned with the forget batch."""


# --------------------------------------------------------------------------- reductions


def token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over every masked position of the batch (HF's ``outputs.loss`` convention).

    ``values`` and ``mask`` are ``(B, T)``; masked-out positions may hold anything, even inf.
    """
    picked = torch.where(mask, values, torch.zeros_like(values))
    return picked.sum() / mask.sum().clamp(min=1)


def sequence_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sequence's masked positions, then over the sequences that have any.

    This is the papers' ``E_{(x,y)} (1/|y|) sum_t``; a sequence with no masked position is
    left out rather than counted as zero. ``values``, ``mask``: ``(B, T)``; returns a scalar.
    """
    picked = torch.where(mask, values, torch.zeros_like(values))
    counts = mask.sum(-1)  # (B,)
    per_sequence = picked.sum(-1) / counts.clamp(min=1)  # (B,)
    present = counts > 0
    if not bool(present.any()):
        return picked.sum() * 0.0  # keeps the graph, so backward() still works
    return per_sequence[present].mean()


def nll(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood, token-mean over the batch's masked tokens (the usual retain term).

    ``token_logprobs``, ``mask``: ``(B, T)``.
    """
    return -token_mean(token_logprobs, mask)


def kl_divergence(reference_logits: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(pi_ref || pi_theta) of the next-token distributions, token-mean over ``mask``.

    ``reference_logits``, ``logits``: ``(B, T, V)``; ``mask``: ``(B, T)``. The peer code
    (``F.kl_div(..., reduction="batchmean")`` on flattened positions) also averages over padding;
    here padding is masked out.
    """
    log_p_ref = torch.log_softmax(reference_logits.float(), dim=-1)  # (B, T, V)
    log_p = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    per_token = (log_p_ref.exp() * (log_p_ref - log_p)).sum(-1)  # (B, T)
    return token_mean(per_token, mask)


def with_total(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{"loss": sum of the terms, **terms}``: what :meth:`GradientMethod.loss` returns."""
    return {"loss": sum(terms.values()), **terms}  # type: ignore[dict-item]


def label_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position, 0 where the target is ``IGNORE_INDEX``.

    ``logits``: ``(B, T, V)``; ``targets``: ``(B, T)``; returns ``(B, T)`` in float32.
    """
    return -F.cross_entropy(
        logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )


# --------------------------------------------------------------------------- forward passes


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder's list of layers (``model.model.layers`` for Llama, Mistral, Qwen, ...)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ConfigError(
            f"this method reads hidden states at a layer, which needs a decoder with a '.layers' "
            f"list (Llama-style); {type(model).__name__} has none"
        )
    return layers


def decoder_layers_prefix(model: torch.nn.Module) -> str:
    """The parameter-name prefix of the decoder layers, e.g. ``model.layers``."""
    layers = decoder_layers(model)
    for name, module in model.named_modules():
        if module is layers:
            return name
    raise ConfigError(f"cannot locate the decoder layers of {type(model).__name__}")


def hidden_at_layer(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int
) -> torch.Tensor:
    """The residual stream after decoder layer ``layer`` (0-based), ``(B, T, H)``.

    Layers above ``layer`` never run: for the duration of the call the decoder holds only the
    layers up to it, and the LM head scores one position per row (``logits_to_keep=1``). The
    pass goes through the model's own ``forward``, so the hooks of FSDP, DDP and peft wrappers all
    run as usual (a pass aborted by an exception would leave a sharded model half-gathered). This
    equals ``output_hidden_states[layer + 1]`` of a full pass (the WMDP code's ``layers[layer]``).
    """
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise ConfigError(f"layer {layer} does not exist: the model has {len(layers)} decoder layers "
                          f"(0..{len(layers) - 1})")
    decoder = model.get_decoder()
    with keep_outputs({"hidden": layers[layer]}) as kept:
        decoder.layers = layers[: layer + 1]  # a shorter ModuleList of the same modules
        try:
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=1)
        finally:
            decoder.layers = layers
    return kept["hidden"]


@contextmanager
def keep_outputs(modules: Mapping[Hashable, torch.nn.Module]) -> Iterator[dict[Hashable, torch.Tensor]]:
    """While open, every forward of ``modules[key]`` stores its output (first element of a tuple) under ``key``."""
    kept: dict[Hashable, torch.Tensor] = {}

    def keeper(key: Hashable) -> Any:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            kept[key] = output[0] if isinstance(output, tuple) else output
        return hook

    handles = [module.register_forward_hook(keeper(key)) for key, module in modules.items()]
    try:
        yield kept
    finally:
        for handle in handles:
            handle.remove()


class LMForward(torch.nn.Module):
    """The trained model behind one forward signature: logits, or hidden states at a layer.

    ``accelerate`` wraps this module (DDP, FSDP), so every forward that produces gradients goes
    through the wrapper, including the early-stopping one RMU uses: a hook that aborted the
    forward of a DDP-wrapped model would skip DDP's bookkeeping and silently skip the gradient
    all-reduce.
    """

    def __init__(self, lm: torch.nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                stop_at_layer: int | None = None) -> torch.Tensor:
        if stop_at_layer is not None:
            return hidden_at_layer(self.lm, input_ids, attention_mask, stop_at_layer)  # (B, T, H)
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits  # (B, T, V)


# --------------------------------------------------------------------------- reference quantities


class Reference:
    """What the frozen starting model says, computed as rarely as possible.

    - sequence log-probs: cached per ``(batch name, example index)`` forever; a run whose
      objective needs nothing else precomputes them in one pass and drops the model
      (:meth:`release`), so NPO and DPO never hold a second copy of the weights;
    - hidden states at a layer and logits: cached per example (real tokens only) while the cache
      stays under ``cache_bytes`` (RMU's retain activations; UNDIAL's teacher and the KL anchor from
      the second epoch on), else recomputed. Logits are ``T x V`` per example, so for a large
      vocabulary the budget holds few of them and the rest are computed live, without gradients.

    ``forwards`` counts, per ``(name, index)``, how often an example went through the reference
    model for its sequence log-prob; tests use it to prove "once per example".
    """

    def __init__(self, model: Callable[..., torch.Tensor] | None, cache_bytes: int = 2 << 30):
        self.model = model
        self.cache_bytes = cache_bytes
        self.cached_bytes = 0
        self._sequences: dict[tuple[str, int], torch.Tensor] = {}
        self._cache: dict[tuple[Any, ...], torch.Tensor] = {}
        self.forwards: Counter[tuple[str, int]] = Counter()

    def _require_model(self, what: str) -> Callable[..., torch.Tensor]:
        if self.model is None:
            raise RuntimeError(f"reference {what} asked for after the reference model was released; "
                               "the method's live_reference() must return True for it")
        return self.model

    def release(self) -> None:
        """Drop the model; only cached sequence log-probs stay available."""
        self.model = None

    @torch.no_grad()
    def sequence_logprobs(self, name: str, batch: Batch) -> torch.Tensor:
        """Summed label log-probs per sequence, ``(B,)``, each example computed once."""
        indices = batch["index"].tolist()
        missing = [row for row, i in enumerate(indices) if (name, i) not in self._sequences]
        if missing:
            model = self._require_model("sequence log-probs")
            rows = torch.tensor(missing, device=batch["input_ids"].device)
            ids, attention = batch["input_ids"][rows], batch["attention_mask"][rows]
            width = int(attention.sum(-1).max())  # right padding: trim shared padding columns
            logits = model(ids[:, :width], attention[:, :width])  # (b, t, V)
            targets = batch["labels"][rows][:, 1:width]  # (b, t-1)
            values = label_logprobs(logits[:, :-1], targets).sum(-1)  # (b,)
            for row, value in zip(missing, values, strict=True):
                self._sequences[(name, indices[row])] = value.detach()
                self.forwards[(name, indices[row])] += 1
        return torch.stack([self._sequences[(name, i)] for i in indices])

    def _cached_rows(self, key: tuple[Any, ...], batch: Batch,
                     compute: Callable[[Callable[..., torch.Tensor]], torch.Tensor], width: int) -> torch.Tensor:
        """Per-example rows of a reference quantity, cached while they fit; ``(B, width, ...)``.

        ``compute(model)`` gives the quantity for the whole batch, ``(B, width, ...)``; row ``b``
        keeps its first ``real_b`` positions, where ``real_b`` counts the row's real tokens
        (minus one for shifted quantities, as ``width`` says), so padding is never stored.
        """
        indices = batch["index"].tolist()
        shift = batch["input_ids"].shape[1] - width
        lengths = [n - shift for n in batch["attention_mask"].sum(-1).tolist()]
        keys = [(*key, i) for i in indices]
        if all(k in self._cache for k in keys):
            rows = [self._cache[k] for k in keys]
        else:
            full = compute(self._require_model(str(key[0])))
            rows = [full[row, :n] for row, n in enumerate(lengths)]
            for k, value in zip(keys, rows, strict=True):
                size = value.numel() * value.element_size()
                if k not in self._cache and self.cached_bytes + size <= self.cache_bytes:
                    self._cache[k] = value.clone()
                    self.cached_bytes += size
        out = rows[0].new_zeros((len(rows), width, *rows[0].shape[1:]))
        for row, value in enumerate(rows):
            out[row, : value.shape[0]] = value
        return out

    @torch.no_grad()
    def logits(self, name: str, batch: Batch) -> torch.Tensor:
        """Reference logits aligned with the shifted targets, ``(B, T - 1, V)``; padding rows are 0."""
        width = batch["input_ids"].shape[1] - 1
        return self._cached_rows(
            ("logits", name), batch,
            lambda model: model(batch["input_ids"], batch["attention_mask"])[:, :-1], width)

    @torch.no_grad()
    def hidden(self, name: str, batch: Batch, layer: int) -> torch.Tensor:
        """Reference hidden states after decoder layer ``layer``, ``(B, T, H)``; padding rows are 0."""
        width = batch["input_ids"].shape[1]
        return self._cached_rows(
            ("hidden states", name, layer), batch,
            lambda model: model(batch["input_ids"], batch["attention_mask"], stop_at_layer=layer), width)


# --------------------------------------------------------------------------- the step


class Step:
    """One micro-batch: memoised access to every quantity an objective may read.

    ``which`` names a batch: ``"forget"``, ``"retain"`` or ``"alternate"`` (the forget questions
    with their alternate answers, row-aligned with ``"forget"``). Current-model quantities carry
    gradients; reference quantities do not.
    """

    def __init__(self, model: Callable[..., torch.Tensor], batches: Mapping[str, Batch],
                 reference: Reference | None = None, number: int = 0, total: int = 0):
        self.number = number  # this optimizer step, 1-based
        self.total = total  # optimizer steps in the run (schedules that depend on t / T read it)
        self._model = model
        self._batches = batches
        self._reference = reference
        self._memo: dict[tuple[Any, ...], torch.Tensor] = {}

    def _memoised(self, key: tuple[Any, ...], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def batch(self, which: str) -> Batch:
        if which not in self._batches:
            raise RuntimeError(f"the objective reads the '{which}' batch, which this run does not have; "
                               "the method must declare it (uses_retain / uses_alternate)")
        return self._batches[which]

    def has(self, which: str) -> bool:
        return which in self._batches

    @property
    def reference(self) -> Reference:
        if self._reference is None:
            raise RuntimeError("the objective reads the reference model, which this run did not build; "
                               "the method must declare uses_reference = True")
        return self._reference

    # ---------------------------------------------------------------- targets and masks

    def targets(self, which: str) -> torch.Tensor:
        """Next-token targets ``(B, T - 1)``, ``-100`` where no loss applies."""
        return self.batch(which)["labels"][:, 1:]

    def mask(self, which: str) -> torch.Tensor:
        """Tokens the loss covers (answer tokens, or all tokens of a text), ``(B, T - 1)`` bool."""
        return self._memoised(("mask", which), lambda: self.targets(which) != IGNORE_INDEX)

    def attention(self, which: str) -> torch.Tensor:
        """Every real predicted token, prompt included, padding excluded: ``(B, T - 1)`` bool."""
        return self._memoised(("attention", which), lambda: self.batch(which)["attention_mask"][:, 1:].bool())

    # ---------------------------------------------------------------- current model

    def logits(self, which: str) -> torch.Tensor:
        """Current-model logits aligned with :meth:`targets`, ``(B, T - 1, V)``."""
        def compute() -> torch.Tensor:
            batch = self.batch(which)
            return self._model(batch["input_ids"], batch["attention_mask"])[:, :-1]
        return self._memoised(("logits", which), compute)

    def token_logprobs(self, which: str) -> torch.Tensor:
        """log p_theta of each target token, ``(B, T - 1)`` float32, 0 where masked out."""
        return self._memoised(("token_logprobs", which),
                              lambda: label_logprobs(self.logits(which), self.targets(which)))

    def sequence_logprobs(self, which: str) -> torch.Tensor:
        """log pi_theta(y | x): token log-probs summed over each sequence's masked tokens, ``(B,)``."""
        return self._memoised(("sequence_logprobs", which), lambda: self.token_logprobs(which).sum(-1))

    def hidden(self, which: str, layer: int) -> torch.Tensor:
        """Current-model residual stream after decoder layer ``layer``, ``(B, T, H)``.

        The forward pass stops at that layer; nothing above it runs.
        """
        def compute() -> torch.Tensor:
            batch = self.batch(which)
            return self._model(batch["input_ids"], batch["attention_mask"], stop_at_layer=layer)
        return self._memoised(("hidden", which, layer), compute)

    # ---------------------------------------------------------------- reference model

    def reference_sequence_logprobs(self, which: str) -> torch.Tensor:
        """log pi_ref(y | x), ``(B,)``, cached per example for the whole run."""
        return self._memoised(("reference_sequence_logprobs", which),
                              lambda: self.reference.sequence_logprobs(which, self.batch(which)))

    def reference_logits(self, which: str) -> torch.Tensor:
        """Reference logits aligned with :meth:`targets`, ``(B, T - 1, V)``, no gradient."""
        return self._memoised(("reference_logits", which), lambda: self.reference.logits(which, self.batch(which)))

    def reference_hidden(self, which: str, layer: int) -> torch.Tensor:
        """Reference residual stream after decoder layer ``layer``, ``(B, T, H)``, no gradient."""
        return self._memoised(("reference_hidden", which, layer),
                              lambda: self.reference.hidden(which, self.batch(which), layer))

    @property
    def tokens(self) -> int:
        """Real tokens in this step's batches (for tokens/s)."""
        return int(sum(int(b["attention_mask"].sum()) for b in self._batches.values()))


# --------------------------------------------------------------------------- the method


class GradientMethod:
    """Base class of every gradient-based method.

    Subclasses set the class attributes that describe what the objective reads, and implement
    :meth:`loss`. The engine reads the declarations before training: it builds a reference model
    only for ``uses_reference``, loads retain data only when :meth:`needs_retain`, and builds the
    alternate batch only for ``uses_alternate``. The method's config class is the module-level
    ``Config`` dataclass of its module.
    """

    uses_reference: ClassVar[bool] = False
    """The objective reads the frozen starting model (log-ratios, KL, teacher logits, activations)."""
    uses_retain: ClassVar[bool] = False
    """The objective has a retain term, weighted by ``config.alpha``."""
    uses_alternate: ClassVar[bool] = False
    """The objective reads each forget question's alternate answer (``extras["alternate"]``)."""
    reference_sequences: ClassVar[tuple[str, ...]] = ()
    """Batches whose reference sequence log-probs the objective reads; the engine computes them
    once per example before training."""

    def needs_retain(self, config: Any) -> bool:
        """Whether this run needs retain data: a retain term with a non-zero weight."""
        return self.uses_retain and getattr(config, "alpha", 1.0) != 0

    def live_reference(self, config: Any) -> bool:
        """Whether :meth:`loss` reads reference logits or hidden states at every step.

        When False, only the cached sequence log-probs of ``reference_sequences`` are read: the
        engine computes them with the starting model before the first update and keeps no copy.
        """
        return self.uses_reference and not self.reference_sequences

    def trainable_parameters(self, model: torch.nn.Module, config: Any) -> list[str] | None:
        """Names of the parameters to train; ``None`` trains them all."""
        return None

    def prepare(self, model: torch.nn.Module, config: Any, generator: torch.Generator) -> None:
        """One-time set-up before the first step (e.g. RMU's random control vector)."""

    def loss(self, step: Step, config: Any) -> dict[str, torch.Tensor]:
        """``{"loss": total}`` plus each term under its own name, for the log."""
        raise NotImplementedError


# --------------------------------------------------------------------------- methods without a loss per step


@dataclass
class Built:
    """What a :class:`BuildMethod` returns.

    ``lm`` is the model as served: the original's :class:`~unlearn_kb.engine.lm.LanguageModel`
    with changed weights (``lm.intervention == "weights"``; the run saves a checkpoint), or a
    wrapper around the unchanged weights (the run saves only a manifest that says so, plus what
    ``save`` writes: the wrapper's own state). ``train`` is the engine training run inside the
    build, if there was one; ``state`` is a JSON summary of the method's state for the manifest.
    """

    lm: Any
    train: Any = None
    state: dict[str, Any] = field(default_factory=dict)
    save: Callable[[Path], None] | None = None


class BuildMethod:
    """Base class of methods that build their result instead of giving the trainer a loss.

    Weight arithmetic (task vectors), output filters and logit offsets do not fit one objective
    over one model: they fine-tune a copy and subtract, wrap the frozen model, or train a second
    model. :meth:`build` receives the original model and the data and returns a :class:`Built`;
    it may call :func:`unlearn_kb.engine.trainer.train` for any training it needs, so the loop
    still lives in one place. The config class is the module-level ``Config`` dataclass, resolved
    from the record exactly as for a :class:`GradientMethod`; ``run`` holds the run settings.
    """

    uses_reference: ClassVar[bool] = False
    """Kept in step with the record's ``requirements.reference_model``."""

    def needs_retain(self, config: Any) -> bool:
        """Whether this run needs retain data."""
        return False

    def build(self, original: Any, config: Any, run: Any, *, forget: Sequence[Any],
              retain: Sequence[Any] | None, seed: int, world: Any = None,
              log: Callable[[dict[str, Any]], None] | None = None,
              progress: Callable[[dict[str, Any]], None] | None = None) -> Built:
        """Unlearn ``forget`` from ``original`` (a LanguageModel; changing it in place is allowed)."""
        raise NotImplementedError
