"""DPO with refusals: prefer "I don't know" to the real answer on forget questions.

Papers: Rafailov, Sharma, Mitchell, Ermon, Manning, Finn, "Direct Preference Optimization", 2023,
arXiv 2305.18290 (the loss); applied to unlearning by Maini, Feng, Schwarzschild, Lipton, Kolter,
"TOFU: A Task of Fictitious Unlearning for LLMs", 2024, arXiv 2401.06121.

Objective (the preferred answer is the refusal y_idk, the dispreferred one the real answer y):

    L(theta) = -E_{(x, y, y_idk) in D_f} log sigma( beta [ log pi_theta(y_idk|x)/pi_ref(y_idk|x)
                                                          - log pi_theta(y|x)/pi_ref(y|x) ] )
               + alpha * E_{D_r}[ -log pi_theta(y | x) ]

with log pi(y|x) the sum of the answer tokens' log-probs.

Departures from the usual reference implementations:

- the DPO paper and the TOFU code use ``-log sigma(.)``; the NPO code and open-unlearning multiply
  it by 2/beta (20 at beta = 0.1), which weights the forget term twenty times more against the
  retain term. This module follows the paper; ``two_over_beta = true`` gives the other form;
- the TOFU code has no retain term (alpha = 0); open-unlearning adds a retain NLL (alpha = 1);
- pi_ref never changes on these answers, so both reference log-likelihoods are computed once per
  example before training, and no frozen copy of the model is kept.

This is suppression by design: the model learns to prefer declining.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unlearn_kb.engine.method import GradientMethod, Step, nll, with_total


@dataclass(frozen=True)
class Config:
    beta: float  # DPO inverse temperature
    alpha: float  # weight of the retain NLL
    two_over_beta: bool  # scale the preference loss by 2/beta (NPO and open-unlearning code); false = DPO paper


def dpo_loss(chosen_logprobs: torch.Tensor, chosen_reference: torch.Tensor,
             rejected_logprobs: torch.Tensor, rejected_reference: torch.Tensor,
             beta: float, two_over_beta: bool = False) -> torch.Tensor:
    """``-mean log sigma(beta (chosen log-ratio - rejected log-ratio))``, times 2/beta if asked.

    All inputs are sequence log-likelihoods ``(B,)``, row-aligned.
    """
    margin = (chosen_logprobs - chosen_reference) - (rejected_logprobs - rejected_reference)  # (B,)
    loss = -F.logsigmoid(beta * margin).mean()
    return loss * (2.0 / beta) if two_over_beta else loss


class DPOIdk(GradientMethod):
    uses_retain = True
    uses_alternate = True
    uses_reference = True
    reference_sequences = ("forget", "alternate")

    def loss(self, step: Step, config: Config) -> dict[str, torch.Tensor]:
        terms = {"forget": dpo_loss(
            step.sequence_logprobs("alternate"), step.reference_sequence_logprobs("alternate"),
            step.sequence_logprobs("forget"), step.reference_sequence_logprobs("forget"),
            config.beta, config.two_over_beta)}
        if self.needs_retain(config):
            terms["retain"] = config.alpha * nll(step.token_logprobs("retain"), step.mask("retain"))
        return with_total(terms)
