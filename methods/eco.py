"""ECO (Embedding-COrrupted prompts): a classifier flags forget-scope prompts, whose token embeddings are corrupted.

Paper: Liu, Wang, Flanigan, Liu, "Large Language Model Unlearning via Embedding-Corrupted Prompts",
NeurIPS 2024, arXiv 2406.07933; code: github.com/chrisliu298/llm-unlearn-eco.

The LLM pi_theta is never changed. A prompt classifier C gives p_C(f | x), the probability that a
prompt x is in the unlearning scope; for a prompt of T tokens with embeddings e = (e_1, ..., e_T):

    e_served = e~(sigma)   if p_C(f | x) > tau        (tau: ``classifier_threshold``)
               e           otherwise
    e~_i     = corrupt(e_i; sigma) for the selected tokens i of a flagged prompt, e_i for the others
    sigma*   = argmin_sigma f(sigma),  f = an unlearning metric of pi_theta(. | e~(sigma)) on the
               forget set, found offline by zeroth-order optimisation

Corruptions (official code, ``eco/attack/corrupt.py``), k = ``corrupt_dims``:

- ``rand_noise_first_n``: e~_i[:k] = e_i[:k] + n_i, n_i ~ N(0, sigma^2 I_k);
- ``zero_out_top_k``: the k entries of e_i with the largest |value| are set to 0;
- ``flip_sign_top_k``: those k entries are negated.

Zeroth-order step (``eco/optimizer/zoo.py``, ``ZerothOrderOptimizerScalar``, driven as in
``scripts/zeroth_order_optim.py``): with sigma_0 the initial strength, eps = 0.999 sigma_0,

    g = ( f(sigma + eps) - f(max(sigma - eps, 1e-8)) ) / (2 eps),   sigma <- max(sigma - lr g, sigma_0)

for ``zo_steps`` steps, stopping once f(sigma + eps) < ``zo_target``.

Departures from the paper and its code, and why:

- the prompt classifier: the paper fine-tunes RoBERTa-base (class-weighted cross-entropy) on the
  forget questions (label 1) against the retain questions (label 0); here a bag-of-words logistic
  regression over the served model's token ids of the prompt, with the same class weights and an
  L2 penalty, fitted by full-batch L-BFGS (deterministic; no second network to download). As in
  ``scripts/train_classifier.py``, 10% of the questions are held out; the false-positive and
  false-negative rates at the threshold are measured there and reported. The threshold is the
  record's fixed value, as in the released scripts; the paper's conformal-prediction variant of
  the threshold is not implemented;
- which tokens: the TOFU runs pick name tokens with an NER model (``dslim/bert-base-NER``);
  ``corrupt_tokens=names`` stands in a gazetteer of the entity names the forget and retain
  examples carry (``extras["entity"]``) for it, falling back, as the code does when NER tags
  nothing, to every prompt token but the last. ``all_but_last`` is the code's choice when there is
  no token classifier (WMDP, MMLU);
- only prompt tokens are corrupted, in scoring as in generation; the official hook, when it
  scores answers, also lets the token classifier tag answer tokens;
- the noise of a prompt is drawn from a generator seeded by (seed, the prompt's token ids), so a
  prompt is corrupted the same way in every batch and call; the code draws from the global RNG;
- the metric f is the mean probability of the gold answer over the forget questions, the product
  of its token probabilities (TOFU's reported probability is length-normalised, P^{1/|a|}, which
  ``evaluation.behaviour.answer_probability`` computes); the one released ZO script uses multiple-choice accuracy on WMDP
  with target 0.27. The ZO search applies to ``rand_noise_first_n`` only (the other corruptions
  have no strength); ``zo_steps=0`` keeps sigma fixed, as the TOFU and copyright configs do.

The weights stay the original's (``weights_model``): an attacker holding them, or a prompt the
classifier misses, gets everything.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from unlearn_kb.engine.data import Example, prompt_text
from unlearn_kb.engine.lm import LanguageModel
from unlearn_kb.engine.method import BuildMethod, Built
from unlearn_kb.errors import ConfigError

CORRUPTIONS = ("rand_noise_first_n", "zero_out_top_k", "flip_sign_top_k")


@dataclass(frozen=True)
class Config:
    classifier_threshold: float  # tau: a prompt is corrupted when p_C(forget | prompt) > tau
    classifier_l2: float  # L2 penalty of the bag-of-words logistic regression (this implementation)
    classifier_holdout: float  # fraction of the questions held out to measure the classifier's errors
    corrupt_method: Literal["rand_noise_first_n", "zero_out_top_k", "flip_sign_top_k"]
    corrupt_dims: int  # k: embedding dimensions corrupted per selected token
    corrupt_tokens: Literal["names", "all_but_last"]  # which prompt tokens of a flagged prompt are corrupted
    strength: float  # sigma_0: the noise scale the zeroth-order search starts from (rand_noise_first_n)
    zo_steps: int  # zeroth-order steps on sigma; 0 keeps sigma = strength
    zo_lr: float  # step size of the zeroth-order update
    zo_target: float  # stop once the forget metric f(sigma + eps) falls below this


# --------------------------------------------------------------------------- corruption


def corrupt_embeddings(embeddings: torch.Tensor, selected: torch.Tensor, method: str, dims: int,
                       noise: torch.Tensor | None = None) -> torch.Tensor:
    """The corrupted embeddings; rows and positions not ``selected`` are returned unchanged.

    ``embeddings``: ``(B, T, H)``; ``selected``: ``(B, T)`` bool; ``noise``: ``(B, T, dims)``, read
    by ``rand_noise_first_n`` only (already scaled by sigma). Returns a new ``(B, T, H)`` tensor.
    """
    if method not in CORRUPTIONS:
        raise ConfigError(f"eco: unknown corrupt_method '{method}'; choose one of {', '.join(CORRUPTIONS)}")
    if not 1 <= dims <= embeddings.shape[-1]:
        raise ConfigError(f"eco: corrupt_dims must be 1..{embeddings.shape[-1]} (the embedding size), got {dims}")
    keep = ~selected[..., None]  # (B, T, 1)
    if method == "rand_noise_first_n":
        assert noise is not None, "rand_noise_first_n needs its noise"
        first = embeddings[..., :dims] + torch.where(keep, torch.zeros_like(noise), noise).to(embeddings.dtype)
        return torch.cat([first, embeddings[..., dims:]], dim=-1)
    top = embeddings.abs().topk(dims, dim=-1).indices  # (B, T, dims)
    values = embeddings.gather(-1, top)  # (B, T, dims)
    replaced = torch.zeros_like(values) if method == "zero_out_top_k" else -values
    corrupted = embeddings.scatter(-1, top, replaced)  # (B, T, H)
    return torch.where(keep, embeddings, corrupted)


def prompt_noise(prompt_ids: Sequence[int], length: int, dims: int, sigma: float, seed: int) -> torch.Tensor:
    """N(0, sigma^2) noise ``(length, dims)`` for one prompt, a function of (seed, its token ids) alone."""
    key = zlib.crc32(torch.tensor(list(prompt_ids), dtype=torch.int64).numpy().tobytes())
    generator = torch.Generator().manual_seed((key + 1_000_003 * seed) % (2**63 - 1))
    return sigma * torch.randn(length, dims, generator=generator)


def zo_step(score: Callable[[float], float], sigma: float, eps: float, lr: float, sigma_min: float
            ) -> dict[str, float]:
    """One step of the code's ``ZerothOrderOptimizerScalar``: a central difference, then descent."""
    forward = score(sigma + eps)
    backward = score(max(sigma - eps, 1e-8))
    gradient = (forward - backward) / (2 * eps)
    return {"sigma": max(sigma - lr * gradient, sigma_min), "f_forward": forward, "f_backward": backward,
            "gradient": gradient}


