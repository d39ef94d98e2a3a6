"""ROME used for deletion: a closed-form rank-one edit of one MLP layer per fact, so the fact's answer goes.

Papers: Meng, Bau, Andonian, Belinkov, "Locating and Editing Factual Associations in GPT", NeurIPS 2022,
arXiv 2202.05262 (official code kmeng01/rome: ``rome/rome_main.py``, ``compute_u.py``, ``compute_v.py``);
used for deletion by Patil, Hase, Bansal, "Can Sensitive Information Be Deleted From LLMs? Objectives
for Defending Against Extraction Attacks", ICLR 2024, arXiv 2309.17410 (code Vaidehi99/InfoDeletionAttacks,
``third_party/rome/compute_v.py`` and ``experiments/evaluate.py``, the ``--fact_erasure`` branch).

The MLP output projection W (Llama: ``mlp.down_proj``, ``W: R^{d_ff} -> R^{d}``) is read as a linear
key-value memory. For a fact (s, r, o) with subject s:

    k_* = 1/N sum_j k(x_j)             key: down_proj's input act(gate(h)) * up(h) at s's last token,
                                       averaged over N prompts x_j that name s (paper Eq. 3)
    v_* = W k_* + delta_*,  delta_* = argmin_delta  L_del(delta)
                                       + kl_factor * KL( P_delta[. | p'] || P[. | p'] )
                                       + v_weight_decay * ||delta|| / ||W k_*||^2,
          with ||delta|| <= clamp_norm_factor * ||W k_*||  (projected after each Adam step)
    W'  = W + Lambda (C^{-1} k_*)^T,   Lambda = (v_* - W k_*) / ((C^{-1} k_*)^T k_*)      (paper Eq. 2)
    C   = E[k k^T]                     uncentred second moment of down_proj keys (ROME: Wikipedia)

so that W' k_* = v_* exactly, while a key k with (C^{-1} k_*)^T k = 0 keeps its output: the change
is the smallest one in the metric that C defines over the keys the model sees. ``delta`` is added to
the MLP output at the subject's last token of every prompt (and of the KL prompt p'); the logits
are the model's final ones (``v_loss_layer`` = the last layer in the official configs).

The deletion loss L_del follows Patil et al.'s code (``fact_erasure``): with
``nll_j = -(1/|o|) sum_t log P(o_t | x_j, o_<t)``, L_del = exp(-mean_j nll_j), i.e. the probability of
the true answer is minimised, and every one of the ``v_num_grad_steps`` Adam steps is taken (their
branch skips ROME's early stop). ``target: alternate`` instead uses ROME's own editing loss,
mean_j nll_j towards the example's ``alternate`` answer (a refusal such as "I am not sure"), with
ROME's early stop (loss < 0.05) and its last-iteration break.

Departures from the official code, and why:

- prompts: ROME averages k_* and optimises v_* over random generated prefixes ("context templates")
  of one prompt; here the N prompts are the fact's own phrasings in the forget set (the toy world
  has 5 per fact), wrapped in the chat/QA prompt the model answers. A model trained only on
  question-answer text has no free-text prefixes to sample;
- v_* = W k_* + delta uses the mean key (ROME adds delta to the output at the un-prefixed prompt and
  divides by that prompt's key). With one key for u and for the division, the constraint
  W' k_* = v_* holds exactly (the inconsistency r-ROME, arXiv 2403.07175, identified is avoided);
- KL prompt: ROME's "{subject} is a", wrapped in the QA prompt; only its tokens up to the subject
  matter, since the KL is taken at the subject's last token of a causal model;
- C is estimated from the retain set's questions and answers (every real token), not 100k
  Wikipedia samples, and ``mom2_ridge`` * mean(diag C) * I is added before solving (0 in the paper,
  where C is full rank; a toy model's few thousand keys can leave it ill-conditioned);
- facts are edited one after another, each on the model the previous edits left (as
  ``apply_rome_to_model`` loops over requests); C is computed once, on the original model, as the
  official code caches it. A fact is the set of forget examples sharing ``extras['fact_id']`` (else
  the same subject and answer); the subject is ``extras['entity']`` (or ``extras['subject']``).
- the inner search for delta is a short Adam loop over one vector per fact (as in ``compute_v.py``),
  not model training, so it does not go through the engine's trainer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch

from unlearn_kb.engine.data import IGNORE_INDEX, DataError, Example, collate, encode_all, prompt_text
from unlearn_kb.engine.lm import LanguageModel
from unlearn_kb.engine.method import BuildMethod, Built, decoder_layers, hidden_at_layer
from unlearn_kb.errors import ConfigError

Target = Literal["erase", "alternate"]
Unit = Literal["fact", "subject"]


@dataclass(frozen=True)
class Config:
    layers: list[int]  # decoder layers whose mlp.down_proj is edited (ROME edits one; GPT-J: 5)
    v_num_grad_steps: int  # Adam steps of the search for delta (v_* = W k_* + delta)
    v_lr: float  # Adam learning rate of that search
    v_weight_decay: float  # weight of ||delta|| / ||W k_*||^2 in the search's loss
    clamp_norm_factor: float  # ||delta|| is projected to at most this times ||W k_*||
    kl_factor: float  # weight of KL(P_delta || P) at the subject token of the "{subject} is a" prompt
    target: Target  # "erase": minimise p(answer) (Patil et al.); "alternate": maximise p(alternate answer)
    mom2_ridge: float  # C + mom2_ridge * mean(diag C) * I before solving (0 in the official code)
    edit_unit: Unit  # one edit per "fact" (ROME's request), or per "subject" (all its forget facts at once)


# --------------------------------------------------------------------------- the closed-form updates


def rome_update(weight: torch.Tensor, cov: torch.Tensor | None, key: torch.Tensor, value: torch.Tensor,
                cov_inverse: torch.Tensor | None = None) -> torch.Tensor:
    """ROME's rank-one change ``Lambda (C^{-1} k)^T`` that makes ``(W + change) k = value``.

    ``weight``: ``(d_out, d_in)`` (torch's Linear layout, W k = weight @ k); ``cov``: ``(d_in, d_in)``;
    ``key``: ``(d_in,)``; ``value``: ``(d_out,)``. Returns ``(d_out, d_in)``, computed in float64.
    C never changes during a run: pass ``cov_inverse`` (float64 C^{-1}, computed once per layer as
    ``compute_u.get_inv_cov`` does) instead of ``cov`` to skip the solve for every edit.
    """
    w, k, v = weight.double(), key.double(), value.double()
    # (d_in,) C^{-1} k
    u = cov_inverse.to(k.device) @ k if cov_inverse is not None else torch.linalg.solve(cov.double(), k)
    lam = (v - w @ k) / (u @ k)  # (d_out,)
    return torch.outer(lam, u)  # (d_out, d_in)


def memit_update(weight: torch.Tensor, cov: torch.Tensor, keys: torch.Tensor, residuals: torch.Tensor,
                 mom2_update_weight: float) -> torch.Tensor:
    """MEMIT's batched least-squares change ``R K^T (lambda C + K K^T)^{-1}``.

    It minimises ``||(W + change) K - (W K + R)||^2 + lambda tr(change C change^T)`` (MEMIT Eq. 14).
    ``weight``: ``(d_out, d_in)``; ``cov``: ``(d_in, d_in)``; ``keys``: ``(d_in, n)``, one column per
    edit; ``residuals``: ``(d_out, n)``. Returns ``(d_out, d_in)``, computed in float64 (as the
    official ``memit_main.py``).
    """
    c, k, r = cov.double(), keys.double(), residuals.double()
    adj_k = torch.linalg.solve(mom2_update_weight * c + k @ k.T, k)  # (d_in, n) = (lambda C + K K^T)^{-1} K
    return r @ adj_k.T  # (d_out, d_in)


def regularised(cov: torch.Tensor, ridge: float) -> torch.Tensor:
    """``C + ridge * mean(diag C) * I``: a relative ridge, so the same value suits any key scale."""
    if ridge == 0:
        return cov
    return cov + ridge * cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)


# --------------------------------------------------------------------------- the search for delta


def deletion_loss(token_logprobs: torch.Tensor, mask: torch.Tensor, target: Target) -> torch.Tensor:
    """The rewriting term of the search for delta.

    ``token_logprobs``, ``mask``: ``(N, T)`` over the N rewriting prompts, the mask on the target's
    tokens. ``nll_j`` is prompt j's mean target-token NLL; "erase" returns ``exp(-mean_j nll_j)``
    (Patil et al.'s fact erasure: the answer's probability), "alternate" returns ``mean_j nll_j``
    (ROME: the new target's NLL).
    """
    per_prompt = -(token_logprobs * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (N,)
    nll = per_prompt.mean()
    return torch.exp(-nll) if target == "erase" else nll


def kl_term(initial_logprobs: torch.Tensor, logprobs: torch.Tensor) -> torch.Tensor:
    """``KL(P_delta || P)`` averaged over the KL prompts, as ``F.kl_div(init, cur, log_target=True,
    reduction="batchmean")`` in ``compute_v.py``. Both ``(M, V)`` log-probabilities."""
    return (logprobs.exp() * (logprobs - initial_logprobs)).sum(-1).mean()


def norm_penalty(delta: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """``||delta|| / ||initial||^2`` (``compute_v.py``'s weight decay, before its factor). ``(H,)`` each."""
    return delta.norm() / initial.norm() ** 2


def clamp_norm(delta: torch.Tensor, initial: torch.Tensor, factor: float) -> None:
    """Project ``delta`` in place onto the ball of radius ``factor * ||initial||``."""
    max_norm = factor * initial.norm()
    if delta.norm() > max_norm:
        with torch.no_grad():
            delta.mul_(max_norm / delta.norm())


# --------------------------------------------------------------------------- requests and prompts


@dataclass(frozen=True)
class Request:
    """One fact to delete: its subject and the questions (phrasings) that ask for it."""

    fact: str
    subject: str
    questions: tuple[str, ...]
    targets: tuple[str, ...]  # per question: the answer ("erase") or the alternate ("alternate")


def subject_of(example: Example, index: int) -> str:
    subject = example.extras.get("entity", example.extras.get("subject"))
    if not isinstance(subject, str) or not subject.strip():
        raise DataError(f"forget example {index} has no subject: a model-editing method edits the MLP "
                        "at the subject's last token, so every forget example needs extras 'entity' "
                        "(or 'subject') naming it, as it appears in the question")
    if example.question is None or subject not in example.question:
        raise DataError(f"forget example {index}: its subject {subject!r} does not occur in the question "
                        f"{example.question!r}")
    return subject


def make_requests(forget: Sequence[Example], target: Target, unit: Unit = "fact") -> list[Request]:
    """Group the forget questions into edit requests, in order of first appearance.

    ``unit="fact"``: one request per fact (``extras['fact_id']``, else subject and answer), as ROME's
    request (s, r, o). ``unit="subject"``: one request per subject, holding all its forget questions.
    """
    grouped: dict[str, list[tuple[str, str, str]]] = {}
    for i, example in enumerate(forget):
        if not example.is_qa:
            raise DataError(f"forget example {i} is a plain text; model editing deletes question-answer facts")
        subject = subject_of(example, i)
        fact = subject if unit == "subject" else str(example.extras.get("fact_id") or f"{subject}\x00{example.answer}")
        if target == "erase":
            wanted = example.answer
        else:
            wanted = example.extras.get("alternate")
            if isinstance(wanted, list):
                wanted = wanted[0] if wanted else None
            if not isinstance(wanted, str) or not wanted.strip():
                raise DataError(f"forget example {i} has no 'alternate' answer, which target=alternate needs")
        grouped.setdefault(fact, []).append((subject, example.question, wanted))  # type: ignore[arg-type]
    requests = []
    for fact, rows in grouped.items():
        subjects = {s for s, _, _ in rows}
        if len(subjects) > 1:
            raise DataError(f"fact {fact!r} has several subjects {sorted(subjects)}")
        requests.append(Request(fact=fact, subject=rows[0][0], questions=tuple(q for _, q, _ in rows),
                                targets=tuple(t for _, _, t in rows)))
    return requests


def subject_position(tokenizer: Any, prompt: str, subject: str) -> int:
    """Index of the subject's last token in ``tokenizer(prompt)`` (ROME's ``subject_last``).

    As ``repr_tools.get_words_idxs_in_templates``: tokenize the prompt up to the end of the subject's
    first occurrence and take the last index.
    """
    start = prompt.find(subject)
    if start < 0:
        raise DataError(f"the subject {subject!r} does not occur in the prompt {prompt!r}")
    prefix = tokenizer(prompt[: start + len(subject)], add_special_tokens=True)["input_ids"]
    return len(prefix) - 1


@dataclass
class EditBatch:
    """The prompts of one request, right-padded: the rewriting prompts, then the KL prompt(s)."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    targets: torch.Tensor  # (B, T - 1) next-token targets, IGNORE_INDEX off the target tokens
    lookup: torch.Tensor  # (B,) subject's last token per row
    rewrite: int  # rows [0, rewrite) are rewriting prompts, the rest KL prompts

    def rows(self, selected: torch.Tensor) -> torch.Tensor:
        """A ``(B, T)`` one-hot float mask of the subject positions: where delta is added."""
        mask = torch.zeros(self.input_ids.shape, dtype=torch.float32, device=self.input_ids.device)
        mask[torch.arange(len(selected), device=mask.device), selected] = 1.0
        return mask


def encode_request(tokenizer: Any, request: Request, max_length: int, device: torch.device) -> EditBatch:
    """Rewriting prompts (question + target, target tokens labelled, no EOS) and the KL prompt."""
    examples = [Example(question=q, answer=t) for q, t in zip(request.questions, request.targets, strict=True)]
    examples.append(Example(question=f"{request.subject} is a", answer="."))  # only the prompt is read
    encoded = encode_all(tokenizer, examples, max_length)
    lookup = []
    for example, enc in zip(examples, encoded, strict=True):
        prompt = prompt_text(tokenizer, example.question or "")
        full = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        overflow = len(full) - enc.labels.count(IGNORE_INDEX)  # prompt tokens cut from the start
        position = subject_position(tokenizer, prompt, request.subject) - overflow
        if position < 0:
            raise DataError(f"fact {request.fact!r}: the prompt is longer than max_length {max_length} "
                            "and loses the subject")
        lookup.append(position)
    eos = tokenizer.eos_token_id
    for enc in encoded:  # the search targets the answer's tokens, not the end of the sequence
        if enc.labels and enc.labels[-1] == eos:
            enc.labels[-1] = IGNORE_INDEX
    for enc in encoded[-1:]:
        enc.labels[:] = [IGNORE_INDEX] * len(enc.labels)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch = collate(encoded, pad)
    return EditBatch(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                     targets=batch["labels"][:, 1:].to(device), lookup=torch.tensor(lookup, device=device),
                     rewrite=len(request.questions))


# --------------------------------------------------------------------------- reading and writing activations


def down_proj(model: torch.nn.Module, layer: int) -> torch.nn.Linear:
    """The edited matrix W of decoder layer ``layer``: the MLP's output projection."""
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise ConfigError(f"layer {layer} does not exist: the model has {len(layers)} decoder layers")
    mlp = getattr(layers[layer], "mlp", None)
    module = getattr(mlp, "down_proj", None)
    if not isinstance(module, torch.nn.Linear):
        raise ConfigError("model editing here edits a Llama-style 'mlp.down_proj' Linear; "
                          f"decoder layer {layer} of {type(model).__name__} has none")
    return module


@contextmanager
def add_at(module: torch.nn.Module, where: torch.Tensor, delta: torch.Tensor) -> Iterator[None]:
    """Add ``delta`` ``(B, H)`` (or ``(H,)``) to ``module``'s output at the positions ``where`` ``(B, T)``."""
    def hook(mod: torch.nn.Module, args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        shift = where.unsqueeze(-1).to(hidden.dtype) * delta.reshape(-1, 1, hidden.shape[-1]).to(hidden.dtype)
        changed = hidden + shift  # (B, T, H)
        return (changed, *output[1:]) if isinstance(output, tuple) else changed

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def capture(module: torch.nn.Module, store: dict[str, torch.Tensor], inputs: bool) -> Iterator[None]:
    """Keep ``module``'s input (``inputs=True``) or output in ``store['value']`` on each forward."""
    if inputs:
        handle = module.register_forward_pre_hook(lambda mod, args: store.__setitem__("value", args[0]))
    else:
        def keep(mod: torch.nn.Module, args: Any, output: Any) -> None:
            store["value"] = output[0] if isinstance(output, tuple) else output
        handle = module.register_forward_hook(keep)
    try:
        yield
    finally:
        handle.remove()


def layer_of(model: torch.nn.Module, module: torch.nn.Module) -> int:
    """The index of the decoder layer that holds ``module``."""
    for index, layer in enumerate(decoder_layers(model)):
        if any(module is inner for inner in layer.modules()):
            return index
    raise ValueError(f"{type(module).__name__} is not inside a decoder layer")


@torch.no_grad()
def read_many_at_subject(model: torch.nn.Module, batch: EditBatch, rows: int,
                         reads: Sequence[tuple[torch.nn.Module, bool]]) -> list[torch.Tensor]:
    """For each ``(module, inputs)``: the module's input (``inputs=True``) or output at the subject
    token, averaged over the first ``rows`` prompts, ``(H,)`` each. One forward pass serves them
    all, and it stops at the highest of their layers (no layer above it, no LM head)."""
    stores: list[dict[str, torch.Tensor]] = [{} for _ in reads]
    with contextlib.ExitStack() as stack:
        for (module, inputs), store in zip(reads, stores, strict=True):
            stack.enter_context(capture(module, store, inputs))
        hidden_at_layer(model, batch.input_ids[:rows], batch.attention_mask[:rows],
                        max(layer_of(model, module) for module, _ in reads))
    return [store["value"][torch.arange(rows), batch.lookup[:rows]].float().mean(0) for store in stores]


def read_at_subject(model: torch.nn.Module, module: torch.nn.Module, batch: EditBatch, rows: int,
                    inputs: bool) -> torch.Tensor:
    """``module``'s input or output at the subject token, averaged over the first ``rows`` prompts, ``(H,)``."""
    return read_many_at_subject(model, batch, rows, [(module, inputs)])[0]


@torch.no_grad()
def second_moments(model: torch.nn.Module, tokenizer: Any, examples: Sequence[Example], layers: Sequence[int],
                   max_length: int, batch_size: int = 64) -> dict[int, torch.Tensor]:
    """``C = E[k k^T]`` of each layer's down_proj keys over every real token of ``examples``, float64."""
    if not examples:
        raise DataError("model editing estimates the key covariance from retain text; the retain set is empty")
    modules = {layer: down_proj(model, layer) for layer in layers}
    sums = {layer: torch.zeros(m.in_features, m.in_features, dtype=torch.float64) for layer, m in modules.items()}
    count = 0
    encoded = encode_all(tokenizer, examples, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    for start in range(0, len(encoded), batch_size):
        batch = collate(encoded[start:start + batch_size], pad)
        stores: dict[int, dict[str, torch.Tensor]] = {layer: {} for layer in layers}
        handles = [m.register_forward_pre_hook(lambda mod, args, s=stores[layer]: s.__setitem__("value", args[0]))
                   for layer, m in modules.items()]
        try:
            attention = batch["attention_mask"].to(device)
            # Only the keys are read: the pass stops at the top edited layer (no LM head).
            hidden_at_layer(model, batch["input_ids"].to(device), attention, max(layers))
        finally:
            for handle in handles:
                handle.remove()
        real = attention.bool()
        for layer in layers:
            keys = stores[layer]["value"][real].double().cpu()  # (n, d_ff)
            sums[layer] += keys.T @ keys
        count += int(real.sum())
    return {layer: total / count for layer, total in sums.items()}


# --------------------------------------------------------------------------- the search


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Target-token log-probs ``(B, T - 1)`` (0 off target) and the target mask, from ``(B, T, V)`` logits."""
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    mask = targets != IGNORE_INDEX
    picked = logprobs.gather(-1, torch.where(mask, targets, 0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask.float()


def search_delta(model: torch.nn.Module, module: torch.nn.Module, batch: EditBatch, initial: torch.Tensor,
                 config: Any, target: Target) -> tuple[torch.Tensor, dict[str, float]]:
    """Find ``delta`` ``(H,)`` added to ``module``'s output at the subject token (``compute_v.py``).

    ``initial`` is the output the delta is measured against (``W k_*`` for ROME, the residual for
    MEMIT); ``config`` holds ``v_num_grad_steps``, ``v_lr``, ``v_weight_decay``,
    ``clamp_norm_factor`` and ``kl_factor``. Returns delta and the last step's loss terms.
    """
    delta = torch.zeros_like(initial, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=config.v_lr)
    where = batch.rows(batch.lookup)
    n = batch.rewrite
    kl_rows = torch.arange(n, batch.input_ids.shape[0], device=where.device)
    initial_kl: torch.Tensor | None = None
    terms: dict[str, float] = {}
    for step in range(config.v_num_grad_steps):
        optimizer.zero_grad()
        with add_at(module, where, delta):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
        picked, mask = token_logprobs(logits[:n], batch.targets[:n])
        rewrite = deletion_loss(picked, mask, target)
        kl_logits = logits[kl_rows, batch.lookup[n:]]  # (M, V) next token after the subject
        kl_logprobs = torch.log_softmax(kl_logits.float(), dim=-1)
        if initial_kl is None:
            initial_kl = kl_logprobs.detach().clone()
        kl = config.kl_factor * kl_term(initial_kl, kl_logprobs)
        decay = config.v_weight_decay * norm_penalty(delta, initial)
        loss = rewrite + kl + decay
        terms = {"rewrite": float(rewrite.detach()), "kl": float(kl.detach()), "decay": float(decay.detach())}
        if target == "alternate" and (loss < 5e-2 or step == config.v_num_grad_steps - 1):
            break  # ROME's early stop, and its break before the last step's update
        loss.backward()
        optimizer.step()
        clamp_norm(delta, initial, config.clamp_norm_factor)
    return delta.detach(), terms


@contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """No parameter gradients while searching for delta; the flags are restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def check_layers(model: torch.nn.Module, layers: Sequence[int]) -> list[int]:
    if not layers:
        raise ConfigError("'layers' is empty: give the decoder layer(s) whose MLP is edited")
    for layer in layers:
        down_proj(model, layer)
    return sorted(set(layers))


def answer_probability(model: torch.nn.Module, batch: EditBatch) -> float:
    """Mean over the rewriting prompts of the target's probability (per-token geometric mean)."""
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids[: batch.rewrite], attention_mask=batch.attention_mask[: batch.rewrite],
                       use_cache=False).logits
        picked, mask = token_logprobs(logits, batch.targets[: batch.rewrite])
        return float(torch.exp(picked.sum(-1) / mask.sum(-1).clamp(min=1)).mean())


# --------------------------------------------------------------------------- the method


class ROME(BuildMethod):
    """Delete each forget fact with a rank-one edit of ``mlp.down_proj``, one fact after another."""

    def needs_retain(self, config: Config) -> bool:
        return True  # the key covariance C comes from retain text

    def build(self, original: LanguageModel, config: Config, run: Any, *, forget: Sequence[Example],
              retain: Sequence[Example] | None, seed: int, world: Any = None,
              log: Callable[[dict[str, Any]], None] | None = None,
              progress: Callable[[dict[str, Any]], None] | None = None) -> Built:
        torch.manual_seed(seed)
        model, tokenizer = original.model, original.tokenizer
        model.eval()
        layers = check_layers(model, config.layers)
        requests = make_requests(forget, config.target, config.edit_unit)
        device = next(model.parameters()).device
        inverses = {layer: torch.linalg.inv(regularised(c, config.mom2_ridge).double()).to(device)  # once per layer
                    for layer, c in second_moments(model, tokenizer, retain or [], layers, run.max_length).items()}
        norms: list[float] = []
        with frozen(model):
            for number, request in enumerate(requests, start=1):
                batch = encode_request(tokenizer, request, run.max_length, device)
                before = answer_probability(model, batch)
                for layer in layers:
                    module = down_proj(model, layer)
                    key = read_at_subject(model, module, batch, batch.rewrite, inputs=True)  # (d_ff,) k_*
                    current = module.weight.float() @ key  # (d,) W k_*
                    delta, terms = search_delta(model, module, batch, current, config, config.target)
                    change = rome_update(module.weight, None, key, current + delta, cov_inverse=inverses[layer])
                    with torch.no_grad():
                        module.weight += change.to(module.weight.dtype)
                    norms.append(float(change.norm()))
                record = {"step": number, "total_steps": len(requests), "p_target_before": before,
                          "p_target_after": answer_probability(model, batch), **terms,
                          "update_norm": norms[-1], "tokens_per_s": 0.0}
                if log is not None:
                    log(record)
                if progress is not None:
                    progress(record)
        model.eval()
        state = {"edits": len(requests), "edit_unit": config.edit_unit, "layers": layers, "target": config.target,
                 "mean_update_norm": sum(norms) / max(1, len(norms)),
                 "covariance_tokens_from": "retain set", "mom2_ridge": config.mom2_ridge}
        return Built(lm=original, state=state)
