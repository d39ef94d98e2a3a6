"""Unlearning from Logit Difference (ULD): subtract the logits of an assistant trained to remember only the forget set.

Paper: Ji, Liu, Zhang, Liu, Kompella, Liu, Chang, "Reversing the Forget-Retain Objectives: An
Efficient LLM Unlearning Framework from Logit Difference", NeurIPS 2024, arXiv 2406.08607; code
UCSB-NLP-Chang/ULD.

The assistant phi is trained with the reversed objectives (uld/model/forget_losses.py,
``GradDescentLossFunc`` + ``UniformLossFunc``, configs/unlearn_loss/remember+uniform.yaml):

    L(phi) = E_{(x,y) in D_f}[ -log pi_phi(y | x) ]                                   (remember D_f)
           + lambda * E_{x in D_r} mean_t KL( U || pi_phi(. | x_{<t}) )               (forget D_r)

and the target's logits are served with the assistant's subtracted (uld/model/contrastllm.py):

    l_f(x) = l(x; theta) + w * l_a(x; phi) * 1[not filtered]          (w = -alpha; w = -1 by default)

Raw logits, not log-probs, are combined (in greedy decoding ULD's code uses log-softmaxes when the
filter is off, which changes no argmax). The relative-top filter is DoLa's, as ULD adapts it:
with logp = log_softmax(l), a token is *filtered* where
``logp < min(logp_(k), max logp + log(top_logit_filter))``, ``k = int(top_logit_filter * V)``
(the k-th largest; so at least k tokens always stay); filtered tokens keep the target's logit
unchanged (the assistant's is zeroed) and, in greedy decoding, are excluded (set to -1e3).

The assistant is the target's first ``num_layer`` decoder layers (with its embeddings, final norm
and head) plus LoRA adapters on every linear layer but the head (r = ``lora_r``, LoRA alpha 32,
dropout 0.05, configs/model_mode/uld.yaml; uld/model/utils.py ``init_small_llm``). With
``assistant=assistant`` the toy world's separate small model (same tokenizer) is used instead, and
any other value is a checkpoint folder of a smaller model that shares the target's vocabulary.

Departures, and why:

- the engine trains the assistant: forget and retain batches of equal size at every step rather
  than ULD's shuffled mixture of both (the same loss in expectation); the whole retain set is used
  (ULD keeps as many retain examples as forget examples);
- the uniform term averages over real (non-padding) predicted positions, prompt included; ULD's
  ``kl_div(..., 'batchmean')`` averages over every position, padding included;
- ULD's data augmentation (GPT-written paraphrases of the forget QAs added to the forget side,
  GPT-perturbed answers added to the uniform side, configs/data_mode/forget_more_retain_perturb.yaml)
  is not done: the toy world's only paraphrases and perturbed answers are the evaluation's held-out
  probes, and training on them would hide what the evaluation measures;
- ULD's greedy decoding picks ``argmax(scores * ~mask)`` (a filtered token scores 0, which can win
  when every kept score is negative); here filtered tokens are excluded, as its ``-1e3`` intends.

The target model's weights never change (``weights_model``): an attacker holding them gets everything.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from unlearn_kb.engine.data import Example
from unlearn_kb.engine.lm import LanguageModel, side_logits
from unlearn_kb.engine.method import BuildMethod, Built, GradientMethod, Step, nll, token_mean
from unlearn_kb.errors import ConfigError

LORA_ALPHA = 32.0  # configs/model_mode/uld.yaml
LORA_DROPOUT = 0.05  # configs/model_mode/uld.yaml
FILTERED = -1e3  # what ULD's greedy search gives a filtered token


@dataclass(frozen=True)
class Config:
    weight: float  # coefficient of the assistant's logits: served = target + weight * assistant (ULD: -1)
    top_logit_filter: float  # relative-top filter on the target's probabilities; 0 disables it
    retain_weight: float  # lambda: weight of the uniform loss on retain data
    num_layer: int  # the assistant keeps the target's first num_layer decoder layers
    lora_r: int  # LoRA rank of the assistant's adapters
    assistant: str  # "layers" (the paper's: first layers + LoRA), "assistant" (the toy world's), or a folder


# --------------------------------------------------------------------------- the objective


def uniform_kl(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(U || softmax(logits)) per position, token-mean over ``mask``.

    ``logits``: ``(B, T, V)``; ``mask``: ``(B, T)`` bool. Per position this is
    ``sum_v (1/V)(log(1/V) - log p_v) = -log V - mean_v log p_v``.
    """
    log_p = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    per_token = -math.log(logits.shape[-1]) - log_p.mean(-1)  # (B, T)
    return token_mean(per_token, mask)


def relative_top_mask(logits: torch.Tensor, relative_top: float) -> torch.Tensor:
    """Tokens ULD's relative-top filter removes (True), ``(..., V)`` logits in, same-shape bool out."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    keep = int(relative_top * logits.shape[-1])  # ULD: min_tokens_to_keep = int(relative_top * V)
    kth = torch.sort(log_p, dim=-1, descending=True).values[..., keep - 1]  # keep = 0 picks the smallest
    threshold = torch.minimum(kth, log_p.max(-1).values + math.log(relative_top))
    return log_p < threshold.unsqueeze(-1)


def uld_logits(target: torch.Tensor, assistant: torch.Tensor, weight: float,
               relative_top: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``target + weight * assistant`` with the assistant zeroed on filtered tokens; and the filter.

    ``target``, ``assistant``: ``(..., V)``; returns the combined logits and the bool filter mask
    (all False when ``relative_top`` is 0).
    """
    if relative_top > 0:
        mask = relative_top_mask(target, relative_top)
        assistant = assistant.masked_fill(mask, 0.0)
    else:
        mask = torch.zeros_like(target, dtype=torch.bool)
    return target + weight * assistant, mask


