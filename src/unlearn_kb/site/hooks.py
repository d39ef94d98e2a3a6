"""MkDocs hook (``hooks:`` in mkdocs.yml): regenerate ``docs/generated/`` before every build and
watch the registry under ``mkdocs serve``. It runs the same step as ``unlearn-kb docs generate``;
engines without hooks ignore this file and need that command run first."""

from unlearn_kb.catalog import registry_root
from unlearn_kb.site.generate import generate


def on_pre_build(config, **kwargs):
    generate(docs_dir=config.docs_dir)


def on_serve(server, config, builder, **kwargs):
    server.watch(str(registry_root()))
    return server
