"""LoRA adapters (through ``peft``) for any gradient method: ``--lora r=16,alpha=32,targets=q_proj,v_proj``.

With an adapter only its low-rank matrices are trained (Hu et al., arXiv 2106.09685): the
optimizer state shrinks from two copies of every weight to two copies of the adapter, which is
what lets a 7B model be unlearned on one GPU. The adapter starts at zero (``B = 0``), so at the
first step the adapted model *is* the original, and reference quantities cached then are the
reference's. On save the adapter is merged into the weights by default (an ordinary checkpoint
that loads anywhere), or kept apart with ``merge=false``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unlearn_kb.errors import ConfigError

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSpec:
    """What ``--lora`` asks for."""

    r: int = 16
    alpha: float = 32.0  # the update is scaled by alpha / r (peft's lora_alpha)
    dropout: float = 0.0  # no dropout: unlearning runs are short, and dropout adds noise to the loss
    targets: tuple[str, ...] = field(default=DEFAULT_TARGETS)
    merge: bool = True  # merge the adapter into the saved weights


def parse_lora(text: str) -> LoraSpec:
    """Parse ``r=16,alpha=32,targets=q_proj,v_proj,merge=false`` (targets take the names after it)."""
    values: dict[str, Any] = {}
    targets: list[str] = []
    current = None
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if "=" in part:
            key, _, value = part.partition("=")
            key, value = key.strip(), value.strip()
            current = key
            if key == "targets":
                targets.append(value)
                continue
            try:
                if key == "r":
                    values["r"] = int(value)
                elif key in ("alpha", "dropout"):
                    values[key] = float(value)
                elif key == "merge":
                    if value.lower() not in ("true", "false"):
                        raise ValueError
                    values["merge"] = value.lower() == "true"
                else:
                    raise ConfigError(f"--lora: unknown key '{key}'; valid: r, alpha, dropout, targets, merge")
            except ValueError:
                raise ConfigError(f"--lora: '{key}={value}' is not a valid value") from None
        elif current == "targets":
            targets.append(part)
        else:
            raise ConfigError(f"--lora: '{part}' is not key=value (e.g. r=16,alpha=32,targets=q_proj,v_proj)")
    if targets:
        values["targets"] = tuple(targets)
    spec = LoraSpec(**values)
    if spec.r < 1 or spec.alpha <= 0 or not 0 <= spec.dropout < 1:
        raise ConfigError("--lora: r must be >= 1, alpha > 0 and dropout in [0, 1)")
    return spec


def add_adapter(model: Any, spec: LoraSpec, seed: int = 0) -> tuple[Any, list[str]]:
    """Wrap ``model`` with a LoRA adapter; return it and the names of the adapter's parameters.

    ``A`` is drawn at random (``B`` starts at zero): from ``seed``, so that a run is reproducible
    and the processes of a multi-process run start from the same adapter.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in spec.targets if t not in present]
    if missing:
        raise ConfigError(f"--lora targets {missing} are not modules of this model; it has e.g. "
                          f"{sorted(n for n in present if n.endswith('proj'))[:8]}")
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=list(spec.targets), bias="none", task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        wrapped = get_peft_model(model, config)
    trained = [name for name, p in wrapped.named_parameters() if p.requires_grad]
    return wrapped, trained


def for_saving(model: Any, spec: LoraSpec, gathered: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any] | None]:
    """The model to ``save_pretrained`` and the weights to give it: merged into plain weights, or
    the adapter alone.

    ``gathered`` is a sharded run's whole state dict (FSDP: the model's own parameters are shards,
    so peft cannot merge in place). The merge is then done on those tensors, and the base model
    saves them; with ``merge=false`` peft picks the adapter's tensors out of them.
    """
    if gathered is None:
        return (model.merge_and_unload() if spec.merge else model), None
    if not spec.merge:
        return model, gathered
    return model.get_base_model(), merged_weights(gathered, spec)


def merged_weights(state: dict[str, Any], spec: LoraSpec, adapter: str = "default") -> dict[str, Any]:
    """A peft LoRA model's state dict with every adapter merged: the plain model's state dict.

    Each adapted linear layer becomes W + (alpha / r) B A (Hu et al., arXiv 2106.09685, eq. 3;
    peft's ``lora_alpha / r`` scaling), computed in float32 and stored in W's dtype.
    """
    import torch

    prefix, scale = "base_model.model.", spec.alpha / spec.r
    merged: dict[str, Any] = {}
    for name, tensor in state.items():
        if ".lora_A." in name or ".lora_B." in name:
            continue
        plain = name.removeprefix(prefix)
        if name.endswith(".base_layer.weight"):
            layer = name.removesuffix(".base_layer.weight")
            a, b = state[f"{layer}.lora_A.{adapter}.weight"], state[f"{layer}.lora_B.{adapter}.weight"]
            update = scale * (b.to(torch.float32) @ a.to(torch.float32))
            tensor = (tensor.to(torch.float32) + update).to(tensor.dtype)
        merged[plain.replace(".base_layer.", ".")] = tensor
    return merged
