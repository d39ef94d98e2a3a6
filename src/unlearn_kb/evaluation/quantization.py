"""Weight quantization as a knowledge probe: does rounding the weights bring the facts back?

Zhang et al. (arXiv 2410.16454, "Catastrophic Failure of LLM Unlearning via Quantization", ICLR
2025) found that 4-bit quantization restores much of the forgotten knowledge (21% -> 83% retained)
for gradient methods with a utility constraint: unlearning moves the weights by less
than one quantization step, so rounding snaps them back towards the original.

We quantize with round-to-nearest (RTN), symmetric, per output channel (one scale per row of
each ``nn.Linear`` weight, or per ``group_size`` block of a row), and dequantize at once
("fake quantization"): the model stays a float model, so every metric runs unchanged.

``w_q = s * clamp(round(w / s), -(2^(b-1) - 1), 2^(b-1) - 1)``, ``s = max|w_row| / (2^(b-1) - 1)``,
hence ``|w - w_q| <= s / 2`` element-wise. The output head is left in full precision, as
bitsandbytes and GPTQ do by default (``llm_int8_skip_modules`` / ``lm_head`` is not quantized).
"""

from __future__ import annotations

import copy
import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

SKIP_MODULES = ("lm_head",)


def rtn_quantize(weight: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """Round-to-nearest symmetric quantization of a 2-D weight ``(out, in)``, dequantized.

    One scale per output channel, or per contiguous block of ``group_size`` inputs of a channel.
    """
    import torch

    if bits < 2:
        raise ValueError("RTN needs at least 2 bits")
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(weight.shape)}")
    out_features, in_features = weight.shape
    w = weight.detach().float()
    if group_size is not None:
        if in_features % group_size:
            raise ValueError(f"group_size {group_size} does not divide {in_features} input features")
        w = w.reshape(out_features * in_features // group_size, group_size)
    levels = 2 ** (bits - 1) - 1
    scale = w.abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / levels
    quantized = torch.clamp(torch.round(w / scale), -levels, levels) * scale
    return quantized.reshape(out_features, in_features).to(weight.dtype)


def quantize_model(model: nn.Module, bits: int, group_size: int | None = None,
                   skip: tuple[str, ...] = SKIP_MODULES) -> nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` weights (except ``skip``) are RTN-quantized."""
    import torch

    quantized = copy.deepcopy(model)
    with torch.no_grad():
        for name, module in quantized.named_modules():
            if isinstance(module, torch.nn.Linear) and name.split(".")[-1] not in skip:
                module.weight.copy_(rtn_quantize(module.weight, bits, group_size))
    return quantized


def library_quantization_status() -> str:
    """Why no library quantization is run here (a real backend is optional)."""
    found = [name for name in ("bitsandbytes", "optimum.quanto", "torchao")
             if _has_module(name)]
    if not found:
        return ("skipped: no quantization library is installed (bitsandbytes, optimum-quanto, "
                "torchao); RTN results only")
    return (f"skipped: {', '.join(found)} installed but not wired in yet; RTN results only "
            "(RTN is the baseline of arXiv 2410.16454)")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
