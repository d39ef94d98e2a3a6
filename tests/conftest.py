"""Fixtures shared by the test files. Expensive ones are session-scoped and cached on disk."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def toy_world():
    """The default toy world, trained once per machine and then loaded from the cache.

    The cache is ``$UNLEARN_KB_CACHE`` when set (CI points it at a folder it keeps between runs),
    else the user cache (``~/.cache/unlearn-kb``), so a second test session starts at once.
    """
    from unlearn_kb.toyworld import WorldConfig, load_toyworld

    return load_toyworld(WorldConfig())
