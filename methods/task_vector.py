"""Task-vector negation: fine-tune a copy on the forget set, then move the original the other way.

Paper: Ilharco, Ribeiro, Wortsman, Gururangan, Schmidt, Hajishirzi, Farhadi, "Editing Models with
Task Arithmetic", ICLR 2023, arXiv 2212.04089; used as an unlearning baseline ("tv") by MUSE
(Shi et al., arXiv 2407.06460, jaechan-repo/muse_bench, baselines/task_vector.py).

    theta_ft = argmin_theta E_{x in D_f}[ -log pi_theta(x) ]      (initialised at theta_0)
    tau      = theta_ft - theta_0
    theta_u  = theta_0 - alpha * tau

Departures from the usual reference implementation:

- the fine-tune is the engine's training loop with a plain NLL objective on the forget answers
  (MUSE fine-tunes on raw forget text with its own loop); run settings (lr, epochs) are the
  engine's, which equal MUSE's 1e-5 for 10 epochs;
- every floating-point parameter is moved, as in MUSE's code; the task-vector paper's CLIP code
  does the same except for non-float buffers, which here are left alone too.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from unlearn_kb.engine.data import Example
from unlearn_kb.engine.lm import LanguageModel
from unlearn_kb.engine.method import BuildMethod, Built, GradientMethod, Step, nll


@dataclass(frozen=True)
class Config:
    alpha: float  # scaling of the negated task vector (lambda in Ilharco et al.); MUSE's scripts use 5.0


@dataclass(frozen=True)
class FineTuneConfig:
    """The reinforcing fine-tune has no settings besides the run's (learning rate, steps)."""


class ForgetFineTune(GradientMethod):
    """Plain language modelling on the forget answers: the fine-tune that defines tau."""

    def loss(self, step: Step, config: FineTuneConfig) -> dict[str, torch.Tensor]:
        forget = nll(step.token_logprobs("forget"), step.mask("forget"))
        return {"loss": forget, "forget": forget}


@torch.no_grad()
def negate_task_vector(original: torch.nn.Module, finetuned: torch.nn.Module, alpha: float) -> int:
    """``theta_0 <- theta_0 - alpha * (theta_ft - theta_0)`` in place; returns the scalars moved."""
    tuned = dict(finetuned.named_parameters())
    moved = 0
    for name, theta_0 in original.named_parameters():
        if theta_0.is_floating_point():
            tau = tuned[name].to(theta_0.device, theta_0.dtype) - theta_0  # same shape as theta_0
            theta_0.sub_(alpha * tau)
            moved += theta_0.numel()
    return moved


class TaskVector(BuildMethod):
    def build(self, original: LanguageModel, config: Config, run: Any, *, forget: Sequence[Example],
              retain: Sequence[Example] | None, seed: int, world: Any = None, log: Any = None,
              progress: Any = None) -> Built:
        from unlearn_kb.engine.trainer import train

        finetuned = copy.deepcopy(original.model)
        result = train(ForgetFineTune(), FineTuneConfig(), run, model=finetuned, tokenizer=original.tokenizer,
                       forget=forget, seed=seed, progress=progress, log=log)
        moved = negate_task_vector(original.model, finetuned, config.alpha)
        del finetuned
        original.model.eval()
        return Built(lm=original, train=result, state={"alpha": config.alpha, "moved_parameters": moved})
