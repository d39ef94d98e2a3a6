"""Every implemented method, run with its toy-world defaults, forgets and keeps the rest.

Each run starts from the toy world's original model (which recalls its training facts, >= 0.95
exact match) and uses the record's ``toy_overrides``. A method passes when forget recall falls to
at most ``forget_max`` while retain recall stays at least ``retain_min``: a no-op keeps forget
recall near 1 and fails the first bound; a method that wrecks the model fails the second.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from toy_bounds import run_within_bounds

from unlearn_kb.registry import load_registry

# method: (forget_max, retain_min, why). Measured on the default world (forget / retain recall
# after the run, from 1.00 / 1.00): the bounds leave room for CPU thread-count noise.
EXPECTED: dict[str, tuple[float, float, str]] = {
    "ga": (0.7, 0.5, "0.53 / 0.69: no retain term, so damage spreads to retain facts that share the "
                     "answer words; the bounds catch a no-op (forget ~1) and a collapse (retain ~0)"),
    "grad_diff": (0.7, 0.5, "0.48 / 0.66: the retain NLL slows but does not stop the ascent's damage"),
    "ga_kl": (0.75, 0.55, "0.57 / 0.73: a KL anchor, weaker than a retain NLL on recall"),
    "npo": (0.45, 0.7, "0.28 / 0.85: bounded ascent with a retain NLL"),
    "simnpo": (0.45, 0.8, "0.29 / 0.93"),
    "idk_ft": (0.1, 0.8, "0.00 / 0.97: suppression, the forget answers become refusals"),
    "dpo_idk": (0.5, 0.8, "0.33 / 0.96: suppression, the refusal is preferred on most forget questions"),
    "wga": (0.35, 0.8, "0.19 / 0.90"),
    "satimp": (0.45, 0.7, "0.27 / 0.82"),
    "undial": (0.4, 0.7, "0.20 / 0.84: no retain term"),
    "ce_u": (0.3, 0.6, "0.09 / 0.73: no retain term"),
    "rmu": (0.3, 0.7, "0.05 / 0.86: forget activations steered to noise, retain activations kept"),
}


def _expected_maps() -> dict[str, dict[str, tuple[float, float, str]]]:
    """Every ``EXPECTED`` map of the method test files (``tests/engine/test_method*.py``), by file.

    A new method brings its own test file with its own map; nothing shared needs editing.
    """
    import importlib

    maps = {}
    for path in sorted(Path(__file__).parent.glob("test_method*.py")):
        module = importlib.import_module(path.stem)
        if isinstance(getattr(module, "EXPECTED", None), dict):
            maps[path.name] = module.EXPECTED
    return maps


def test_every_implemented_method_has_a_toy_world_expectation():
    maps = _expected_maps()
    seen: dict[str, str] = {}
    for file, expected in maps.items():
        for method_id in expected:
            assert method_id not in seen, f"'{method_id}' is expected in {seen[method_id]} and {file}"
            seen[method_id] = file
    registry = load_registry()
    implemented = {m.id for m in registry.implemented()}
    assert implemented == set(seen), (
        "every implemented method needs a toy-world test file (tests/engine/test_method*.py) whose "
        f"EXPECTED map gives its bounds and why; missing: {sorted(implemented - set(seen))}, "
        f"not implemented: {sorted(set(seen) - implemented)}")
    tested = {m.id for m in registry.implemented() if m.implementation.tested}
    assert tested <= set(seen), "a record says tested: true without a toy-world test"


@pytest.mark.slow
@pytest.mark.parametrize("method_id", sorted(EXPECTED))
def test_method_forgets_on_the_toy_world_and_keeps_the_retain_facts(method_id, toy_world):
    run_within_bounds(method_id, toy_world, EXPECTED)
