"""Who's Harry Potter, inference-time variant: a reinforced copy's logit boost is subtracted at serving time.

Paper: Eldan, Russinovich, "Who's Harry Potter? Approximate Unlearning in LLMs", arXiv 2310.02238
(the generic-prediction formula); the inference-time variant is the WHP baseline of MUSE (Shi et
al., "MUSE: Machine Unlearning Six-Way Evaluation for Language Models", arXiv 2407.06460, code
jaechan-repo/muse_bench, baselines/baselines/whos_harry_potter.py, class WHPModelForCausalLM).

    theta_reinf = argmin_theta E_{x in D_f}[ -log pi_theta(x) ]       (initialised at theta_base)
    z(x)        = v_base(x) - alpha * ReLU( v_reinf(x) - v_base(x) )  (served logits)

Both models stay frozen at serving time; tokens whose logits the reinforcement raised (the ones
specific to the forget set) are pushed down, the rest keep the base model's logits. MUSE's class
computes exactly ``v_b.logits - self.alpha * F.relu(v_r.logits - v_b.logits)`` with ``alpha=1.``.

Departures from MUSE's code:

- the reinforcing fine-tune is the engine's training loop with a plain NLL objective on the forget
  answers (:class:`unlearn_kb.methods.task_vector.ForgetFineTune`); MUSE fine-tunes on the raw
  forget text with its own loop (lr 1e-5, the engine's default too);
- serving reruns the reinforced model on the whole sequence at each generated token (no KV cache
  for it): exact, and cheap at toy scale.

The base model's weights never change (``weights_model``): an attacker holding them gets everything.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from unlearn_kb.engine.data import Example
from unlearn_kb.engine.lm import LanguageModel, side_logits
from unlearn_kb.engine.method import BuildMethod, Built
from unlearn_kb.methods.task_vector import FineTuneConfig, ForgetFineTune


@dataclass(frozen=True)
class Config:
    alpha: float  # strength of the subtraction of the reinforced model's boost (MUSE: 1.0)


def generic_logits(base: torch.Tensor, reinforced: torch.Tensor, alpha: float) -> torch.Tensor:
    """``v_base - alpha * relu(v_reinf - v_base)``; both ``(..., V)``, same shape out."""
    return base - alpha * F.relu(reinforced - base)


def reinforce(original: LanguageModel, run: Any, forget: Sequence[Example], seed: int, log: Any = None,
              progress: Any = None) -> tuple[torch.nn.Module, Any]:
    """A copy of the original fine-tuned further on the forget answers (the reinforced model)."""
    from unlearn_kb.engine.trainer import train

    reinforced = copy.deepcopy(original.model)
    result = train(ForgetFineTune(), FineTuneConfig(), run, model=reinforced, tokenizer=original.tokenizer,
                   forget=forget, seed=seed, progress=progress, log=log)
    return reinforced.eval().requires_grad_(False), result


@dataclass
class ReinforcedServed(LanguageModel):
    """The frozen base model whose next-token logits are combined with a reinforced copy's."""

    reinforced: Any = None
    alpha: float = 1.0

    intervention: ClassVar[str] = "output"

    def adjust_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      logits: torch.Tensor) -> torch.Tensor:
        z_reinf = side_logits(self.reinforced, input_ids, attention_mask, logits.shape[1])
        return generic_logits(logits, z_reinf.to(logits.dtype), self.alpha)


class WHPLogit(BuildMethod):
    def build(self, original: LanguageModel, config: Config, run: Any, *, forget: Sequence[Example],
              retain: Sequence[Example] | None, seed: int, world: Any = None, log: Any = None,
              progress: Any = None) -> Built:
        reinforced, result = reinforce(original, run, forget, seed, log=log, progress=progress)
        original.model.eval().requires_grad_(False)
        served = ReinforcedServed(model=original.model, tokenizer=original.tokenizer,
                                  max_length=original.max_length, batch_size=original.batch_size,
                                  reinforced=reinforced, alpha=config.alpha)

        def save(folder: Path) -> None:
            reinforced.save_pretrained(folder / "reinforced")
            original.tokenizer.save_pretrained(folder / "reinforced")

        return Built(lm=served, train=result, save=save,
                     state={"alpha": config.alpha, "reinforced": "reinforced/"})
