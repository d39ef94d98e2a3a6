"""RMU (Representation Misdirection for Unlearning): scramble a middle layer's activations on forget text.

Paper: Li, Pan, Gopal, Yue, Berrios, Gatti, Li, Dombrowski, Goel, Phan, et al., "The WMDP
Benchmark: Measuring and Reducing Malicious Use With Unlearning", ICML 2024, arXiv 2403.03218
(first called CUT).

Objective (h^l: the residual stream after decoder layer l; u: a random unit vector, u = r/|r| with
r ~ U[0, 1)^d drawn once; c: the steering coefficient; L_f, L_r: token counts of a sequence):

    L = E_{x_f in D_f} (1/L_f) sum_{t in x_f} || h^l_theta(t) - c u ||_2^2
        + alpha * E_{x_r in D_r} (1/L_r) sum_{t in x_r} || h^l_theta(t) - h^l_frozen(t) ||_2^2

Only the MLP down-projections of ``update_layers`` (l-2, l-1, l in the paper) are trained, every
token of a sequence counts (prompt included: the paper's forget corpus is plain text), and the
forward pass stops at layer l, so layers above it and the LM head never run.

Departure from the usual reference implementation: the WMDP code uses ``F.mse_loss``, a mean over
batch, positions (padding included) and the d hidden dimensions, i.e. the paper's formula divided
by d, with padding counted. This module follows the paper: squared L2 distance per token,
averaged over each sequence's real tokens, then over the batch. ``reduction = 'code'`` gives the
code's form. The two terms scale together, so alpha and c carry over between the two; only the
overall loss scale changes (Adam is insensitive to it, gradient clipping is not: set ``clip`` to
0 to match the code, which does not clip). open-unlearning's RMU normalises per token over the
hidden dimension and ships other defaults (c = 2, alpha = 1), which do not carry over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from unlearn_kb.engine.method import (
    GradientMethod,
    Step,
    decoder_layers,
    decoder_layers_prefix,
    sequence_mean,
    with_total,
)
from unlearn_kb.errors import ConfigError


@dataclass(frozen=True)
class Config:
    layer: int  # decoder layer (0-based) whose output activations are steered
    update_layers: list[int]  # decoder layers whose `update_param` is trained
    steering_coeff: float  # c, the norm of the control vector c*u
    alpha: float  # weight of the retain (activation-matching) term
    update_param: str  # parameter trained in each update layer (the code's param_ids 6: mlp.down_proj)
    reduction: Literal["paper", "code"]  # 'paper': per-token squared L2, token mean; 'code': mse_loss over all elements


def activation_loss(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                    reduction: str = "paper") -> torch.Tensor:
    """Distance between activations and a target.

    ``hidden``: ``(B, T, H)``; ``target``: ``(B, T, H)`` or ``(H,)``; ``mask``: real tokens ``(B, T)``.
    'paper': squared L2 norm per token, mean over each sequence's real tokens, mean over sequences;
    'code': ``F.mse_loss``, the mean over every element, padding included.
    """
    target = target.float().expand_as(hidden)
    if reduction == "code":
        return F.mse_loss(hidden.float(), target)
    squared = (hidden.float() - target).pow(2).sum(-1)  # (B, T)
    return sequence_mean(squared, mask)


def control_vector(hidden_size: int, steering_coeff: float, generator: torch.Generator) -> torch.Tensor:
    """``c * u`` with ``u = r / |r|``, ``r ~ U[0, 1)^d``, as in the WMDP code; ``(H,)``."""
    r = torch.rand(hidden_size, generator=generator)
    return steering_coeff * r / r.norm()


class RMU(GradientMethod):
    uses_retain = True
    uses_reference = True  # h^l_frozen on retain tokens (cached per example while it fits)

    def __init__(self) -> None:
        self.control: torch.Tensor | None = None

    def live_reference(self, config: Config) -> bool:
        return self.needs_retain(config)

    def trainable_parameters(self, model: torch.nn.Module, config: Config) -> list[str]:
        n_layers = len(decoder_layers(model))
        bad = [i for i in [config.layer, *config.update_layers] if not 0 <= i < n_layers]
        if bad:
            raise ConfigError(f"rmu: layers {bad} do not exist; the model has {n_layers} decoder layers "
                              f"(0..{n_layers - 1}); set layer and update_layers")
        if any(i > config.layer for i in config.update_layers):
            raise ConfigError(f"rmu: update_layers {config.update_layers} must not lie above layer "
                              f"{config.layer}: the forward pass stops there, so they get no gradient")
        prefix = decoder_layers_prefix(model)
        names = [f"{prefix}.{i}.{config.update_param}" for i in config.update_layers]
        known = dict(model.named_parameters())
        missing = [n for n in names if n not in known]
        if missing:
            inside = sorted(n.removeprefix(f"{prefix}.0.") for n in known if n.startswith(f"{prefix}.0."))
            raise ConfigError(f"rmu: no parameter {missing[0]}; update_param must be one of {inside}")
        return names

    def prepare(self, model: torch.nn.Module, config: Config, generator: torch.Generator) -> None:
        self.control = control_vector(model.config.hidden_size, config.steering_coeff, generator)

    def loss(self, step: Step, config: Config) -> dict[str, torch.Tensor]:
        assert self.control is not None, "prepare() runs before the first step"
        hidden = step.hidden("forget", config.layer)  # (B, T, H)
        tokens = step.batch("forget")["attention_mask"].bool()  # (B, T)
        terms = {"forget": activation_loss(hidden, self.control.to(hidden.device), tokens, config.reduction)}
        if self.needs_retain(config):
            retain_tokens = step.batch("retain")["attention_mask"].bool()
            terms["retain"] = config.alpha * activation_loss(
                step.hidden("retain", config.layer), step.reference_hidden("retain", config.layer),
                retain_tokens, config.reduction)
        return with_total(terms)
