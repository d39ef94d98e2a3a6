"""Gradient ascent with a KL retain term: ascend the forget NLL, keep the retain distribution.

Paper: Maini, Feng, Schwarzschild, Lipton, Kolter, "TOFU: A Task of Fictitious Unlearning for
LLMs", 2024, arXiv 2401.06121 (the "KL minimization" baseline; MUSE calls it GA_KLR).

Objective:

    L(theta) = -gamma * E_{D_f}[ -log pi_theta(y | x) ]
               + alpha * mean_{s in D_r, i} KL( pi_ref(. | s_<i) || pi_theta(. | s_<i) )

The forget NLL is the token-mean over answer tokens. The KL covers every real position of the
retain sequence, prompt included, as in the TOFU code (which feeds the whole retain input), and
is averaged over those positions (:func:`unlearn_kb.engine.method.kl_divergence`).

Departure from the reference implementation: the TOFU and open-unlearning code average the KL
over every flattened position, padding included (``kl_div(..., reduction="batchmean")`` after
``view(-1, V)``); here padding is masked out, so the loss does not depend on how a batch was
padded. The registry record writes the KL as a per-sequence sum; the token mean used here (and by
the code) differs from it by the sequence length only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearn_kb.engine.method import GradientMethod, Step, kl_divergence, nll, with_total


@dataclass(frozen=True)
class Config:
    gamma: float  # weight of the (negated) forget NLL
    alpha: float  # weight of the KL retain term


class GAKL(GradientMethod):
    uses_retain = True
    uses_reference = True  # the KL's pi_ref: a frozen copy, read at every step

    def live_reference(self, config: Config) -> bool:
        return self.needs_retain(config)

    def loss(self, step: Step, config: Config) -> dict[str, torch.Tensor]:
        terms = {"forget": -config.gamma * nll(step.token_logprobs("forget"), step.mask("forget"))}
        if self.needs_retain(config):
            terms["retain"] = config.alpha * kl_divergence(
                step.reference_logits("retain"), step.logits("retain"), step.attention("retain"))
        return with_total(terms)
