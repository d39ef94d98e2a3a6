"""Training the toy world's tiny Llama models on the CPU, and measuring what they recall.

The models learn from exactly the batches the unlearning engine builds (``engine.data``'s
``encode_all`` and ``collate``: the same prompt, loss on the answer tokens only), so that an
unlearning run starts from a model trained in the format it will be unlearned in.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unlearn_kb.engine.data import Example, collate, encode_all
from unlearn_kb.toyworld.config import WorldConfig

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

    from unlearn_kb.engine.lm import LanguageModel

Progress = Callable[[str], None]

CPU_THREADS = 2
"""Threads for training and measuring: the models are too small to profit from more."""


def _free_threads() -> int:
    """``CPU_THREADS``, or 1 on a machine already busy with other work.

    Oversubscribed OpenMP threads spin-wait on each other: with two other training processes on
    a two-core machine a step took 7.7 s at two threads and 0.13 s at one. The thread count does
    not change the weights (checked bit for bit), only the speed.
    """
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(CPU_THREADS, int(cores - busy + 0.5)))


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    n_layers: int
    n_heads: int
    intermediate_size: int


def shape_of(config: WorldConfig, which: str) -> ModelShape:
    """The original and the reference share one shape; the assistant is the small one."""
    if which == "assistant":
        return ModelShape(config.assistant_hidden_size, config.assistant_layers, config.assistant_heads,
                          config.assistant_intermediate_size)
    return ModelShape(config.hidden_size, config.n_layers, config.n_heads, config.intermediate_size)


def epochs_of(config: WorldConfig, which: str) -> int:
    return config.assistant_epochs if which == "assistant" else config.epochs


@contextmanager
def cpu_threads(n: int | None = None) -> Iterator[None]:
    """Use ``n`` torch threads (default: :func:`_free_threads`) in the block, then the caller's."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n if n is not None else _free_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def new_model(shape: ModelShape, tokenizer: PreTrainedTokenizerBase, max_length: int,
              seed: int) -> LlamaForCausalLM:
    """A freshly initialised Llama, its initialisation fixed by ``seed``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.n_layers,
        num_attention_heads=shape.n_heads,
        num_key_value_heads=shape.n_heads,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=max(64, max_length),
        # Untied, so that the answer words' output vectors and the names' input vectors, which
        # learn at config.embedding_lr, do not pull on each other (untied reached 99% recall in
        # 10 epochs where tied reached 97%).
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        rms_norm_eps=1e-5,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def train_model(
    shape: ModelShape,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    config: WorldConfig,
    *,
    epochs: int,
    seed: int,
    label: str = "model",
    progress: Progress | None = None,
) -> tuple[LlamaForCausalLM, dict[str, Any]]:
    """Train a new model on ``examples`` for ``epochs`` epochs; returns it (eval mode)
    and its training record (seconds, steps, final loss, parameters).

    AdamW with linear warmup and cosine decay to zero, the usual recipe for small transformers,
    except that the embeddings learn at ``config.embedding_lr`` (why: see :class:`WorldConfig`).
    Shuffling and initialisation are seeded, so a run is repeatable on the CPU.
    """
    import torch

    with cpu_threads():
        start, cpu_start = time.perf_counter(), time.process_time()
        model = new_model(shape, tokenizer, config.max_length, seed)
        model.train()
        encoded = encode_all(tokenizer, examples, config.max_length)
        steps_per_epoch = math.ceil(len(encoded) / config.batch_size)
        total = steps_per_epoch * epochs
        warmup = max(1, round(config.warmup_fraction * total))
        embeddings = [model.get_input_embeddings().weight, model.get_output_embeddings().weight]
        matrices = [p for p in model.parameters() if p.ndim >= 2 and all(p is not e for e in embeddings)]
        vectors = [p for p in model.parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": matrices, "weight_decay": config.weight_decay},
             {"params": vectors, "weight_decay": 0.0},
             {"params": embeddings, "weight_decay": 0.0, "lr": config.embedding_lr}],
            lr=config.lr, betas=(0.9, 0.98),
        )

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        generator = torch.Generator().manual_seed(seed)
        loss_value = float("nan")
        for epoch in range(epochs):
            order = torch.randperm(len(encoded), generator=generator).tolist()
            epoch_loss = 0.0
            for first in range(0, len(order), config.batch_size):
                batch = collate([encoded[i] for i in order[first:first + config.batch_size]],
                                tokenizer.pad_token_id)
                loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             labels=batch["labels"]).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                epoch_loss += loss.item()
            loss_value = epoch_loss / steps_per_epoch
            if progress is not None:
                progress(f"training {label}: epoch {epoch + 1}/{epochs}, loss {loss_value:.3f}")
        model.eval()
        # Wall time, and CPU time, which says more where other processes share the cores.
        record = {"seconds": round(time.perf_counter() - start, 1),
                  "cpu_seconds": round(time.process_time() - cpu_start, 1),
                  "threads": torch.get_num_threads(), "steps": total,
                  "examples": len(encoded), "final_loss": round(loss_value, 4),
                  "parameters": sum(p.numel() for p in model.parameters())}
    return model, record


def recall(model: LanguageModel, examples: Sequence[Example]) -> float:
    """Share of questions whose greedy answer is exactly the expected answer string."""
    if not examples:
        return float("nan")
    with cpu_threads():
        answers = model.generate_answers([e.question for e in examples], max_new_tokens=8)
    return sum(a == e.answer for a, e in zip(answers, examples, strict=True)) / len(examples)
