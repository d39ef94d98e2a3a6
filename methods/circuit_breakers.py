"""Circuit Breakers (Representation Rerouting, RR): make the hidden states on harmful text orthogonal to the original's.

Paper: Zou, Phan, Wang, Duenas, Lin, Andriushchenko, Wang, Kolter, Fredrikson, Hendrycks,
"Improving Alignment and Robustness with Circuit Breakers", NeurIPS 2024, arXiv 2406.04313.
Official code: GraySwanAI/circuit-breakers, ``src/lorra_circuit_breaker.py`` (read here from
copies of it in other public repositories; the repository itself is not in the search index).

Objective (Algorithm 1, "LoRRA with Representation Rerouting (RR) Loss"; M the frozen original,
M_cb the model being trained, rep the hidden states at the chosen layers, t = 1..T the step):

    c_s = alpha (1 - t / 2T),   c_r = alpha t / 2T                     (example coefficient schedule)
    L_s = ReLU(cos_sim(rep_M(x_s), rep_Mcb(x_s)))    x_s ~ D_s, the circuit-breaker set  (RR loss)
    L_r = || rep_M(x_r) - rep_Mcb(x_r) ||_2          x_r ~ D_r, the retain set           (retain loss)
    L   = c_s L_s + c_r L_r

Here D_s is the forget set and D_r the retain set. As in the code:

- ``rep`` for L_s is the hidden state at ``target_layers`` (Appendix C.2.1: layers 10 and 20),
  numbered as ``output_hidden_states`` numbers them (0 = embeddings, l = after decoder layer
  l - 1, 0-based); the ReLU'd cosine is averaged over every real token of every target layer
  (user and assistant text both: Appendix C.1, item 2);
- the code trains a copy of the model cut after decoder layer max(target_layers), so ``rep``
  for L_r is *every* hidden state of that cut model: the embeddings, the outputs of decoder
  layers 0 .. max - 1, and the final-normed output of decoder layer max; the per-token L2
  distance is averaged over layers and tokens;
- what is trained is the linear layers of decoder layers 0 .. max(target_layers) (the code's
  ``transform_layers -1``; the paper: "all linear layers from layers 0 through 20"); layers above
  never run in training;
- the schedule is ``p_t = t / H`` with ``H = schedule_horizon``, by default ``2T`` for a run of
  T steps (Algorithm 1's ``t / 2T``; the code hard-codes 300 = 2T for its T = 150 steps,
  ``get_training_progress``), and a term whose coefficient is <= 0 is skipped;
- the reference hidden states come from a frozen copy of the starting model (the code disables
  the LoRA adapter instead: the same weights).

Departures: (1) the paper trains LoRA adapters (r = 16, lora_alpha = 16, dropout 0.05); without
``--lora`` this module trains the same linear weights at full rank (give ``--lora
r=16,alpha=16,dropout=0.05`` for the paper's adapter; the adapter covers every layer, but layers
above max(target_layers) get no gradient). (2) The code's retain loss is ``nanmean`` over all
positions of its fixed-length padded batch (padding counted as distance 0), which makes its
scale depend on the padding; here padding is left out of the mean. (3) ``step.number`` is the
optimizer step, so with gradient accumulation t counts optimizer steps, while the code counts
``compute_loss`` calls (the same with its grad_accum = 1). The trainer does not tell a method
the run's total step count; here ``schedule_horizon = 0`` reads it from the engine (``Step.total``).
Some copies of the code use ``t / (T + 1)`` instead of ``t / 300``; the paper's Algorithm 1 and
the ``/ 300`` copies agree on ``t / 2T``.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import torch

from unlearn_kb.engine.method import (
    Batch,
    GradientMethod,
    Step,
    decoder_layers,
    decoder_layers_prefix,
    keep_outputs,
    with_total,
)
from unlearn_kb.errors import ConfigError


@dataclass(frozen=True)
class Config:
    alpha: float  # lorra_alpha: c_s = alpha (1 - p_t) on the rerouting term, c_r = alpha p_t on the retain term
    target_layers: list[int]  # hidden-state indices of the rerouting loss (0 = embeddings, l = after decoder layer l-1)
    schedule_horizon: int  # H in p_t = step / H; 0: 2T, twice the run's steps (Algorithm 1; the code's 300)


# --------------------------------------------------------------------------- the objective


def schedule(step: int, alpha: float, horizon: int) -> tuple[float, float]:
    """``(c_s, c_r)`` at optimizer step ``step`` (1-based): ``alpha (1 - p)``, ``alpha p``, ``p = step / horizon``."""
    progress = step / horizon
    return alpha * (1.0 - progress), alpha * progress


def rerouting_loss(rep: torch.Tensor, rep_orig: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ReLU of the per-token cosine similarity, mean over layers and real tokens.

    ``rep``, ``rep_orig``: ``(n_layers, B, T, H)``; ``mask``: real tokens ``(B, T)``.
    """
    rep, rep_orig = rep.float(), rep_orig.float()
    unit = rep / rep.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # (n, B, T, H)
    unit_orig = rep_orig / rep_orig.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    cosine = (unit * unit_orig).sum(-1)  # (n, B, T)
    keep = mask.bool().expand_as(cosine)  # (n, B, T)
    return torch.relu(cosine)[keep].sum() / keep.sum().clamp(min=1)


