"""SimNPO: NPO without a reference model, on the length-normalised likelihood with a margin.

Paper: Fan, Liu, Lin, Jia, Zhang, Mei, Liu, "Simplicity Prevails: Rethinking Negative Preference
Optimization for LLM Unlearning", 2024, arXiv 2410.07163.

Objective (SimPO's reference-free reward applied to NPO):

    L_SimNPO(theta) = E_{(x,y) in D_f} [ -(2/beta) log sigma( -(beta/|y|) log pi_theta(y|x) - gamma ) ]
                      + alpha * E_{D_r}[ -log pi_theta(y|x) ]

with log pi(y|x) summed over the |y| answer tokens and gamma the reward margin.

Departure from the usual reference implementation (the authors' code and open-unlearning): the
code subtracts the margin from the length-normalised NLL *before* multiplying by beta,
``-logsigmoid(beta * (NLL/|y| - delta))``, so a code margin delta is a paper margin
gamma = beta * delta. This module follows the paper; ``margin_convention = 'code'`` reads
``gamma`` as the code's delta. The two agree at the default gamma = 0. The authors' TOFU runs also
scale the forget term (npo_coeff 0.125) instead of the retain term; the record's notes give the
equivalent alpha.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from unlearn_kb.engine.method import GradientMethod, Step, nll, with_total


@dataclass(frozen=True)
class Config:
    beta: float  # inverse temperature on the length-normalised log-likelihood
    gamma: float  # reward margin (the paper's gamma; see margin_convention)
    alpha: float  # weight of the retain NLL
    margin_convention: Literal["paper", "code"]  # 'code': gamma is the official code's delta (paper margin = beta * gamma)


def simnpo_loss(logprobs: torch.Tensor, lengths: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """``-(2/beta) mean log sigma(-(beta/|y|) log pi_theta(y|x) - gamma)``.

    ``logprobs``: sequence log-likelihoods ``(B,)``; ``lengths``: answer tokens |y| ``(B,)``.
    """
    normalised = logprobs / lengths.clamp(min=1)  # (B,)
    return -(2.0 / beta) * F.logsigmoid(-beta * normalised - gamma).mean()


class SimNPO(GradientMethod):
    uses_retain = True

    def loss(self, step: Step, config: Config) -> dict[str, torch.Tensor]:
        margin = config.beta * config.gamma if config.margin_convention == "code" else config.gamma
        lengths = step.mask("forget").sum(-1)  # (B,)
        terms = {"forget": simnpo_loss(step.sequence_logprobs("forget"), lengths, config.beta, margin)}
        if self.needs_retain(config):
            terms["retain"] = config.alpha * nll(step.token_logprobs("retain"), step.mask("retain"))
        return with_total(terms)
