"""Fixtures for the engine and method tests: a tiny random Llama, built once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import build_tiny_model, examples  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved random Llama (3 layers, hidden 32) with its tokenizer."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def tiny(tiny_model_dir: Path):
    """A fresh (model, tokenizer) pair loaded from :func:`tiny_model_dir`."""
    from unlearn_kb.engine.models import load_model

    return load_model(tiny_model_dir)


@pytest.fixture
def tiny_data():
    """Forget and retain question-answer pairs with alternate (refusal) answers."""
    return examples()


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    """Tiny models run fastest on one thread, and two threads per process thrash when several
    processes share the two cores of a CI runner (measured here: 1 s tests took 50 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
