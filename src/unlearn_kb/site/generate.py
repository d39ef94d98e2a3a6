"""Write the generated pages into ``docs/generated/`` and build the site with MkDocs.

``generate`` is a plain Python step: it renders every page from the registry
(:mod:`unlearn_kb.site.pages`), copies the vendored assets (KaTeX, tablesort, the site's own
script and style) and writes only files whose content changed, deleting generated files whose
record is gone. Writing only changes keeps ``mkdocs serve`` from rebuilding in a loop when the
hook (``hooks.py``) regenerates on every build. The output is ordinary Markdown, so the site
builds the same under MkDocs and under engines without a plugin API.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from importlib.resources import files as package_files
from pathlib import Path

from unlearn_kb.registry import Registry, load_registry
from unlearn_kb.site.pages import GENERATED, Pages

ASSETS = f"{GENERATED}/assets"


@dataclass
class Generated:
    """What :func:`generate` did, for the CLI to report."""

    out_dir: Path
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0


def asset_files() -> dict[str, bytes]:
    """The vendored assets shipped in the package, by path below ``generated/assets``."""
    found: dict[str, bytes] = {}

    def walk(node, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif child.is_file() and not child.name.endswith(".md"):  # notes for maintainers, not pages
                found[f"{ASSETS}/{prefix}{child.name}"] = child.read_bytes()

    walk(package_files("unlearn_kb.site").joinpath("assets"), "")
    return found


def render(registry: Registry) -> dict[str, str | bytes]:
    """Every generated file (pages, downloads, assets) by path relative to the docs folder."""
    out: dict[str, str | bytes] = dict(Pages(registry).render())
    out.update(asset_files())
    return out


def generate(docs_dir: Path | str = "docs", registry: Registry | None = None) -> Generated:
    """Render the registry into ``<docs_dir>/generated/``; raise on any dangling reference."""
    docs_dir = Path(docs_dir)
    registry = registry if registry is not None else load_registry()
    rendered = render(registry)  # raises before anything is written
    out_dir = docs_dir / GENERATED
    report = Generated(out_dir=out_dir)
    for rel_path, content in sorted(rendered.items()):
        data = content.encode("utf-8") if isinstance(content, str) else content
        path = docs_dir / rel_path
        if path.is_file() and path.read_bytes() == data:
            report.unchanged += 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        report.written.append(rel_path)
    if out_dir.is_dir():
        for path in sorted(out_dir.rglob("*"), reverse=True):
            rel_path = path.relative_to(docs_dir).as_posix()
            if path.is_file() and rel_path not in rendered:
                path.unlink()
                report.removed.append(rel_path)
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    return report


def build_site(config_file: Path | str = "mkdocs.yml", site_dir: Path | str | None = None,
               strict: bool = True, verbose: bool = False) -> float:
    """``mkdocs build`` in-process (strict by default: any warning fails); returns the seconds
    it took. MkDocs' messages go to stderr. Raises ``mkdocs.exceptions.Abort`` on failure."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")
    logger = logging.getLogger("mkdocs")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)-7s -  %(message)s"))
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        options = {"strict": strict}
        if site_dir is not None:
            options["site_dir"] = str(site_dir)
        start = time.perf_counter()
        config = load_config(str(config_file), **options)
        build(config)
        return time.perf_counter() - start
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def serve_site(config_file: Path | str = "mkdocs.yml", dev_addr: str = "127.0.0.1:8000") -> None:
    """``mkdocs serve``: rebuild on changes to the docs and (through the hook) the registry."""
    from mkdocs.commands.serve import serve

    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")
    logging.getLogger("mkdocs").addHandler(logging.StreamHandler())
    logging.getLogger("mkdocs").setLevel(logging.INFO)
    serve(config_file=str(config_file), dev_addr=dev_addr)
