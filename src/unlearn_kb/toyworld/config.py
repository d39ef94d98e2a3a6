"""The toy world's parameters: one frozen value that names a world and its cache folder.

Every field changes the data or the weights, so every field is part of the cache key. The
defaults are tuned for the test suite, which builds this world once per CI run on a two-core
CPU: they are the cheapest settings measured to reach >= 95% recall through the training
templates and >= 50% through the held-out paraphrases (figures in ``world.info()``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from unlearn_kb.errors import ConfigError

FORMAT_VERSION = 2
"""Bump when the generator's word lists or templates, or the training code, change: it is part of
the cache key, so old caches are not mistaken for the new world."""

MAX_ATTRIBUTES = 6
MAX_TEMPLATES = 8


@dataclass(frozen=True)
class WorldConfig:
    """What to generate and how to train on it. Same config, same world (and, on CPU, weights)."""

    # ---------------------------------------------------------------- the facts
    n_entities: int = 200
    seed: int = 0
    n_attributes: int = 4  # of city, profession, colour, instrument, pet, sport (in that order)
    # Question templates per attribute; the last ``n_paraphrase_templates`` of them are never
    # trained and measure knowledge rather than memorised strings. Many phrasings of one fact
    # are what makes it extractable through a new one (knowledge augmentation, "Physics of
    # Language Models: Part 3.1", arXiv 2309.14316).
    n_templates: int = 6
    n_paraphrase_templates: int = 1
    forget_fraction: float = 0.1
    holdout_fraction: float = 0.1  # entities no model ever trains on: non-members for MIA
    n_perturbed: int = 3  # wrong answers per fact, for the truth ratio (TOFU uses several)

    # ---------------------------------------------------------------- the original and reference
    hidden_size: int = 128
    n_layers: int = 4
    n_heads: int = 4
    intermediate_size: int = 512

    # ---------------------------------------------------------------- the assistant (ULD, delta)
    assistant_hidden_size: int = 64
    assistant_layers: int = 2
    assistant_heads: int = 2
    assistant_intermediate_size: int = 256
    # Twice the epochs: a small model memorises more slowly, and at a quarter of the cost per
    # step it can afford them (5 epochs gave 86% forget recall; ULD wants it to know them).
    assistant_epochs: int = 10

    # ---------------------------------------------------------------- training (all three models)
    epochs: int = 5
    batch_size: int = 64
    lr: float = 2e-3
    # Input and output embeddings learn 30x faster than the rest. A name token appears in one
    # batch in three, and until its embedding stands out the model cannot attend to it: with
    # one learning rate for all, recall sat at chance for 5 epochs and reached 53% after 20;
    # with this one, 100% after 5 (the default world; seeds 1 and 2 alike).
    embedding_lr: float = 6e-2
    warmup_fraction: float = 0.05
    weight_decay: float = 0.1  # on matrices only; embeddings of unseen names stay as initialised
    # Also train on ``general`` (one declarative sentence per retain fact), so that its
    # perplexity measures fluency the models have, not text they never saw.
    train_on_general: bool = True
    max_length: int = 48  # tokens; the longest toy example is about 20

    def __post_init__(self) -> None:
        problems = []
        if self.n_entities < 10:
            problems.append(f"n_entities must be at least 10, got {self.n_entities}")
        if not 1 <= self.n_attributes <= MAX_ATTRIBUTES:
            problems.append(f"n_attributes must be 1..{MAX_ATTRIBUTES}, got {self.n_attributes}")
        if not 2 <= self.n_templates <= MAX_TEMPLATES:
            problems.append(f"n_templates must be 2..{MAX_TEMPLATES}, got {self.n_templates}")
        if not 1 <= self.n_paraphrase_templates < self.n_templates:
            problems.append("n_paraphrase_templates must be at least 1 and less than n_templates")
        if not 0 < self.forget_fraction < 1 or not 0 <= self.holdout_fraction < 1 \
                or self.forget_fraction + self.holdout_fraction >= 1:
            problems.append("forget_fraction (> 0) and holdout_fraction (>= 0) must sum to less than 1")
        if not 1 <= self.n_perturbed <= 15:
            problems.append(f"n_perturbed must be 1..15, got {self.n_perturbed}")
        for name in ("hidden_size", "n_layers", "n_heads", "intermediate_size", "assistant_hidden_size",
                     "assistant_layers", "assistant_heads", "assistant_intermediate_size", "assistant_epochs", "epochs",
                     "batch_size", "max_length"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.n_heads or self.assistant_hidden_size % self.assistant_heads:
            problems.append("hidden sizes must be divisible by their head counts")
        if self.lr <= 0 or self.embedding_lr <= 0 or not 0 <= self.warmup_fraction < 1 or self.weight_decay < 0:
            problems.append("lr and embedding_lr must be positive, warmup_fraction in [0, 1), weight_decay >= 0")
        if problems:
            raise ConfigError("invalid WorldConfig: " + "; ".join(problems))

    @property
    def n_training_templates(self) -> int:
        return self.n_templates - self.n_paraphrase_templates

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def key(self) -> str:
        """Short stable hash of every field and the format version: the cache folder's name."""
        payload = json.dumps({"format": FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]
