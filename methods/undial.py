"""UNDIAL: self-distillation towards the original model's logits with the true token pushed down.

Paper: Dong, Lin, Belkin, Huerta, Vulic, "UNDIAL: Self-Distillation with Adjusted Logits for
Robust Unlearning in Large Language Models", NAACL 2025, arXiv 2402.10052.

Objective (z_ref,t: the frozen original's logits at position t; e_{y_t}: one-hot of the target):

    q_t = softmax( z_ref,t - beta * e_{y_t} )
    L(theta) = E_{(x,y) in D_f} (1/|y|) sum_t CE( q_t, softmax(z_theta,t) )
               + alpha * E_{D_r}[ -log pi_theta(y | x) ]

The target q_t is fixed and close to the original distribution, so the loss is bounded and its
gradients do not blow up as gradient ascent's do. The paper uses no retain term (alpha = 0).

Departure from the usual reference implementation (open-unlearning's ``compute_undial_loss``):
that code applies no label mask. Prompt and padding labels are -100, and
``mask[b, t, -100] = 1`` wraps around to vocabulary entry V - 100, which it then penalises; the
cross-entropy is averaged over every position, prompt and padding included. This module follows
the paper: the loss covers the target tokens, averaged per answer. ``positions = 'all'`` gives the
code's intent without its two accidents: every non-padding position, the logit adjustment only at
target tokens (plain distillation to the original elsewhere), averaged over the batch's positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from unlearn_kb.engine.data import IGNORE_INDEX
from unlearn_kb.engine.method import GradientMethod, Step, nll, sequence_mean, token_mean, with_total


@dataclass(frozen=True)
class Config:
    beta: float  # amount subtracted from the target token's logit in the teacher
    alpha: float  # weight of the optional retain NLL (0 in the paper)
    positions: Literal["answer", "all"]  # 'answer': the paper; 'all': every non-padding position (open-unlearning's scope)


def undial_targets(reference_logits: torch.Tensor, targets: torch.Tensor, beta: float) -> torch.Tensor:
    """``softmax(z_ref - beta * onehot(y))``, ``(B, T, V)``; no adjustment where ``targets`` is -100.

    ``reference_logits``: ``(B, T, V)``; ``targets``: ``(B, T)``.
    """
    penalty = -beta * (targets != IGNORE_INDEX).unsqueeze(-1).float()  # (B, T, 1)
    adjusted = reference_logits.float().scatter_add(-1, targets.clamp(min=0).unsqueeze(-1), penalty)
    return torch.softmax(adjusted, dim=-1)


def undial_loss(logits: torch.Tensor, reference_logits: torch.Tensor, targets: torch.Tensor,
                mask: torch.Tensor, beta: float, per_answer: bool = True) -> torch.Tensor:
    """Soft-label cross-entropy to the adjusted teacher, averaged over ``mask``.

    ``logits``, ``reference_logits``: ``(B, T, V)``; ``targets``, ``mask``: ``(B, T)``.
    ``per_answer``: mean per sequence then over sequences (the paper), else over all positions.
    """
    teacher = undial_targets(reference_logits, targets, beta)  # (B, T, V)
    cross_entropy = -(teacher * torch.log_softmax(logits.float(), dim=-1)).sum(-1)  # (B, T)
    return sequence_mean(cross_entropy, mask) if per_answer else token_mean(cross_entropy, mask)


class UNDIAL(GradientMethod):
    uses_reference = True  # the teacher: the frozen original's logits on the forget batch
    uses_retain = True  # only when alpha > 0

    def loss(self, step: Step, config: Config) -> dict[str, torch.Tensor]:
        answer_only = config.positions == "answer"
        mask = step.mask("forget") if answer_only else step.attention("forget")
        terms = {"forget": undial_loss(step.logits("forget"), step.reference_logits("forget"),
                                       step.targets("forget"), mask, config.beta, per_answer=answer_only)}
        if self.needs_retain(config):
            terms["retain"] = config.alpha * nll(step.token_logprobs("retain"), step.mask("retain"))
        return with_total(terms)
