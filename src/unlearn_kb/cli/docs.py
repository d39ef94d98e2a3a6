"""Docs commands: ``docs generate``, ``docs build`` and ``docs serve``.

``generate`` needs only the registry; ``build`` and ``serve`` need MkDocs (the ``docs`` extra)
and a checkout, since the hand-written pages and ``mkdocs.yml`` are not in the wheel. MkDocs is
imported inside those commands only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unlearn_kb.errors import UserError

docs_app = typer.Typer(
    name="docs",
    help="Build the documentation site from the registry (pages, explorer, downloads).",
    no_args_is_help=True,
)

ConfigOption = Annotated[Path, typer.Option("--config-file", "-f", help="The MkDocs configuration.")]


def _docs_dir(config_file: Path) -> Path:
    if not config_file.is_file():
        raise UserError(f"no {config_file}: run from the repository root (the site is built from a "
                        "checkout, which holds the hand-written pages and mkdocs.yml)")
    return config_file.parent / "docs"


def _need_mkdocs() -> None:
    try:
        import material  # noqa: F401
        import mkdocs  # noqa: F401
    except ImportError as exc:
        raise UserError("the docs commands need MkDocs and Material for MkDocs: "
                        "pip install 'unlearn-kb[docs]'") from exc


def _generate(docs_dir: Path) -> None:
    from unlearn_kb.site.generate import generate

    report = generate(docs_dir)
    typer.echo(f"generated {report.out_dir}: {len(report.written)} written, {report.unchanged} unchanged, "
               f"{len(report.removed)} removed", err=True)


@docs_app.command("generate")
def generate_command(
    docs_dir: Annotated[Path, typer.Option("--docs-dir", help="The docs folder; pages go to its generated/.")]
    = Path("docs"),
) -> None:
    """Write the pages generated from the registry into DOCS_DIR/generated/ (no MkDocs needed)."""
    _generate(docs_dir)


@docs_app.command("build")
def build_command(
    config_file: ConfigOption = Path("mkdocs.yml"),
    site_dir: Annotated[Path | None, typer.Option("--site-dir", help="Where to write the site.")] = None,
    strict: Annotated[bool, typer.Option("--strict/--no-strict", help="Fail on any warning.")] = True,
) -> None:
    """Generate the pages, then run 'mkdocs build --strict': a broken link fails the build."""
    _need_mkdocs()
    from mkdocs.exceptions import MkDocsException

    from unlearn_kb.site.generate import build_site

    _generate(_docs_dir(config_file))
    try:
        seconds = build_site(config_file, site_dir=site_dir, strict=strict)
    except MkDocsException as exc:
        raise UserError(f"mkdocs build failed: {exc}") from exc
    typer.echo(f"built the site in {seconds:.1f} s", err=True)


@docs_app.command("serve")
def serve_command(
    config_file: ConfigOption = Path("mkdocs.yml"),
    dev_addr: Annotated[str, typer.Option("--dev-addr", help="Address to serve on.")] = "127.0.0.1:8000",
) -> None:
    """Serve the site locally, rebuilding when a page or a record changes."""
    _need_mkdocs()
    from unlearn_kb.site.generate import serve_site

    _generate(_docs_dir(config_file))
    serve_site(config_file, dev_addr=dev_addr)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.add_typer(docs_app)
