"""SatImp: gradient ascent with per-token weights for saturation and importance.

Paper: Yang, Wang, Huang, Liu, Zhang, Han, "Exploring Criteria of Loss Reweighting to Enhance LLM
Unlearning", ICML 2025, arXiv 2505.11953.

Objective (sg = stop-gradient, p_t = p_theta(y_t | x, y_<t)):

    L_SatImp(theta) = E_{(x,y) in D_f} (1/|y|) sum_t sg[ p_t^beta1 (1 - p_t)^beta2 ] log p_t
                      + alpha * E_{D_r}[ -log pi_theta(y | x) ]

p^beta1 is the saturation factor (tokens already unlearned get little push, as in WGA) and
(1 - p)^beta2 the importance factor.

Departures from the usual reference implementation:

- open-unlearning averages the weighted term over every answer token of the batch; this module
  takes the paper's per-answer mean (1/|y|);
- the forget term has weight 1 and the retain term alpha (0.1 by default), the ratio the authors'
  README gives; open-unlearning's trainer yaml swaps the two weights (gamma = 0.1, alpha = 1);
- the paper's token-importance annotations for TOFU are not used: the weight depends on p only;
- no reference model is built (open-unlearning's trainer builds one it never reads).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearn_kb.engine.method import GradientMethod, Step, nll, sequence_mean, with_total


@dataclass(frozen=True)
class Config:
    beta1: float  # exponent of the saturation factor p^beta1
    beta2: float  # exponent of the importance factor (1 - p)^beta2
    alpha: float  # weight of the retain NLL


def satimp_weight(logits: torch.Tensor, targets: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    """The stop-gradient weight ``p^beta1 (1 - p)^beta2`` per position, ``(B, T)``.

    ``logits``: ``(B, T, V)``; ``targets``: ``(B, T)``. ``log(1 - p)`` is computed from the other
    tokens' logits, so it stays exact for a memorised token: ``1 - exp(log p)`` rounds to 0 in
    float32 once p > 1 - 6e-8, and such a token would get no gradient at all.
    """
    shifted = logits.detach().float()  # (B, T, V)
    shifted = shifted - shifted.amax(-1, keepdim=True)
    index = targets.clamp(min=0).unsqueeze(-1)  # (B, T, 1)
    scores = shifted.exp()  # one exp pass serves both sums
    log_total = scores.sum(-1).log()  # (B, T)
    log_p = shifted.gather(-1, index).squeeze(-1) - log_total  # (B, T)
    log_rest = scores.scatter_(-1, index, 0.0).sum(-1).log() - log_total  # log(1 - p), without 1 - p
    return torch.exp(beta1 * log_p + beta2 * log_rest)


def satimp_loss(token_logprobs: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``E (1/|y|) sum_t w_t log p_t`` with the detached weights ``w_t``; inputs ``(B, T)``."""
    return sequence_mean(weight * token_logprobs, mask)


class SatImp(GradientMethod):
    uses_retain = True

    def loss(self, step: Step, config: Config) -> dict[str, torch.Tensor]:
        weight = satimp_weight(step.logits("forget"), step.targets("forget"), config.beta1, config.beta2)
        terms = {"forget": satimp_loss(step.token_logprobs("forget"), weight, step.mask("forget"))}
        if self.needs_retain(config):
            terms["retain"] = config.alpha * nll(step.token_logprobs("retain"), step.mask("retain"))
        return with_total(terms)
