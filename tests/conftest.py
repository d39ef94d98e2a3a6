"""Fixtures shared by the test files. Expensive ones are session-scoped and cached on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE_REGISTRY = Path(__file__).parent / "fixtures" / "registry"


@pytest.fixture
def fixture_root(tmp_path: Path) -> Path:
    """A copy of the small fixture registry with the real taxonomy, safe to break."""
    root = tmp_path / "registry"
    shutil.copytree(FIXTURE_REGISTRY, root)
    shutil.copy(REPO / "registry" / "taxonomy.yaml", root / "taxonomy.yaml")
    return root


@pytest.fixture(scope="session")
def toy_world():
    """The default toy world, trained once per machine and then loaded from the cache.

    The cache is ``$UNLEARN_KB_CACHE`` when set (CI points it at a folder it keeps between runs),
    else the user cache (``~/.cache/unlearn-kb``), so a second test session starts at once.
    """
    from unlearn_kb.toyworld import WorldConfig, load_toyworld

    return load_toyworld(WorldConfig())
