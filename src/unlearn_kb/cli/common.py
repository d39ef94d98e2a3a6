"""What every command shares: settings, consoles, and turning errors into one clear line."""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from unlearn_kb.catalog import Catalog, load_catalog
from unlearn_kb.errors import RegistryError, UnknownIdError, UserError

if TYPE_CHECKING:
    from unlearn_kb.registry import Registry


@dataclass
class Settings:
    debug: bool = False


settings = Settings()

USER_ERRORS = (UserError, RegistryError, UnknownIdError, FileNotFoundError, PermissionError)
ENGINE_PACKAGES = {"torch", "transformers", "accelerate", "peft", "safetensors", "tokenizers", "numpy", "scipy"}
OPTIONAL_PACKAGES = {"mkdocs": "docs", "material": "docs", "datasets": "datasets"}


def fail(exc: BaseException) -> NoReturn:
    """Report ``exc`` and exit: 2 for the user's mistakes, 1 for bugs. ``--debug`` adds the traceback."""
    if settings.debug or "--debug" in sys.argv:
        traceback.print_exception(exc)
    if isinstance(exc, RegistryError):
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found.", file=sys.stderr)
        sys.exit(2)
    if isinstance(exc, ModuleNotFoundError):
        package = (exc.name or "").split(".")[0]
        extra = "run" if package in ENGINE_PACKAGES else OPTIONAL_PACKAGES.get(package)
        if extra:
            print(f"error: this command needs '{package}', which is not installed: "
                  f"pip install 'unlearn-kb[{extra}]'", file=sys.stderr)
            sys.exit(2)
    rank = os.environ.get("RANK", "0")  # under torchrun / accelerate launch
    if isinstance(exc, USER_ERRORS):
        if rank != "0":  # every process got the same arguments and data: the first one says it once
            sys.exit(2)
        message = exc.args[0] if isinstance(exc, UnknownIdError) and exc.args else str(exc)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    where = f"process {rank}: " if rank != "0" else ""
    print(f"internal error: {where}{type(exc).__name__}: {exc} (run with --debug for the traceback; "
          "please report it)", file=sys.stderr)
    sys.exit(1)


_registry: Registry | None = None
_catalog: Catalog | None = None


def registry() -> Registry:
    """The shipped registry (or ``$UNLEARN_KB_REGISTRY``) as validated models, loaded once."""
    global _registry
    if _registry is None:
        from unlearn_kb.registry import load_registry

        _registry = load_registry()
    return _registry


def catalog() -> Catalog:
    """The same registry as JSON records, cached on disk: what the fast knowledge commands read."""
    global _catalog
    if _catalog is None:
        _catalog = load_catalog()
    return _catalog


def stdout_console():
    from rich.console import Console

    return Console(soft_wrap=False)


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def complete_method_id(incomplete: str) -> list[str]:
    """Shell completion for method ids (reads the YAML registry; no torch)."""
    try:
        ids = catalog().methods
    except Exception:  # noqa: BLE001 - completion must never crash the shell
        return []
    return [i for i in sorted(ids) if i.startswith(incomplete)]
