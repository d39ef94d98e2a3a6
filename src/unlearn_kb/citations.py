"""Format a record's :class:`~unlearn_kb.schema.Citation` as BibTeX or as one plain line.

Shared by ``unlearn-kb cite`` and the documentation site, so a method's citation reads the same
everywhere. Cheap to import: no torch, no registry loading.
"""

from __future__ import annotations

import re

from unlearn_kb.schema import Citation

# Characters that LaTeX treats as commands inside a BibTeX field, and their escaped forms.
_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_JOURNAL_WORDS = ("journal", "transactions", "tmlr", "jmlr", "letters")


def _field(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def bibtex(citation: Citation, key: str) -> str:
    """A BibTeX entry: ``@inproceedings`` or ``@article`` when a venue is known, else ``@misc``
    with the arXiv eprint fields. Field values are LaTeX-escaped; the title is double-braced so
    that BibTeX styles keep its capitalisation."""
    if not re.fullmatch(r"[A-Za-z0-9_:\-.]+", key):
        raise ValueError(f"BibTeX key '{key}' may only hold letters, digits and _ : - .")
    venue = citation.venue
    if venue is None:
        entry_type, venue_field = "misc", None
    elif any(word in venue.lower() for word in _JOURNAL_WORDS):
        entry_type, venue_field = "article", "journal"
    else:
        entry_type, venue_field = "inproceedings", "booktitle"
    fields: list[tuple[str, str]] = [
        ("title", "{" + _field(citation.title) + "}"),
        ("author", " and ".join(_field(a) for a in citation.authors)),
        ("year", str(citation.year)),
    ]
    if venue_field and venue:
        fields.append((venue_field, _field(venue)))
    if citation.arxiv:
        fields += [("eprint", citation.arxiv), ("archivePrefix", "arXiv")]
    fields.append(("url", citation.url))
    width = max(len(name) for name, _ in fields)
    body = ",\n".join(f"  {name.ljust(width)} = {{{value}}}" for name, value in fields)
    return f"@{entry_type}{{{key},\n{body}\n}}"


def plain(citation: Citation) -> str:
    """One line for a reference list: authors (year). Title. Venue. arXiv id. URL."""
    authors = citation.authors
    names = ", ".join(authors[:-1]) + f" and {authors[-1]}" if len(authors) > 1 else authors[0]
    parts = [f"{names} ({citation.year}).", citation.title.rstrip(".") + "."]
    if citation.venue:
        parts.append(citation.venue.rstrip(".") + ".")
    if citation.arxiv:
        parts.append(f"arXiv:{citation.arxiv}.")
    parts.append(citation.url)
    return " ".join(parts)
