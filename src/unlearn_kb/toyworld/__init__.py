"""The toy world: fictitious entities, their facts as question-answer pairs, and tiny Llama models.

The embedded default for everything that runs on a model: an **original** model trained on the
forget and retain facts, a **reference** trained on the retain facts only (the gold standard that
never saw the forget set), and on request a small **assistant** for logit-offset methods. Built
on the CPU in about a minute, cached on disk by config::

    from unlearn_kb.toyworld import WorldConfig, load_toyworld
    world = load_toyworld(WorldConfig())
    model = world.load("original")  # an engine.lm.LanguageModel

Importing this package does not import torch; building or loading a model does.
"""

from unlearn_kb.toyworld.config import WorldConfig
from unlearn_kb.toyworld.world import ToyWorld, cache_root, load_toyworld

__all__ = ["ToyWorld", "WorldConfig", "cache_root", "load_toyworld"]
