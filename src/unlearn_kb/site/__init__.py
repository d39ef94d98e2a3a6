"""The documentation site, rendered from the registry.

- :mod:`unlearn_kb.site.pages`: records to Markdown pages (pure functions; fails on a dangling
  reference);
- :mod:`unlearn_kb.site.text`: escaping of record text for Markdown, HTML, math and links;
- :mod:`unlearn_kb.site.figures`: SVG charts of measured results;
- :mod:`unlearn_kb.site.generate`: writes ``docs/generated/`` and runs MkDocs;
- :mod:`unlearn_kb.site.hooks`: the MkDocs hook that calls the generator;
- ``assets/``: the site's script and style, and vendored KaTeX and tablesort (no CDN).

Nothing here imports MkDocs at module level; ``build_site`` and ``serve_site`` import it inside.
"""
