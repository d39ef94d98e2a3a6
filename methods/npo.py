"""Negative Preference Optimization (NPO): a bounded, self-slowing form of gradient ascent.

Paper: Zhang, Lin, Bai, Mei, "Negative Preference Optimization: From Catastrophic Collapse to
Effective Unlearning", COLM 2024, arXiv 2404.05868.

Objective (DPO with the forget answers as the only, dispreferred responses), plus a retain term:

    L_NPO(theta) = -(2/beta) E_{(x,y) in D_f} log sigma( -beta log( pi_theta(y|x) / pi_ref(y|x) ) )
                   + alpha * R(theta)

    R = E_{D_r}[ -log pi_theta(y|x) ]                       (retain_loss = 'nll', NPO+RT / NPO+GD)
    R = mean_{D_r, i} KL( pi_ref(.|s_<i) || pi_theta(.|s_<i) )   (retain_loss = 'kl',  NPO+KL)

where log pi(y|x) is the sum of the answer tokens' log-probs. The gradient is gradient ascent's
times the weight w = 2 pi_theta^beta / (pi_theta^beta + pi_ref^beta) (arXiv 2404.05868), which
vanishes as pi_theta(y|x) falls below pi_ref(y|x): the brake that delays collapse. As beta -> 0
the loss tends to gradient ascent on the sequence log-likelihood.

Departures from the usual reference implementations:

- pi_ref(y|x) never changes, so it is computed once per forget example (one no-grad pass of the
  starting model before the first update) instead of at every step, and no frozen copy of the
  model is held unless the retain term is the KL;
- MUSE's NPO code applies the formula to raw logits instead of sequence log-likelihoods
  (jaechan-repo/muse_bench issue 2); this follows the paper;
- the KL retain term masks padding (the open-unlearning code averages over padding too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from unlearn_kb.engine.method import GradientMethod, Step, kl_divergence, nll, with_total


@dataclass(frozen=True)
class Config:
    beta: float  # inverse temperature; beta -> 0 recovers gradient ascent
    alpha: float  # weight of the retain term
    retain_loss: Literal["nll", "kl"]  # NPO+GD (retain NLL) or NPO+KL (KL to the reference)


def npo_loss(logprobs: torch.Tensor, reference_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """``-(2/beta) mean log sigma(-beta (log pi_theta - log pi_ref))``.

    ``logprobs``, ``reference_logprobs``: sequence log-likelihoods log pi(y|x), ``(B,)``.
    """
    log_ratio = logprobs - reference_logprobs  # (B,)
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()


def npo_weight(logprobs: torch.Tensor, reference_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    """The paper's adaptive weight ``2 pi_theta^beta / (pi_theta^beta + pi_ref^beta)``, ``(B,)``.

    ``d L / d log pi_theta(y|x)`` per example (times the batch size): what scales the GA gradient.
    """
    return 2.0 * torch.sigmoid(beta * (logprobs - reference_logprobs))


class NPO(GradientMethod):
    uses_retain = True
    uses_reference = True
    reference_sequences = ("forget",)

    def live_reference(self, config: Config) -> bool:
        return config.retain_loss == "kl" and self.needs_retain(config)

    def loss(self, step: Step, config: Config) -> dict[str, torch.Tensor]:
        terms = {"forget": npo_loss(step.sequence_logprobs("forget"),
                                    step.reference_sequence_logprobs("forget"), config.beta)}
        if self.needs_retain(config):
            if config.retain_loss == "kl":
                retain = kl_divergence(step.reference_logits("retain"), step.logits("retain"),
                                       step.attention("retain"))
            else:
                retain = nll(step.token_logprobs("retain"), step.mask("retain"))
            terms["retain"] = config.alpha * retain
        return with_total(terms)
