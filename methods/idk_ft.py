"""IdK fine-tuning: train the model to answer forget questions with a refusal ("I don't know").

Paper: Maini, Feng, Schwarzschild, Lipton, Kolter, "TOFU: A Task of Fictitious Unlearning for
LLMs", 2024, arXiv 2401.06121 (a baseline; the refusals are TOFU's ``idontknow.jsonl``).

Objective:

    L_IdK(theta) = E_{(x,y) in D_f, y_idk ~ R}[ -log pi_theta(y_idk | x) ]
                   + alpha * E_{D_r}[ -log pi_theta(y | x) ]

Each NLL is the token-mean over answer tokens. The refusal y_idk is each forget example's
``alternate`` answer (a string, or a list from which the engine picks one per example).

Departure from the reference implementation: the TOFU code concatenates the refusal and retain
examples into one batch and takes one token-mean loss, which weights the two parts by their token
counts; here they are two token-means added with weight alpha (alpha = 1 is the TOFU setting up
to that weighting). This is suppression by design: the model learns to decline, and nothing
targets the knowledge itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearn_kb.engine.method import GradientMethod, Step, nll, with_total


@dataclass(frozen=True)
class Config:
    alpha: float  # weight of the retain NLL


class IdkFinetune(GradientMethod):
    uses_retain = True
    uses_alternate = True

    def loss(self, step: Step, config: Config) -> dict[str, torch.Tensor]:
        terms = {"forget": nll(step.token_logprobs("alternate"), step.mask("alternate"))}
        if self.needs_retain(config):
            terms["retain"] = config.alpha * nll(step.token_logprobs("retain"), step.mask("retain"))
        return with_total(terms)