@dataclass(frozen=True)
class AssistantConfig:
    retain_weight: float


class RememberUniform(GradientMethod):
    """ULD's assistant objective: NLL on the forget answers + lambda * KL(U || p) on retain inputs."""

    uses_retain = True

    def needs_retain(self, config: AssistantConfig) -> bool:
        return config.retain_weight != 0

    def loss(self, step: Step, config: AssistantConfig) -> dict[str, torch.Tensor]:
        remember = nll(step.token_logprobs("forget"), step.mask("forget"))
        terms = {"remember": remember}
        if config.retain_weight != 0:
            terms["uniform"] = config.retain_weight * uniform_kl(step.logits("retain"), step.attention("retain"))
        return {"loss": sum(terms.values()), **terms}  # type: ignore[dict-item]


# --------------------------------------------------------------------------- the assistant


def first_layers(model: torch.nn.Module, num_layer: int) -> torch.nn.Module:
    """A copy of ``model`` with only its first ``num_layer`` decoder layers (ULD's ``init_small_llm``)."""
    from unlearn_kb.engine.method import decoder_layers

    small = copy.deepcopy(model)
    layers = decoder_layers(small)
    n = min(num_layer, len(layers))
    if n < 1:
        raise ConfigError("num_layer must be >= 1")
    small.get_decoder().layers = torch.nn.ModuleList(list(layers)[:n])
    small.config.num_hidden_layers = n
    if isinstance(getattr(small.config, "layer_types", None), list):
        small.config.layer_types = small.config.layer_types[:n]
    return small


def load_assistant(config: Config, original: LanguageModel, world: Any) -> tuple[torch.nn.Module, str]:
    """The assistant before training, and where it came from."""
    if config.assistant == "layers":
        return first_layers(original.model, config.num_layer), f"first {config.num_layer} layers of the target"
    from unlearn_kb.engine.models import load_companion

    return load_companion(config.assistant, original.model, world, "assistant",
                          hint="; or --set assistant=layers (the paper's: the target's first layers)")


@dataclass
class ULDServed(LanguageModel):
    """The frozen target with the assistant's logits subtracted (``weight`` < 0) inside the filter."""

    assistant: Any = None
    weight: float = -1.0
    top_logit_filter: float = 0.0
    generating: bool = field(default=False, repr=False)

    intervention: ClassVar[str] = "output"

    def adjust_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      logits: torch.Tensor) -> torch.Tensor:
        z_a = side_logits(self.assistant, input_ids, attention_mask, logits.shape[1])
        combined, mask = uld_logits(logits.float(), z_a.float(), self.weight, self.top_logit_filter)
        if self.generating:  # ULD's greedy search excludes filtered tokens; its forward does not
            combined = combined.masked_fill(mask, FILTERED)
        return combined.to(logits.dtype)

    def _greedy(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        self.generating = True
        try:
            return super()._greedy(input_ids, attention_mask, max_new_tokens)
        finally:
            self.generating = False


class ULD(BuildMethod):
    def needs_retain(self, config: Config) -> bool:
        return config.retain_weight != 0

    def build(self, original: LanguageModel, config: Config, run: Any, *, forget: Sequence[Example],
              retain: Sequence[Example] | None, seed: int, world: Any = None, log: Any = None,
              progress: Any = None) -> Built:
        from unlearn_kb.engine.lora import DEFAULT_TARGETS, LoraSpec, add_adapter
        from unlearn_kb.engine.trainer import train

        small, source = load_assistant(config, original, world)
        spec = LoraSpec(r=config.lora_r, alpha=LORA_ALPHA, dropout=LORA_DROPOUT, targets=DEFAULT_TARGETS)
        torch.manual_seed(seed)  # the adapters' random initialisation, before the trainer seeds the rest
        assistant, trainable = add_adapter(small.to(original.device), spec)
        result = train(RememberUniform(), AssistantConfig(retain_weight=config.retain_weight), run, model=assistant,
                       tokenizer=original.tokenizer, forget=forget, retain=retain, seed=seed, progress=progress,
                       log=log, trainable=trainable)
        assistant.eval().requires_grad_(False)
        original.model.eval().requires_grad_(False)
        served = ULDServed(model=original.model, tokenizer=original.tokenizer, max_length=original.max_length,
                           batch_size=original.batch_size, assistant=assistant, weight=config.weight,
                           top_logit_filter=config.top_logit_filter)

        def save(folder: Path) -> None:
            merged = copy.deepcopy(assistant).merge_and_unload()
            merged.save_pretrained(folder / "assistant")
            original.tokenizer.save_pretrained(folder / "assistant")

        return Built(lm=served, train=result, save=save, state={
            "weight": config.weight, "top_logit_filter": config.top_logit_filter, "assistant_from": source,
            "assistant_layers": int(small.config.num_hidden_layers), "lora_r": config.lora_r,
            "assistant_saved": "assistant/ (LoRA merged)"})
