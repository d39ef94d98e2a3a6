"""Offset unlearning (delta-Unlearning): a small model pair's logit difference steers a frozen big model.

Paper: Huang, Zhou, Wang, Morstatter, Zhang, Poon, Chen, "Offset Unlearning for Large Language
Models", TMLR 2025, arXiv 2404.11045.

The big model's logits z_big stay frozen; a small model phi (same tokenizer) and a frozen copy
phi_0 of it form the offset:

    z(x) = z_big(x) + ( z_phi(x) - z_phi0(x) )
    phi* = argmin_phi L_unlearn( softmax z ; D_f, D_r )      (gradients reach phi only)

where L_unlearn is any gradient-based unlearning loss (``base_algorithm``: NPO, GA, ...), here the
registered method of that id run through the engine's trainer on the combined logits. At the
start phi = phi_0, so z = z_big and the method's reference (NPO's pi_ref) is the big model.

Departures from the usual reference implementation:

- the base loss's own hyperparameters (NPO's beta, alpha) are its record's paper defaults; the
  run settings (lr, steps) are this record's;
- a base method that picks its own trainable parameters or reads hidden states (RMU) is refused:
  only the small model is trained, and only logits are combined;
- serving recomputes both small models on the whole sequence at every generated token (no KV
  cache for them): simple and exact, and cheap when they are small.

The big model's weights never change (``weights_model``): an attacker holding them gets everything.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import torch

from unlearn_kb.engine.data import Example
from unlearn_kb.engine.lm import LanguageModel, left_padded_positions, side_logits
from unlearn_kb.engine.method import BuildMethod, Built, GradientMethod
from unlearn_kb.errors import ConfigError


@dataclass(frozen=True)
class Config:
    base_algorithm: str  # id of a registered gradient method whose loss trains the offset (npo, ga, ...)
    offset_model: str  # the small model: a checkpoint folder, or "assistant" for the toy world's


def offset_logits(small: torch.nn.Module, small_frozen: torch.nn.Module, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor) -> torch.Tensor:
    """``z_phi - z_phi0`` for every position, ``(B, T, V)``; no gradient reaches ``small_frozen``."""
    z = small(input_ids=input_ids, attention_mask=attention_mask, position_ids=left_padded_positions(attention_mask),
              use_cache=False).logits
    return z - side_logits(small_frozen, input_ids, attention_mask, input_ids.shape[1])


class OffsetModel(torch.nn.Module):
    """``z_big + z_small - z_small0`` behind a transformers-like forward, for the trainer."""

    def __init__(self, big: torch.nn.Module, small: torch.nn.Module, small_frozen: torch.nn.Module):
        super().__init__()
        self.big, self.small, self.small_frozen = big, small, small_frozen

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_cache: bool = False,
                **_: Any) -> SimpleNamespace:
        z_big = side_logits(self.big, input_ids, attention_mask, input_ids.shape[1])  # (B, T, V), no gradient
        return SimpleNamespace(logits=z_big + offset_logits(self.small, self.small_frozen, input_ids,
                                                            attention_mask))


@dataclass
class OffsetServed(LanguageModel):
    """The frozen big model with the trained offset added to its next-token logits."""

    small: Any = None
    small_frozen: Any = None

    intervention: ClassVar[str] = "output"

    def adjust_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      logits: torch.Tensor) -> torch.Tensor:
        # With a KV cache the big model returns logits for the last positions only; the small
        # models see the whole sequence, and the matching last positions are taken.
        offset = offset_logits(self.small, self.small_frozen, input_ids, attention_mask)  # (B, T, V)
        return logits + offset[:, -logits.shape[1]:].to(logits.dtype)


def small_only(method_cls: type[GradientMethod]) -> type[GradientMethod]:
    """``method_cls`` with its trainable parameters limited to the offset's small model."""
    if method_cls.trainable_parameters is not GradientMethod.trainable_parameters:
        raise ConfigError(f"base_algorithm '{method_cls.__name__}' chooses its own trainable parameters; "
                          "delta_unlearning trains the small offset model only (use npo, ga, grad_diff, ...)")

    class SmallOnly(method_cls):  # type: ignore[misc, valid-type]
        def trainable_parameters(self, model: torch.nn.Module, config: Any) -> list[str] | None:
            return [name for name, _ in model.named_parameters() if name.startswith("small.")]

    SmallOnly.__name__ = f"Offset{method_cls.__name__}"
    return SmallOnly


def _base(config: Config) -> tuple[type[GradientMethod], Any]:
    from unlearn_kb.cli.common import registry
    from unlearn_kb.engine.run import config_class, resolve_method, resolve_settings

    record, cls = resolve_method(config.base_algorithm, registry())
    if not issubclass(cls, GradientMethod):
        raise ConfigError(f"base_algorithm '{config.base_algorithm}' is not a gradient method")
    return small_only(cls), resolve_settings(record, config_class(cls), toy=False).config


class DeltaUnlearning(BuildMethod):
    def needs_retain(self, config: Config) -> bool:
        method_cls, base_config = _base(config)
        return method_cls().needs_retain(base_config)

    def build(self, original: LanguageModel, config: Config, run: Any, *, forget: Sequence[Example],
              retain: Sequence[Example] | None, seed: int, world: Any = None, log: Any = None,
              progress: Any = None) -> Built:
        from unlearn_kb.engine.trainer import train

        method_cls, base_config = _base(config)
        from unlearn_kb.engine.models import load_companion

        small = load_companion(config.offset_model, original.model, world, "offset_model")[0].to(original.device)
        small_frozen = copy.deepcopy(small).eval().requires_grad_(False)
        combined = OffsetModel(original.model, small, small_frozen)
        result = train(method_cls(), base_config, run, model=combined, tokenizer=original.tokenizer,
                       forget=forget, retain=retain, seed=seed, progress=progress, log=log)
        original.model.requires_grad_(False)
        small_frozen.requires_grad_(False)
        served = OffsetServed(model=original.model, tokenizer=original.tokenizer, max_length=original.max_length,
                              batch_size=original.batch_size, small=small.eval(), small_frozen=small_frozen)

        def save(folder: Path) -> None:
            small.save_pretrained(folder / "offset")
            original.tokenizer.save_pretrained(folder / "offset")

        frozen_from = str(world.assistant_path) if config.offset_model == "assistant" else config.offset_model
        return Built(lm=served, train=result, save=save, state={
            "base_algorithm": config.base_algorithm, "base_config": dataclasses.asdict(base_config),
            "offset_trained": "offset/", "offset_frozen": frozen_from})
