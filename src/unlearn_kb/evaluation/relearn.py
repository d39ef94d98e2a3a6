"""The relearning attack: fine-tune briefly on some forget facts, watch the others come back.

Deeb & Roger (arXiv 2410.08827, "Do Unlearning Methods Remove Information from Language Model
Weights?") fine-tune on a set T of forgotten facts and measure accuracy on an independent set V
of forgotten facts: anything regained on V can only come from information still in the weights,
because V was never shown. They recover most of the pre-unlearning accuracy for every method
they test. Hu et al. (arXiv 2406.13356) and Lynch et al. (arXiv 2402.16835) report the same with
small relearning sets.

Here T and V are the two halves of the forget set split *by entity*, so no fact (and no other
fact about the same entity) is in both. The same attack with the same seed, learning rate and
step count runs on the reference model, which never saw either half: what it "recovers" on V is
the attack's own generalisation (answer format, value priors), the floor the unlearned model is
judged against. The attack runs on ``lm.weights_model``: an attacker fine-tunes the weights, not a
wrapper's prompt or filter.

This is an evaluation, not an unlearning method, so it has its own few-line loop (plain AdamW,
constant learning rate, answer-token cross-entropy) rather than the engine's trainer: the attack
must stay the same while the trainer evolves.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from unlearn_kb.engine.data import IGNORE_INDEX, Example, collate, encode_all

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class RelearnConfig:
    """The attack budget; fixed so that every model faces the same attack."""

    # A few steps, yet enough to teach T from scratch: on the toy world the reference goes from
    # chance to 0.99 recall on T in these 30 steps (``relearn.forget_a_after`` in every report),
    # so a failure to recover V is not a failure of the attack to train.
    steps: int = 30
    lr: float = 1e-3  # half the toy world's training rate, constant (no warmup or decay)
    batch_size: int = 32
    seed: int = 0


def entity_of(example: Example) -> str:
    """What a split must keep together: the entity, or (without one) the question itself."""
    return str(example.extras.get("entity", example.question if example.is_qa else example.text))


def split_by_entity(examples: Sequence[Example], seed: int = 0) -> tuple[list[Example], list[Example]]:
    """Two halves of ``examples`` that share no entity (the attack's T and V)."""
    entities = sorted({entity_of(e) for e in examples})
    if len(entities) < 2:
        raise ValueError("the relearning attack needs at least two entities (or questions) to split")
    random.Random(f"relearn-split-{seed}").shuffle(entities)
    half = set(entities[: len(entities) // 2])
    first = [e for e in examples if entity_of(e) in half]
    second = [e for e in examples if entity_of(e) not in half]
    return first, second


def relearn(model: nn.Module, tokenizer: PreTrainedTokenizerBase, train: Sequence[Example],
            config: RelearnConfig, max_length: int = 256) -> nn.Module:
    """A fine-tuned copy of ``model`` after ``config.steps`` AdamW steps on ``train``."""
    import torch

    attacked = copy.deepcopy(model)
    attacked.requires_grad_(True)  # the attacker trains every weight, whatever the method froze
    attacked.train()
    encoded = encode_all(tokenizer, list(train), max_length)
    optimizer = torch.optim.AdamW(attacked.parameters(), lr=config.lr, weight_decay=0.0)
    order_rng = random.Random(f"relearn-order-{config.seed}")
    device = next(attacked.parameters()).device
    order: list[int] = []
    torch.manual_seed(config.seed)
    for _ in range(config.steps):
        if len(order) < config.batch_size:
            fresh = list(range(len(encoded)))
            order_rng.shuffle(fresh)
            order += fresh
        picked, order = order[: config.batch_size], order[config.batch_size:]
        batch = collate([encoded[i] for i in picked], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = attacked(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
            batch["labels"][:, 1:].reshape(-1),
            ignore_index=IGNORE_INDEX,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    attacked.eval()
    return attacked