# --------------------------------------------------------------------------- token spans


def find_last(tokens: Sequence[int], pattern: Sequence[int]) -> int:
    """Start of the last occurrence of ``pattern`` in ``tokens``, or -1."""
    n = len(pattern)
    for start in range(len(tokens) - n, -1, -1):
        if list(tokens[start:start + n]) == list(pattern):
            return start
    return -1


def prompt_length(tokens: Sequence[int], marker: Sequence[int]) -> int:
    """How many leading tokens are the prompt: up to the end of the last answer marker, else all."""
    if not marker:
        return len(tokens)
    start = find_last(tokens, marker)
    return len(tokens) if start < 0 else start + len(marker)


def select_tokens(prompt: Sequence[int], names: Sequence[Sequence[int]], mode: str) -> list[bool]:
    """Which prompt tokens to corrupt: name tokens (``names``), else every token but the last."""
    chosen = [False] * len(prompt)
    if mode == "names":
        for name in names:
            n = len(name)
            for start in range(len(prompt) - n + 1):
                if n and list(prompt[start:start + n]) == list(name):
                    chosen[start:start + n] = [True] * n
    if not any(chosen):  # the code's fallback when the token classifier tags nothing
        chosen = [True] * max(len(prompt) - 1, 0) + [False] * min(len(prompt), 1)
    return chosen


