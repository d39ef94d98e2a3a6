"""Gradient difference: gradient ascent on the forget set plus gradient descent on the retain set.

Paper: Maini, Feng, Schwarzschild, Lipton, Kolter, "TOFU: A Task of Fictitious Unlearning for
LLMs", 2024, arXiv 2401.06121 (one of its baselines; MUSE calls it GA_GDR).

Objective:

    L(theta) = -gamma * E_{D_f}[ -log pi_theta(y | x) ] + alpha * E_{D_r}[ -log pi_theta(y | x) ]

Each NLL is the token-mean cross-entropy over the batch's answer tokens, as in the TOFU code
(``loss = -forget_loss + retain_loss``). No departure from the reference implementation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearn_kb.engine.method import GradientMethod, Step, nll, with_total


@dataclass(frozen=True)
class Config:
    gamma: float  # weight of the (negated) forget NLL
    alpha: float  # weight of the retain NLL


class GradDiff(GradientMethod):
    uses_retain = True

    def loss(self, step: Step, config: Config) -> dict[str, torch.Tensor]:
        terms = {"forget": -config.gamma * nll(step.token_logprobs("forget"), step.mask("forget"))}
        if self.needs_retain(config):
            terms["retain"] = config.alpha * nll(step.token_logprobs("retain"), step.mask("retain"))
        return with_total(terms)
