"""MEMIT used for deletion: one batched least-squares edit, spread over several MLP layers, for many facts.

Papers: Meng, Sen Sharma, Andonian, Belinkov, Bau, "Mass-Editing Memory in a Transformer", ICLR 2023,
arXiv 2210.07229 (official code kmeng01/memit: ``memit/memit_main.py``, ``memit/compute_z.py``); used
for deletion by Patil, Hase, Bansal, arXiv 2309.17410 (code Vaidehi99/InfoDeletionAttacks, whose
``fact_erasure`` objective is taken here, as for ROME; see :mod:`unlearn_kb.methods.rome`).

For edits i = 1..n with subject s_i, and the edited layers R = {l_1 < ... < l_L} (Llama: each
layer's ``mlp.down_proj``), on the original model:

    z_i = h_i^{L} + delta_i,  delta_i = argmin  L_del(delta) + kl_factor * KL(P_delta || P)
                                       + v_weight_decay * ||delta|| / ||h_i^{L}||^2,
          ||delta_i|| <= clamp_norm_factor * ||h_i^{L}||     (compute_z.py: delta on the residual
                                       stream after the last edited layer L, at the subject's last token)

then for each layer l = l_1, ..., l_L in turn (on the model the previous layers' edits left):

    K   = [k_1 ... k_n]                         down_proj keys at each subject's last token
    R^l = (Z - H^{L}) / (L - l + 1)              the remaining residual, spread over the layers left
    Delta^l = R^l K^T (lambda C_0 + K K^T)^{-1}, lambda = mom2_update_weight   (paper Eq. 14)
    C_0 = E[k k^T]                               uncentred second moment of layer l's keys

L_del is Patil et al.'s fact erasure, exp(-mean_j NLL_j(answer)) (``target: erase``), or ROME/MEMIT's
NLL towards the example's alternate answer (``target: alternate``), exactly as in the ROME module.

Departures from the official code, and why:

- prompts, keys and z: as in the ROME module, the N prompts per edit are its phrasings in the forget
  set (not generated prefixes); keys, h^L and the residual H^L are averaged over them (MEMIT averages
  keys over its context templates, and reads z's starting value and H^L at the bare prompt);
- KL prompt "{subject} is a" inside the QA prompt; C_0 from the retain set's questions and answers
  rather than 100k Wikipedia samples, computed once on the original model as the code caches it;
- ``edit_unit: subject`` may group all of a subject's forget facts into one edit (one key); the
  default ``fact`` is MEMIT's one request per (s, r, o);
- the search for each delta is a short Adam loop over one vector (as ``compute_z.py``), not model
  training, so it does not go through the engine's trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from unlearn_kb.engine.data import Example
from unlearn_kb.engine.lm import LanguageModel
from unlearn_kb.engine.method import BuildMethod, Built, decoder_layers
from unlearn_kb.methods.rome import (
    Target,
    Unit,
    answer_probability,
    check_layers,
    down_proj,
    encode_request,
    frozen,
    make_requests,
    memit_update,
    read_at_subject,
    read_many_at_subject,
    search_delta,
    second_moments,
)


@dataclass(frozen=True)
class Config:
    layers: list[int]  # decoder layers whose mlp.down_proj is edited; z is set after the last (GPT-J: 3..8)
    v_num_grad_steps: int  # Adam steps of the search for each z_i
    v_lr: float  # Adam learning rate of that search
    v_weight_decay: float  # weight of ||delta|| / ||h^L||^2 in the search's loss
    clamp_norm_factor: float  # ||delta|| is projected to at most this times ||h^L||
    kl_factor: float  # weight of KL(P_delta || P) at the subject token of the "{subject} is a" prompt
    mom2_update_weight: float  # lambda: weight of preserving the old keys (C_0) against inserting the new
    target: Target  # "erase": minimise p(answer) (Patil et al.); "alternate": maximise p(alternate answer)
    edit_unit: Unit  # one key per "fact" (MEMIT's request), or per "subject" (all its forget facts at once)


class MEMIT(BuildMethod):
    """Delete all forget facts at once with MEMIT's multi-layer least-squares update."""

    def needs_retain(self, config: Config) -> bool:
        return True  # C_0 comes from retain text

    def build(self, original: LanguageModel, config: Config, run: Any, *, forget: Sequence[Example],
              retain: Sequence[Example] | None, seed: int, world: Any = None,
              log: Callable[[dict[str, Any]], None] | None = None,
              progress: Callable[[dict[str, Any]], None] | None = None) -> Built:
        torch.manual_seed(seed)
        model, tokenizer = original.model, original.tokenizer
        model.eval()
        layers = check_layers(model, config.layers)
        z_layer = layers[-1]
        residual = decoder_layers(model)[z_layer]
        requests = make_requests(forget, config.target, config.edit_unit)
        device = next(model.parameters()).device
        batches = [encode_request(tokenizer, r, run.max_length, device) for r in requests]
        covs = {layer: c.to(device) for layer, c in
                second_moments(model, tokenizer, retain or [], layers, run.max_length).items()}

        def emit(record: dict[str, Any]) -> None:
            if log is not None:
                log(record)
            if progress is not None:
                progress(record)

        total = len(batches) + len(layers)
        zs = []
        with frozen(model):
            for number, batch in enumerate(batches, start=1):  # z_i on the original model
                start = read_at_subject(model, residual, batch, batch.rewrite, inputs=False)  # (H,) h_i^L
                delta, terms = search_delta(model, residual, batch, start, config, config.target)
                zs.append(start + delta)
                emit({"step": number, "total_steps": total, **terms, "delta_norm": float(delta.norm()),
                      "tokens_per_s": 0.0})
            targets = torch.stack(zs, dim=1)  # (H, n)
            before = sum(answer_probability(model, b) for b in batches) / len(batches)
            norms = {}
            for i, layer in enumerate(layers):
                module = down_proj(model, layer)
                # One pass per request reads both its key here and its current h^L.
                reads = [read_many_at_subject(model, b, b.rewrite, [(module, True), (residual, False)])
                         for b in batches]
                keys = torch.stack([key for key, _ in reads], dim=1)  # (d_ff, n)
                current = torch.stack([h for _, h in reads], dim=1)  # (H, n)
                residuals = (targets - current) / (len(layers) - i)  # (H, n)
                change = memit_update(module.weight, covs[layer], keys, residuals, config.mom2_update_weight)
                with torch.no_grad():
                    module.weight += change.to(module.weight.dtype)
                norms[layer] = float(change.norm())
                emit({"step": len(batches) + i + 1, "total_steps": total, "layer": layer,
                      "residual_norm": float(residuals.norm(dim=0).mean()), "update_norm": norms[layer],
                      "tokens_per_s": 0.0})
            after = sum(answer_probability(model, b) for b in batches) / len(batches)
        model.eval()
        state = {"edits": len(requests), "edit_unit": config.edit_unit, "layers": layers, "target": config.target,
                 "mom2_update_weight": config.mom2_update_weight, "update_norms": norms,
                 "p_target_before": before, "p_target_after": after, "covariance_tokens_from": "retain set"}
        return Built(lm=original, state=state)
