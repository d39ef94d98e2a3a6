"""Put record text into Markdown and HTML safely.

Records are data written by many hands; a summary containing ``<script>``, ``*``, ``$x$`` or
``[a](javascript:...)`` must show as those characters, never as markup, links or math. Every
record string that reaches a page goes through one of these functions:

- :func:`md` for Markdown (inline and paragraph text): every ASCII punctuation character that
  some Markdown syntax or extension could read (``<``, ``&``, ``*``, ``[``, ``|``, ``$``, ``\\``,
  ...) becomes a numeric character reference, which Markdown passes through untouched, so
  emphasis, links, raw HTML, tables and math cannot start inside record text. Entities, not
  backslash escapes: arithmatex reads ``\\(`` and ``\\[`` as math delimiters.
- :func:`attr` for raw HTML (the explorer table, badges, attributes): :func:`html.escape`.
- :func:`math_block` for LaTeX: the formula goes verbatim, HTML-escaped, into the element that
  arithmatex's generic mode would produce, and only those elements are handed to KaTeX.
- :func:`url` for link targets: only ``http(s)`` addresses, percent-encoding the characters
  that would end a Markdown link or an HTML attribute.
"""

from __future__ import annotations

import html
import posixpath
import string
from urllib.parse import quote

# Punctuation that no syntax enabled in mkdocs.yml reads inside a line (no smarty quotes, no
# magic links, no emoji). At the start of a line more can open a block (": " a definition,
# "1." a list), so the first character and an ordered-list dot are always escaped.
_INERT = frozenset(",'\":;?/%@")
_ESCAPED = {ch: f"&#{ord(ch)};" for ch in string.punctuation if ch not in _INERT and ch != "."}


def md(text: object) -> str:
    """Record text for one line of Markdown (a heading, a table cell, a list item)."""
    folded = " ".join(str(text).split())
    out = [_ESCAPED.get(ch, ch) for ch in folded]
    if folded and folded[0] in string.punctuation:
        out[0] = f"&#{ord(folded[0])};"
    digits = len(folded) - len(folded.lstrip("0123456789"))
    if 0 < digits < len(folded) and folded[digits] == ".":  # "1. " would open an ordered list
        out[digits] = "&#46;"
    return "".join(out)


def md_title(text: object) -> str:
    """Record text for the quoted title of an admonition or a collapsible block."""
    return md(text).replace('"', "&#34;")


def md_paragraphs(text: object) -> str:
    """Record text as Markdown paragraphs: blank lines separate paragraphs, the rest is folded."""
    paragraphs = [p for p in str(text).split("\n\n") if p.strip()]
    return "\n\n".join(md(p) for p in paragraphs)


def attr(text: object) -> str:
    """Record text for raw HTML, as element content or a quoted attribute value."""
    return html.escape(" ".join(str(text).split()), quote=True)


def url(address: str) -> str:
    """A safe link target for an external address taken from a record."""
    if not address.startswith(("https://", "http://")):
        raise ValueError(f"not an http(s) address: {address!r}")
    return quote(address, safe=":/?#@!&'*+,;=%~-._[]")


def math_block(latex: str) -> str:
    """Display math as a raw HTML block, rendered client-side by KaTeX (see assets/site.js)."""
    one_line = " ".join(latex.split())
    return f'<div class="arithmatex">\\[{html.escape(one_line, quote=False)}\\]</div>'


def code_block(content: str, language: str = "") -> str:
    """A fenced code block whose fence is longer than any backtick run in ``content``."""
    longest, run = 0, 0
    for ch in content:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{content}\n{fence}"


def rel(src: str, dst: str) -> str:
    """The relative link from page ``src`` to file ``dst`` (both relative to the docs folder)."""
    return posixpath.relpath(dst, posixpath.dirname(src) or ".")


def html_page(md_path: str) -> str:
    """The built HTML path of a Markdown page (the site uses ``use_directory_urls: false``)."""
    stem = md_path.removesuffix(".md")
    return stem + ".html"