# --------------------------------------------------------------------------- the prompt classifier


@dataclass
class PromptClassifier:
    """Bag-of-words logistic regression: p(forget | x) = sigmoid(w . 1[token in x] + b)."""

    feature_ids: torch.Tensor  # (F,) token ids that have a weight; others count for nothing
    weight: torch.Tensor  # (F,)
    bias: torch.Tensor  # ()

    def features(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Token presence ``(N, F)`` over ``feature_ids``."""
        column = {int(t): i for i, t in enumerate(self.feature_ids.tolist())}
        x = torch.zeros(len(prompts), len(column))
        for row, ids in enumerate(prompts):
            cols = [column[t] for t in set(ids) if t in column]
            x[row, cols] = 1.0
        return x

    def probability(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """p_C(forget | prompt) for each prompt, ``(N,)``."""
        return torch.sigmoid(self.features(prompts) @ self.weight + self.bias)


def fit_classifier(prompts: Sequence[Sequence[int]], labels: Sequence[int], l2: float) -> PromptClassifier:
    """Class-weighted logistic regression (weights n / n_c, as the code's RoBERTa training) with L2."""
    vocabulary = torch.tensor(sorted({t for ids in prompts for t in ids}), dtype=torch.long)
    empty = PromptClassifier(vocabulary, torch.zeros(len(vocabulary)), torch.zeros(()))
    x = empty.features(prompts)  # (N, F)
    y = torch.tensor(labels, dtype=torch.float32)  # (N,)
    n, positives = len(labels), float(y.sum())
    if positives in (0.0, float(n)):
        raise ConfigError("eco: the prompt classifier needs both forget and retain questions")
    sample_weight = torch.where(y > 0, n / positives, n / (n - positives))  # (N,)
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = x @ w + b
        loss = (sample_weight * torch.nn.functional.binary_cross_entropy_with_logits(
            logits, y, reduction="none")).mean() + 0.5 * l2 * w.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return PromptClassifier(vocabulary, w.detach(), b.detach())


# --------------------------------------------------------------------------- the served model


@dataclass
class Plan:
    selected: torch.Tensor  # (B, T) bool: embeddings to corrupt
    noise: torch.Tensor | None  # (B, T, dims) or None


@dataclass
class ECOModel(LanguageModel):
    """The original model behind ECO: flagged prompts reach it with corrupted token embeddings."""

    classifier: PromptClassifier | None = None
    threshold: float = 0.99
    corrupt_method: str = "rand_noise_first_n"
    corrupt_dims: int = 1
    corrupt_tokens: str = "names"
    strength: float = 1.0
    seed: int = 0
    marker: list[int] = field(default_factory=list)  # token ids that end a prompt ("Answer:")
    names: list[list[int]] = field(default_factory=list)  # gazetteer: token ids of entity names
    _plan: Plan | None = field(default=None, init=False, repr=False)

    intervention: ClassVar[str] = "input"

    # ---------------------------------------------------------------- the classifier

    def prompt_ids(self, question: str) -> list[int]:
        return self.tokenizer(prompt_text(self.tokenizer, question))["input_ids"]

    def forget_probability(self, questions: Sequence[str]) -> torch.Tensor:
        """p_C(forget | prompt) for each question, ``(N,)``."""
        assert self.classifier is not None
        return self.classifier.probability([self.prompt_ids(q) for q in questions])

    def flagged(self, questions: Sequence[str]) -> list[bool]:
        """Whether each question's prompt would be corrupted."""
        return [bool(p > self.threshold) for p in self.forget_probability(questions)]

    # ---------------------------------------------------------------- the corruption

    def plan(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Plan:
        """What to corrupt in a batch (left- or right-padded): flagged rows' selected prompt tokens."""
        assert self.classifier is not None
        batch, width = input_ids.shape
        selected = torch.zeros(batch, width, dtype=torch.bool)
        noise = torch.zeros(batch, width, self.corrupt_dims) if self.corrupt_method == "rand_noise_first_n" else None
        rows = []
        for row in range(batch):
            where = attention_mask[row].bool().nonzero().flatten().tolist()
            tokens = input_ids[row, where].tolist()
            rows.append((where, tokens[:prompt_length(tokens, self.marker)]))
        probabilities = self.classifier.probability([prompt for _, prompt in rows])
        for row, ((where, prompt), p) in enumerate(zip(rows, probabilities.tolist(), strict=True)):
            if p <= self.threshold or not prompt:
                continue
            chosen = [pos for pos, pick in zip(where, select_tokens(prompt, self.names, self.corrupt_tokens),
                                               strict=False) if pick]
            selected[row, chosen] = True
            if noise is not None:
                drawn = prompt_noise(prompt, len(prompt), self.corrupt_dims, self.strength, self.seed)
                noise[row, where[:len(prompt)]] = drawn
        device = input_ids.device
        return Plan(selected.to(device), None if noise is None else noise.to(device))

    def _corrupt_hook(self, module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
        plan = self._plan
        if plan is None or tuple(output.shape[:2]) != tuple(plan.selected.shape):
            return None  # generation steps after the prompt (one token each) pass untouched
        self._plan = None
        return corrupt_embeddings(output, plan.selected, self.corrupt_method, self.corrupt_dims, plan.noise)

    @contextmanager
    def _corrupting(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Iterator[None]:
        self._plan = self.plan(input_ids, attention_mask)
        handle = self.model.get_input_embeddings().register_forward_hook(self._corrupt_hook)
        try:
            yield
        finally:
            handle.remove()
            self._plan = None

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with self._corrupting(input_ids, attention_mask):
            return super().logits(input_ids, attention_mask)

    def _greedy(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        with self._corrupting(input_ids, attention_mask):
            return super()._greedy(input_ids, attention_mask, max_new_tokens)


# --------------------------------------------------------------------------- building it


def answer_marker(tokenizer: Any, questions: Sequence[str]) -> list[int]:
    """Token ids that end every prompt (the template after the question, e.g. ``Answer :``).

    The longest common suffix of the questions' prompts, cut to the length of the template's tail
    tokenised alone, so a shared question ending ("?") is not mistaken for the template.
    """
    sentinel = "\ue000"
    tail = prompt_text(tokenizer, sentinel).split(sentinel, 1)[1]
    n_tail = len(tokenizer(tail, add_special_tokens=False)["input_ids"])
    encoded = [tokenizer(prompt_text(tokenizer, q))["input_ids"] for q in questions[:200]]
    common: list[int] = []
    for column in zip(*(reversed(ids) for ids in encoded), strict=False):
        if len(set(column)) != 1 or len(common) >= n_tail:
            break
        common.insert(0, column[0])
    return common


def gazetteer(tokenizer: Any, examples: Sequence[Example]) -> list[list[int]]:
    """Token ids of every entity name the examples carry, with and without a leading space."""
    names = sorted({e.extras["entity"] for e in examples if isinstance(e.extras.get("entity"), str)})
    spelled = {tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
               for name in names for text in (name, " " + name)}
    return [list(ids) for ids in sorted(spelled) if ids]


def split_holdout(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, held-out) index lists."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_held = int(round(fraction * n))
    return sorted(order[n_held:]), sorted(order[:n_held])


def forget_answer_probability(lm: LanguageModel, examples: Sequence[Example]) -> float:
    """Mean probability of the gold answer (product of its token probabilities), as served."""
    values = [float(lp.sum().exp()) for lp in lm.answer_logprobs(examples)]
    return sum(values) / max(len(values), 1)


class ECO(BuildMethod):
    def needs_retain(self, config: Config) -> bool:
        return True  # the classifier's negatives

    def build(self, original: LanguageModel, config: Config, run: Any, *, forget: Sequence[Example],
              retain: Sequence[Example] | None, seed: int, world: Any = None, log: Any = None,
              progress: Any = None) -> Built:
        forget_q = [e for e in forget if e.is_qa]
        retain_q = [e for e in (retain or []) if e.is_qa]
        if not forget_q or not retain_q:
            raise ConfigError("eco: the prompt classifier needs forget and retain questions (question-answer pairs)")
        if not 0 <= config.classifier_holdout < 1:
            raise ConfigError(f"eco: classifier_holdout must be in [0, 1), got {config.classifier_holdout}")
        tokenizer = original.tokenizer
        served = ECOModel(model=original.model, tokenizer=tokenizer, max_length=original.max_length,
                          batch_size=original.batch_size, threshold=config.classifier_threshold,
                          corrupt_method=config.corrupt_method, corrupt_dims=config.corrupt_dims,
                          corrupt_tokens=config.corrupt_tokens, strength=config.strength, seed=seed,
                          marker=answer_marker(tokenizer, [e.question for e in forget_q + retain_q]),
                          names=gazetteer(tokenizer, [*forget_q, *retain_q]))

        # 1. the prompt classifier: forget questions (1) against retain questions (0)
        questions = [e.question for e in forget_q] + [e.question for e in retain_q]
        labels = [1] * len(forget_q) + [0] * len(retain_q)
        prompts = [served.prompt_ids(q) for q in questions]
        train_idx, held_idx = split_holdout(len(prompts), config.classifier_holdout, seed)
        served.classifier = fit_classifier([prompts[i] for i in train_idx], [labels[i] for i in train_idx],
                                           config.classifier_l2)
        state: dict[str, Any] = {"classifier": "bag-of-words logistic regression", "threshold": config.classifier_threshold,
                                 "features": int(served.classifier.feature_ids.numel())}
        if held_idx:
            p = served.classifier.probability([prompts[i] for i in held_idx])
            y = torch.tensor([labels[i] for i in held_idx])
            flag = p > config.classifier_threshold
            state["heldout_false_negative_rate"] = round(float((~flag & (y == 1)).sum() / max(int(y.sum()), 1)), 4)
            state["heldout_false_positive_rate"] = round(float((flag & (y == 0)).sum() / max(int((y == 0).sum()), 1)), 4)

        # 2. the corruption strength: zeroth-order search on the forget metric
        trace: list[dict[str, float]] = []
        if config.corrupt_method == "rand_noise_first_n" and config.zo_steps > 0:
            sigma, eps = config.strength, 0.999 * config.strength

            def score(value: float) -> float:
                served.strength = value
                return forget_answer_probability(served, forget_q)

            for number in range(config.zo_steps):
                record = {"step": number, **zo_step(score, sigma, eps, config.zo_lr, config.strength)}
                record["sigma_before"] = sigma
                sigma = record["sigma"]
                trace.append(record)
                if log is not None:
                    log({"zo_" + k: v for k, v in record.items()})
                if record["f_forward"] < config.zo_target:
                    break  # as the script: stop with the updated sigma once f(sigma + eps) met the target
            served.strength = sigma
        state["strength"] = served.strength if config.corrupt_method == "rand_noise_first_n" else None
        state["zo_steps_run"] = len(trace)
        state["flagged_forget"] = round(sum(served.flagged([e.question for e in forget_q])) / len(forget_q), 4)
        state["flagged_retain"] = round(sum(served.flagged([e.question for e in retain_q])) / len(retain_q), 4)

        def save(folder: Path) -> None:
            from safetensors.torch import save_file

            assert served.classifier is not None
            save_file({"feature_ids": served.classifier.feature_ids.contiguous(),
                       "weight": served.classifier.weight.contiguous(),
                       "bias": served.classifier.bias.reshape(1).contiguous()}, str(folder / "eco_classifier.safetensors"))
            settings = {"threshold": served.threshold, "corrupt_method": served.corrupt_method,
                        "corrupt_dims": served.corrupt_dims, "corrupt_tokens": served.corrupt_tokens,
                        "strength": served.strength, "seed": served.seed, "marker": served.marker,
                        "names": served.names, "zo_trace": trace}
            (folder / "eco.json").write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")

        state["files"] = ["eco_classifier.safetensors", "eco.json"]
        return Built(lm=served, state=state, save=save)
