"""Gradient ascent (GA): raise the language-modelling loss on the forget set.

Paper: Jang, Yoon, Yang, Cha, Lee, Logeswaran, Seo, "Knowledge Unlearning for Mitigating Privacy
Risks in Language Models", ACL 2023, arXiv 2210.01504.

Objective (the paper negates the causal LM loss on the target sequences x in D_f):

    L_UL(theta) = E_{x in D_f} [ sum_t log p_theta(x_t | x_<t) ]        (minimised)

Departures from the paper:

- the loss is the token-mean over the batch's answer tokens (``-outputs.loss``), as in every
  reference implementation (TOFU, open-unlearning), rather than the per-sequence sum; only the
  weighting of long against short answers and the overall scale differ, and Adam undoes scale;
- the paper stops once extraction likelihood and memorisation accuracy fall under thresholds;
  here the run has a fixed step budget (``steps`` / ``epochs``).

The loss is unbounded below: run long enough, GA destroys the model (the collapse NPO addresses).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearn_kb.engine.method import GradientMethod, Step, nll


@dataclass(frozen=True)
class Config:
    """GA has no hyperparameters besides the run settings (learning rate, steps)."""


def ga_loss(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Negated token-mean NLL of the forget tokens; minimising it ascends the forget NLL.

    ``token_logprobs``: log p_theta(y_t) ``(B, T)``; ``mask``: forget tokens ``(B, T)``.
    """
    return -nll(token_logprobs, mask)


class GradientAscent(GradientMethod):
    def loss(self, step: Step, config: Config) -> dict[str, torch.Tensor]:
        forget = ga_loss(step.token_logprobs("forget"), step.mask("forget"))
        return {"loss": forget, "forget": forget}