def retain_loss(rep: torch.Tensor, rep_orig: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token L2 distance ``|| rep - rep_orig ||_2``, mean over layers and real tokens.

    ``rep``, ``rep_orig``: ``(n_layers, B, T, H)``; ``mask``: real tokens ``(B, T)``.
    """
    distance = (rep.float() - rep_orig.float()).norm(dim=-1)  # (n, B, T)
    keep = mask.bool().expand_as(distance)
    return distance[keep].sum() / keep.sum().clamp(min=1)


# --------------------------------------------------------------------------- reading several layers in one pass


def cut_model_states(model: torch.nn.Module, run_to_layer: Any, top: int) -> list[torch.Tensor]:
    """Every hidden state of ``model`` cut after decoder layer ``top``, from one forward pass.

    ``run_to_layer(top)`` must run ``model`` up to decoder layer ``top`` and return that layer's
    output. Returns ``top + 2`` tensors ``(B, T, H)``, as ``output_hidden_states`` of the cut
    model: the embeddings, decoder layers 0 .. top - 1, and the final-normed output of layer top.
    """
    layers = decoder_layers(model)
    watched: dict[Hashable, torch.nn.Module] = {"embeddings": model.get_input_embeddings()}
    watched.update({i: layers[i] for i in range(top)})
    with keep_outputs(watched) as kept:
        last = run_to_layer(top)  # (B, T, H)
    if len(kept) != len(watched):
        raise RuntimeError("the forward pass did not run (a memoised hidden state?); the states cannot be read")
    return [kept["embeddings"], *(kept[i] for i in range(top)), model.get_decoder().norm(last)]


def layer_outputs(model: torch.nn.Module, run_to_layer: Any, indices: list[int]) -> list[torch.Tensor]:
    """Hidden states at ``indices`` (``output_hidden_states`` numbering, all >= 1) from one forward pass."""
    top = max(indices) - 1  # decoder layer whose output is hidden state max(indices)
    layers = decoder_layers(model)
    watched: dict[Hashable, torch.nn.Module] = {i - 1: layers[i - 1] for i in indices if i - 1 != top}
    with keep_outputs(watched) as kept:
        last = run_to_layer(top)  # (B, T, H)
    if len(kept) != len(watched):
        raise RuntimeError("the forward pass did not run (a memoised hidden state?); the states cannot be read")
    kept[top] = last
    return [kept[i - 1] for i in indices]


# --------------------------------------------------------------------------- the method


def _check_layers(model: torch.nn.Module, config: Config) -> None:
    n_layers = len(decoder_layers(model))
    if not config.target_layers or not all(1 <= i <= n_layers - 1 for i in config.target_layers):
        raise ConfigError(
            f"circuit_breakers: target_layers {config.target_layers} must be hidden-state indices in "
            f"1..{n_layers - 1} (the model has {n_layers} decoder layers; the code trains a copy cut after "
            "decoder layer max(target_layers), which must not be the last)")
    if config.alpha <= 0:
        raise ConfigError("circuit_breakers: alpha must be > 0 (it scales both terms)")
    if config.schedule_horizon < 0:
        raise ConfigError("circuit_breakers: schedule_horizon must be >= 1, or 0 for twice the run's steps")


class CircuitBreakers(GradientMethod):
    uses_retain = True
    uses_reference = True  # the frozen model's hidden states on both sets, read at every step

    def __init__(self) -> None:
        self.model: torch.nn.Module | None = None

    def trainable_parameters(self, model: torch.nn.Module, config: Config) -> list[str]:
        _check_layers(model, config)
        prefix = decoder_layers_prefix(model)
        layers = decoder_layers(model)
        return [f"{prefix}.{i}.{name}.weight"
                for i in range(max(config.target_layers) + 1)
                for name, module in layers[i].named_modules() if isinstance(module, torch.nn.Linear)]

    def prepare(self, model: torch.nn.Module, config: Config, generator: torch.Generator) -> None:
        _check_layers(model, config)
        self.model = model

    def _current(self, step: Step, which: str) -> Any:
        return lambda top: step.hidden(which, top)  # through the engine's (possibly distributed) wrapper

    @staticmethod
    def _frozen(step: Step, batch: Batch) -> Any:
        forward = step.reference.model
        assert forward is not None, "the reference is live for this method"
        return lambda top: forward(batch["input_ids"], batch["attention_mask"], stop_at_layer=top)

    def loss(self, step: Step, config: Config) -> dict[str, torch.Tensor]:
        assert self.model is not None, "prepare() runs before the first step"
        frozen = step.reference.model.lm  # type: ignore[union-attr]  # LMForward of the frozen copy
        c_s, c_r = schedule(step.number, config.alpha, config.schedule_horizon or 2 * max(1, step.total))
        terms: dict[str, torch.Tensor] = {}
        if c_s > 0:
            batch = step.batch("forget")
            rep = torch.stack(layer_outputs(self.model, self._current(step, "forget"), config.target_layers))
            with torch.no_grad():
                rep_orig = torch.stack(layer_outputs(frozen, self._frozen(step, batch), config.target_layers))
            terms["reroute"] = c_s * rerouting_loss(rep, rep_orig, batch["attention_mask"])
        if c_r > 0:
            batch = step.batch("retain")
            top = max(config.target_layers)
            rep = torch.stack(cut_model_states(self.model, self._current(step, "retain"), top))
            with torch.no_grad():
                rep_orig = torch.stack(cut_model_states(frozen, self._frozen(step, batch), top))
            terms["retain"] = c_r * retain_loss(rep, rep_orig, batch["attention_mask"])
        return with_total(terms)
