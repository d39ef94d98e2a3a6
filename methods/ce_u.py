"""CE-U: cross-entropy towards the model's own distribution with the true token removed.

Paper: Yang, "CE-U: Cross Entropy Unlearning", 2025, arXiv 2503.01224.

Objective (sg = stop-gradient, z_t the current logits at answer position t, n = ignore_first_n):

    q_t = softmax( sg(z~_t) ),   z~_t,v = -inf if v = y_t else z_t,v
    L_CE-U(theta) = E_{(x,y) in D_f} 1/(|y| - n) sum_{t > n} -sum_v q_t(v) log p_theta(v | x, y_<t)
                    + alpha * E_{D_r}[ -log pi_theta(y | x) ]

The gradient on the logits is p_theta - q_t: the true token is pushed towards probability 0 and
the rest towards the model's own renormalised distribution. Unlike gradient ascent, the gradient
does not vanish when the model is confident nor explode when it is not.

Departures from the usual reference implementation (open-unlearning's ``ceu.py``; no official code
was found): the loss is the paper's per-answer mean, where that code averages over every kept
token of the batch; an answer no longer than n tokens is left out of the mean rather than counted
as zero. The optional retain term (alpha, 0 by default) is not in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearn_kb.engine.data import IGNORE_INDEX
from unlearn_kb.engine.method import GradientMethod, Step, nll, sequence_mean, with_total


@dataclass(frozen=True)
class Config:
    ignore_first_n: int  # leading answer tokens left out of the loss (n)
    alpha: float  # weight of the optional retain NLL (0: CE-U as published)


def skip_first(mask: torch.Tensor, n: int) -> torch.Tensor:
    """``mask`` ``(B, T)`` without each row's first ``n`` masked positions."""
    return mask & (mask.long().cumsum(-1) > n)


def ce_u_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the detached softmax with the target logit at -inf, per-answer mean.

    ``logits``: ``(B, T, V)``; ``targets``, ``mask``: ``(B, T)``.
    """
    logits = logits.float()
    removed = logits.detach().scatter(-1, targets.clamp(min=0).unsqueeze(-1), float("-inf"))  # (B, T, V)
    target_distribution = torch.softmax(removed, dim=-1)  # (B, T, V)
    cross_entropy = -(target_distribution * torch.log_softmax(logits, dim=-1)).sum(-1)  # (B, T)
    return sequence_mean(cross_entropy, mask & (targets != IGNORE_INDEX))


class CEU(GradientMethod):
    uses_retain = True  # only when alpha > 0

    def loss(self, step: Step, config: Config) -> dict[str, torch.Tensor]:
        mask = skip_first(step.mask("forget"), config.ignore_first_n)
        terms = {"forget": ce_u_loss(step.logits("forget"), step.targets("forget"), mask)}
        if self.needs_retain(config):
            terms["retain"] = config.alpha * nll(step.token_logprobs("retain"), step.mask("retain"))
        return with_total(terms)
