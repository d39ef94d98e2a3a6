"""Weighted gradient ascent (WGA): gradient ascent whose per-token push fades with the token's probability.

Paper: Wang, Zhou, Zhou, Shin, Han, Weinberger, "Rethinking LLM Unlearning Objectives: A Gradient
Perspective and Go Beyond", ICLR 2025, arXiv 2502.19301.

Objective (sg = stop-gradient, p_t = p_theta(y_t | x, y_<t)):

    L_WGA(theta) = E_{(x,y) in D_f} (1/|y|) sum_t sg[p_t^beta] log p_t
                   + alpha * E_{D_r}[ -log pi_theta(y | x) ]

Tokens already pushed to low probability get little further push: NPO's adaptive brake at token
level, without a reference model.

Departure from the usual reference implementation: open-unlearning averages the weighted term
over every answer token of the batch (``-(w * ce)[mask].mean()``); this module follows the
paper's per-answer mean (1/|y|), so short and long answers count equally. Unlike open-unlearning's
trainer, no reference model is built: the objective does not use one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearn_kb.engine.method import GradientMethod, Step, nll, sequence_mean, with_total


@dataclass(frozen=True)
class Config:
    beta: float  # power on the token probability in the weight; 0 gives plain GA
    alpha: float  # weight of the retain NLL


def wga_loss(token_logprobs: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """``E (1/|y|) sum_t sg(p_t^beta) log p_t``; ``token_logprobs``, ``mask``: ``(B, T)``."""
    weight = (beta * token_logprobs.detach()).exp()  # p_t^beta, (B, T)
    return sequence_mean(weight * token_logprobs, mask)


class WGA(GradientMethod):
    uses_retain = True

    def loss(self, step: Step, config: Config) -> dict[str, torch.Tensor]:
        terms = {"forget": wga_loss(step.token_logprobs("forget"), step.mask("forget"), config.beta)}
        if self.needs_retain(config):
            terms["retain"] = config.alpha * nll(step.token_logprobs("retain"), step.mask("retain"))
        return with_total(terms)
