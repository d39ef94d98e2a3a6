"""Render the registry as the site's generated pages: pure functions from records to text.

Every page below ``docs/generated/`` comes from here, and nothing in them is typed by hand. Links
between records go through :meth:`Pages.link_to`, which raises :class:`DanglingReference` when an
id names no record, so a broken reference stops the generator before MkDocs ever runs.
Record text is escaped with :mod:`unlearn_kb.site.text`.

Pages link to each other with relative ``.md`` paths (checked by ``mkdocs build --strict``);
the explorer is raw HTML and links to ``.html`` files, as the site uses
``use_directory_urls: false``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlencode

import yaml

from unlearn_kb import citations
from unlearn_kb.catalog import Catalog, taxonomy_grid
from unlearn_kb.registry import Registry
from unlearn_kb.schema import (
    Citation,
    Finding,
    FindingKind,
    Intention,
    Level,
    MeasuredResult,
    Method,
    Observed,
    Sequential,
    Source,
    Status,
    Verdict,
    json_schemas,
)
from unlearn_kb.site import figures
from unlearn_kb.site.text import (
    attr,
    code_block,
    html_page,
    math_block,
    md,
    md_paragraphs,
    md_title,
    rel,
    url,
)

GENERATED = "generated"
EXPLORER = "generated/methods/index.md"
BENCHMARKS = "generated/benchmarks.md"
METRICS = "generated/metrics.md"
FINDINGS = "generated/findings.md"
TAXONOMY = "generated/taxonomy.md"
SCHEMA = "generated/schema.md"
EXPORT = "generated/registry.json"
SNIPPET_HOST = "index.md"
"""Snippets are included (pymdownx.snippets) into pages at the docs root; links in them are
written relative to that folder."""

YES_NO = {True: "yes", False: "no"}


class DanglingReference(LookupError):
    """A page would link to a record that does not exist."""


def _front_matter(**fields: object) -> str:
    """YAML front matter; values are HTML-escaped because Material's templates print them raw."""
    return "---\n" + yaml.safe_dump(fields, allow_unicode=True, sort_keys=False) + "---\n\n"


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def _indent(text: str, spaces: int = 4) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else "" for line in text.splitlines())


def short_name(method: Method) -> str:
    """A short label for grids: the first alias when it is short (NPO, GA+KL), else the name."""
    if method.aliases and len(method.aliases[0]) <= 12:
        return method.aliases[0]
    return method.name


def display_title(method: Method) -> str:
    """The page title: the name, plus the short alias people search for when the name lacks it
    ("Negative Preference Optimization (NPO)"); search ranks title matches far above text."""
    short = short_name(method)
    if short != method.name and short.lower() not in method.name.lower() and "(" not in method.name:
        return f"{method.name} ({short})"
    return method.name


def first_sentence(text: str, limit: int = 250) -> str:
    """The first sentence of ``text``, cut at a word boundary if it is longer than ``limit``."""
    sentence = " ".join(text.split()).split(". ")[0].rstrip(".") + "."
    if len(sentence) > limit:
        sentence = sentence[:limit].rsplit(" ", 1)[0] + "…"
    return sentence


def _scalar(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return md(value)
    return md(json.dumps(value))


def _number(value: object) -> str:
    if isinstance(value, float):
        return md(f"{value:.4g}")
    return _scalar(value)


# --------------------------------------------------------------------------- obligations


@dataclass(frozen=True)
class Obligation:
    """A demand a policy analyst meets, the evidence it calls for, and which methods qualify."""

    situation: str
    needs: str
    qualifies: Callable[[Method, set[str]], bool]
    """Given a method and its evidence labels (published observed label and measured verdict)."""
    none_yet: str
    """What to say when no method qualifies yet."""


OBLIGATIONS = [
    Obligation(
        situation="A data-erasure request under privacy law (for example the GDPR's right to "
        "erasure): a person asks that their data be deleted.",
        needs="Removal, with evidence: after unlearning the model should know no more about the "
        "person than a model never trained on their data, also under recovery attacks "
        "(relearning, quantization, probing). Clean outputs alone are not evidence.",
        qualifies=lambda m, evidence: "removal-like" in evidence,
        none_yet="None yet: no method in the registry has removal-like evidence. Removal-intended "
        "methods are candidates to test, not to rely on.",
    ),
    Obligation(
        situation="Releasing model weights openly after taking out hazardous knowledge "
        "(for example dangerous biology or cyber-attack know-how).",
        needs="Removal that survives whatever the holder of the weights does: fine-tuning, "
        "quantization, probing. Methods at the input or output level protect nothing here, since "
        "the holder controls prompts and decoding.",
        qualifies=lambda m, evidence: "removal-like" in evidence
        and m.level in (Level.parameter, Level.representation),
        none_yet="None yet: no parameter- or representation-level method has removal-like "
        "evidence in the registry.",
    ),
    Obligation(
        situation="Content moderation on a model served through an API or an app: it must stop "
        "producing some content.",
        needs="Suppression can be acceptable: the operator keeps the weights and controls the "
        "prompts and the outputs. Check robustness to jailbreaks and rephrasing.",
        qualifies=lambda m, evidence: m.intention.stated is Intention.suppression,
        none_yet="None in the registry.",
    ),
    Obligation(
        situation="A takedown request for text a served model reproduces (for example copyrighted "
        "passages), with no change to the weights wanted or possible.",
        needs="Output suppression with no retraining: methods at the input or output level leave "
        "the weights untouched and can be switched on at once; they do not remove anything.",
        qualifies=lambda m, evidence: m.level in (Level.input, Level.output),
        none_yet="None in the registry.",
    ),
    Obligation(
        situation="An auditor or regulator asks for proof of what unlearning achieved.",
        needs="Evidence beyond benchmark scores: published recovery attacks or probes, or a "
        "measurement against a reference model that never saw the data (this project's toy "
        "world). Methods with such evidence:",
        qualifies=lambda m, evidence: bool(evidence - {"unknown"}),
        none_yet="None yet: no method has published or measured evidence in the registry.",
    ),
]


# --------------------------------------------------------------------------- pages


class Pages:
    """Every generated file, rendered from one validated :class:`Registry`."""

    def __init__(self, registry: Registry):
        self.r = registry
        t = registry.taxonomy
        self.intentions = {d.id: d for d in t.intentions}
        self.observed_terms = {d.id.replace("_", "-"): d for d in t.observed}
        self.levels = {d.id: d for d in t.levels}
        self.families = {f.id: f for f in t.families}
        self.methods = sorted(registry.methods.values(), key=lambda m: m.name.lower())

    # ----------------------------------------------------------------- references

    def method_path(self, method_id: str) -> str:
        if method_id not in self.r.methods:
            raise DanglingReference(f"no method '{method_id}'")
        return f"{GENERATED}/methods/{method_id}.md"

    def link_to(self, src: str, kind: str, record_id: str) -> str:
        """The relative link from page ``src`` to a record's page or anchor; fails loudly."""
        where: dict[str, tuple[dict, str, str]] = {
            "benchmark": (self.r.benchmarks, BENCHMARKS, "{}"),
            "metric": (self.r.metrics, METRICS, "{}"),
            "finding": (self.r.findings, FINDINGS, "{}"),
            "family": (self.families, TAXONOMY, "family-{}"),
            "level": (self.levels, TAXONOMY, "level-{}"),
            "intention": (self.intentions, TAXONOMY, "intention-{}"),
            "observed": (self.observed_terms, TAXONOMY, "observed-{}"),
        }
        if kind == "method":
            return rel(src, self.method_path(record_id))
        records, page, anchor = where[kind]
        if record_id not in records:
            raise DanglingReference(f"{src}: no {kind} '{record_id}'")
        return f"{rel(src, page)}#{anchor.format(record_id)}"

    def method_links(self, src: str, ids: Iterable[str], label: Callable[[Method], str] = short_name) -> str:
        targets = {i: self.link_to(src, "method", i) for i in ids}  # raises on an unknown id first
        ordered = sorted(targets, key=lambda i: label(self.r.methods[i]).lower())
        return ", ".join(f"[{md(label(self.r.methods[i]))}]({targets[i]})" for i in ordered) or "—"

    # ----------------------------------------------------------------- labels

    def term_name(self, kind: str, value: str) -> str:
        table = {"intention": self.intentions, "observed": self.observed_terms, "level": self.levels,
                 "family": self.families}[kind]
        return table[value].name if value in table else value

    def badge(self, kind: str, value: str, text: str | None = None) -> str:
        label = text if text is not None else self.term_name(kind, value)
        return f'<span class="ukb-badge ukb-{attr(kind)}-{attr(value)}">{attr(label)}</span>'

    def evidence(self, method: Method) -> set[str]:
        """The published observed label and, where the toy world measured one, the verdict."""
        result = self.r.results.get(method.id)
        return {method.intention.observed.value} | ({result.verdict.value} if result else set())

    # ----------------------------------------------------------------- sources

    def source(self, source: Source) -> str:
        parts = [f"*{md(source.title)}* ({source.year})"]
        if source.locator:
            parts.append(md(source.locator))
        links = []
        if source.arxiv:
            links.append(f"[arXiv:{source.arxiv}](https://arxiv.org/abs/{source.arxiv})")
        if source.url:
            links.append(f"[link]({url(source.url)})")
        return ", ".join(parts) + (". " + " · ".join(links) if links else "")

    def citation(self, citation: Citation) -> str:
        links = [f"[Paper]({url(citation.url)})"]
        if citation.arxiv:
            links.append(f"[arXiv:{citation.arxiv}](https://arxiv.org/abs/{citation.arxiv})")
        if citation.code:
            links.append(f"[Official code]({url(citation.code)})")
        return md(citations.plain(citation)) + "\n\n" + " · ".join(links)

    # ----------------------------------------------------------------- method page

    def method_page(self, m: Method) -> str:
        src = self.method_path(m.id)
        result = self.r.results.get(m.id)
        family = self.families.get(m.family)
        if family is None:
            raise DanglingReference(f"{src}: no family '{m.family}'")
        out = [_front_matter(
            title=attr(display_title(m)),
            description=attr(first_sentence(m.summary)),
            hide=["navigation"],  # method pages are reached from the explorer, not the nav
            search={"boost": 2},  # a search for "NPO" should open NPO's page before findings that cite it
            tags=[attr(self.term_name("intention", m.intention.stated.value)),
                  attr(self.term_name("level", m.level.value)), attr(family.name)],
        )]
        out.append(f"# {md(display_title(m))}\n")
        badges = [self.badge("intention", m.intention.stated.value),
                  self.badge("observed", m.intention.observed.value,
                             f"observed: {self.term_name('observed', m.intention.observed.value)}")]
        if result:
            badges.append(self.badge("verdict", result.verdict.value, f"toy world: {result.verdict.value}"))
        badges += [self.badge("level", m.level.value), self.badge("status", m.implementation.status.value,
                                                                  m.implementation.status.value)]
        out.append('<p class="ukb-badges">' + " ".join(badges) + "</p>\n")
        if m.aliases:
            out.append("Also known as: " + ", ".join(md(a) for a in m.aliases) + ".\n")
        out.append('!!! abstract "In plain words"\n\n' + _indent(md_paragraphs(m.summary)) + "\n")

        req = m.requirements
        out.append("## At a glance\n")
        measured = (f"{self.badge('verdict', result.verdict.value, result.verdict.value)} "
                    f"([details](#measured-on-the-toy-world))" if result else "not measured yet")
        out.append(_table(["Question", "Answer"], [
            ["What do its authors intend?",
             f"[{md(self.term_name('intention', m.intention.stated.value))}]"
             f"({self.link_to(src, 'intention', m.intention.stated.value)})"],
            ["How has it been seen to behave?",
             f"[{md(self.term_name('observed', m.intention.observed.value))}]"
             f"({self.link_to(src, 'observed', m.intention.observed.value)}) ([evidence](#evidence))"],
            ["Verdict on this project's toy world", measured],
            ["Where does it intervene?",
             f"[{md(self.term_name('level', m.level.value))}]({self.link_to(src, 'level', m.level.value)})"],
            ["How does it work (family)?", f"[{md(family.name)}]({self.link_to(src, 'family', m.family)})"],
            ["Needs data to keep (retain set)?", YES_NO[req.retain_set]],
            ["Needs a frozen copy of the model?", YES_NO[req.reference_model]],
            ["Needs the model's weights?", YES_NO[req.white_box]],
            ["Successive forget requests", md(m.scalability.sequential.value)],
            ["Runnable here", md(m.implementation.status.value)],
        ]) + "\n")

        out.append("## Does it remove or suppress? {#evidence}\n")
        out.append(f"**Stated intention:** {md(self.intentions[m.intention.stated.value].definition)}\n")
        out.append(f"**Observed, {md(self.term_name('observed', m.intention.observed.value).lower())}:** "
                   f"{md(m.intention.rationale)}\n")
        out.append("### Published findings\n")
        cited = list(m.intention.findings)
        others = [f.id for f in self.r.findings_about(m.id) if f.id not in cited]
        if cited or others:
            out.append("Open a finding to read its claim and numbers.\n")
            for fid in cited + others:
                out.append(self.finding_details(src, fid, cited=fid in cited))
        else:
            out.append("No published finding in the registry speaks to this method yet.\n")
        out.append("### Measured on the toy world\n")
        out.append(self.result_section(m, result))

        out.append("## How it works\n")
        out.append(md_paragraphs(m.description) + "\n")
        out.append("### Objective\n")
        out.append(math_block(m.objective) + "\n")
        if m.hyperparameters:
            out.append("### Hyperparameters\n")
            out.append(_table(["Name", "Paper default", "What it does", "Where the default is stated"], [
                [f"`{h.name}`", _scalar(h.default) if h.default is not None else "not set by the paper",
                 md(h.description), md(h.source) if h.source else "—"] for h in m.hyperparameters
            ]) + "\n")

        out.append("## Requirements\n")
        items = [
            f"- Retain set (data whose knowledge must be kept): **{YES_NO[req.retain_set]}**",
            f"- Frozen reference copy of the original model: **{YES_NO[req.reference_model]}**",
            f"- Access to the weights (white-box): **{YES_NO[req.white_box]}**",
        ]
        items += [f"- Extra model: {md(x)}" for x in req.extra_models]
        out.append("\n".join(items) + "\n")

        s = m.scalability
        out.append("## Scalability\n")
        out.append(_table(["Aspect", "Reported"], [
            ["Compute", md(s.compute)],
            ["Memory", md(s.memory)],
            ["Largest model reported", md(s.largest_model) if s.largest_model else "—"],
            ["Largest forget set reported", md(s.largest_forget_set) if s.largest_forget_set else "—"],
            ["Successive forget requests", md(s.sequential.value)],
        ]) + "\n")
        if s.notes:
            out.append(md_paragraphs(s.notes) + "\n")

        out.append("## Benchmarks\n")
        if m.evaluation.benchmarks:
            out.append("Evaluated on: " + ", ".join(
                f"[{md(self.r.benchmarks[b].name if b in self.r.benchmarks else b)}]"
                f"({self.link_to(src, 'benchmark', b)})" for b in m.evaluation.benchmarks) + ".\n")
        else:
            out.append("No benchmark recorded.\n")
        if m.evaluation.reported:
            out.append("Reported results:\n")
            out.append(_table(["Benchmark", "Metric", "Value", "Setting", "Source"], [
                [f"[{md(r.benchmark)}]({self.link_to(src, 'benchmark', r.benchmark)})",
                 f"[{md(r.metric)}]({self.link_to(src, 'metric', r.metric)})" if r.metric else "—",
                 md(r.value), md(r.setting), self.source(r.source)] for r in m.evaluation.reported
            ]) + "\n")

        out.append("## Run it\n")
        impl = m.implementation
        if impl.status is Status.implemented:
            out.append("On this project's toy world (trains the tiny models once, then cached):\n")
            out.append(code_block(f"unlearn-kb run {m.id}", "bash") + "\n")
            tested = "A test runs it on the toy world and checks that it forgets." if impl.tested else (
                "No test checks yet that it forgets on the toy world.")
            out.append(f"Implementation: `{impl.entry}`. {tested}\n")
            if impl.toy_overrides:
                out.append("Settings that differ from the paper at toy scale:\n")
                out.append(_table(["Setting", "Toy value"], [
                    [md(k), _scalar(v)] for k, v in impl.toy_overrides.items()]) + "\n")
        else:
            status = "planned" if impl.status is Status.planned else "not planned"
            out.append(f"This project does not ship a runnable implementation ({status}).\n")
        if impl.notes:
            out.append(md_paragraphs(impl.notes) + "\n")

        out.append("## Cite\n")
        out.append(self.citation(m.citation) + "\n")
        out.append("BibTeX, as `unlearn-kb cite " + m.id + "` prints it:\n")
        out.append(code_block(citations.bibtex(m.citation, key=m.id), "bibtex") + "\n")
        if m.notes:
            out.append("## Notes\n")
            out.append(md_paragraphs(m.notes) + "\n")
        out.append(f"[Back to the method explorer]({rel(src, EXPLORER)})\n")
        return "\n".join(out)

    def finding_details(self, src: str, finding_id: str, cited: bool) -> str:
        """A collapsed block: the finding's title, then its claim, numbers and source."""
        link = self.link_to(src, "finding", finding_id)
        f = self.r.findings[finding_id]
        kind = {"removal-like": "success", "suppression-like": "warning", "contested": "question"}.get(
            f.supports.value if f.supports else "", "note")
        body = []
        labels = [self.badge("observed", f.supports.value, f"supports: {f.supports.value}")] if f.supports else []
        if cited:
            labels.append('<span class="ukb-badge">cited for the observed label</span>')
        if labels:
            body.append('<p class="ukb-badges">' + " ".join(labels) + "</p>")
        body.append(md_paragraphs(f.claim))
        if f.numbers:
            body.append("\n".join(f"- {md(n)}" for n in f.numbers))
        body.append(f"Source: {self.source(f.source)} · [On the findings page]({link})")
        return f'??? {kind} "{md_title(f.title)}"\n\n' + _indent("\n\n".join(body)) + "\n"

    def result_section(self, m: Method, result: MeasuredResult | None) -> str:
        if result is None:
            if m.implementation.status is Status.implemented:
                return "Not measured yet: no result in `registry/results/` for this method.\n"
            return "Not measured: this project does not run this method.\n"
        from unlearn_kb.evaluation.report import FIGURE_ROWS, SECTIONS  # no torch: labels only

        out = [f"Verdict: {self.badge('verdict', result.verdict.value, result.verdict.value)}, "
               f"decided by {md(result.decided_by)}. Each figure is shown for the unlearned model "
               "(*model*), the *reference* model trained without the forget set (what removal should "
               "look like) and the *original* model before unlearning.\n"]
        if figures.chartable(result):
            out.append(f"![Headline figures measured for {md(m.name)}]({m.id}-results.svg)\n")
        columns = figures.figure_columns(result)
        nested = {k: v for k, v in result.figures.items() if isinstance(v, dict)}
        flat = {k: v for k, v in result.figures.items() if not isinstance(v, dict)}
        labelled = {key: (section, text) for key, section, text in FIGURE_ROWS}
        groups: dict[str, list[str]] = {section: [] for section in SECTIONS}
        groups["other"] = []
        for key in nested:
            groups[labelled[key][0] if key in labelled else "other"].append(key)
        titles = {**SECTIONS, "other": "Other figures"}
        for section, keys in groups.items():
            if not keys:
                continue
            out.append(f"**{md(titles[section])}**\n")
            out.append(_table(["Figure", *[md(c) for c in columns]], [
                [md(labelled[k][1]) if k in labelled else f"`{k}`",
                 *[_number(nested[k].get(c)) for c in columns]] for k in keys
            ]) + "\n")
        if flat:
            out.append(_table(["Figure", "Value"], [[f"`{k}`", _number(v)] for k, v in flat.items()]) + "\n")
        versions = ", ".join(f"{md(k)} {md(v)}" for k, v in result.versions.items())
        out.append(f"Measured on {md(result.date)} with seed {result.seed} ({versions}). Reproduce with:\n")
        out.append(code_block(result.command, "bash") + "\n")
        return "\n".join(out)

    # ----------------------------------------------------------------- explorer

    def explorer(self) -> str:
        src = EXPLORER

        def select(name: str, label: str, options: Iterable[tuple[str, str]]) -> str:
            opts = "".join(f'<option value="{attr(v)}">{attr(t)}</option>' for v, t in options)
            return (f'<label>{attr(label)}<select data-filter="{name}" name="{name}">'
                    f'<option value="">any</option>{opts}</select></label>')

        yes_no = [("yes", "needed"), ("no", "not needed")]
        observed_values = [o.value for o in Observed] + [v.value for v in Verdict if v.value not in
                                                         {o.value for o in Observed}]
        families_used = sorted({m.family for m in self.methods}, key=lambda f: self.term_name("family", f))
        controls = [
            select("stated", "Stated intention", [(i.value, self.term_name("intention", i.value)) for i in Intention]),
            select("observed", "Observed or measured", [(v, v) for v in observed_values]),
            select("level", "Intervention level", [(lv.value, self.term_name("level", lv.value)) for lv in Level]),
            select("family", "Family", [(f, self.term_name("family", f)) for f in families_used]),
            select("retain", "Retain set", yes_no),
            select("reference", "Reference model", yes_no),
            select("whitebox", "Weights access", yes_no),
            select("sequential", "Successive requests", [(s.value, s.value) for s in Sequential]),
            select("status", "Implementation", [(s.value, s.value) for s in Status]),
            '<label>Text<input type="search" data-filter="text" name="text" placeholder="name, alias, word"></label>',
            '<button type="reset" class="md-button">Clear filters</button>',
        ]
        head = ["Method", "Stated intention", "Observed (published)", "Toy-world verdict", "Level", "Family",
                "Needs", "Successive requests", "Status"]
        rows = []
        for m in self.methods:
            result = self.r.results.get(m.id)
            req = m.requirements
            evidence = " ".join(sorted(self.evidence(m)))
            text = " ".join([m.id, m.name, *m.aliases, m.summary, self.term_name("family", m.family)]).lower()
            data = {
                "stated": m.intention.stated.value, "observed": evidence, "level": m.level.value,
                "family": m.family, "retain": YES_NO[req.retain_set], "reference": YES_NO[req.reference_model],
                "whitebox": YES_NO[req.white_box], "sequential": m.scalability.sequential.value,
                "status": m.implementation.status.value, "text": text,
            }
            href = attr(rel(src, html_page(self.method_path(m.id))))
            needs = ", ".join(label for label, needed in (
                ("retain set", req.retain_set), ("frozen copy", req.reference_model), ("weights", req.white_box),
            ) if needed) or "none"
            aliases = f'<br><small>{attr(", ".join(m.aliases))}</small>' if m.aliases else ""
            cells = [
                f'<td data-sort="{attr(m.name.lower())}"><a href="{href}" title="{attr(m.summary)}">'
                f"{attr(m.name)}</a>{aliases}</td>",
                f"<td>{self.badge('intention', m.intention.stated.value, m.intention.stated.value)}</td>",
                f"<td>{self.badge('observed', m.intention.observed.value, m.intention.observed.value)}</td>",
                f"<td>{self.badge('verdict', result.verdict.value, result.verdict.value) if result else '—'}</td>",
                f"<td>{attr(m.level.value)}</td>",
                f"<td>{attr(self.term_name('family', m.family))}</td>",
                f"<td>{attr(needs)}</td>",
                f"<td>{attr(m.scalability.sequential.value)}</td>",
                f"<td>{attr(m.implementation.status.value)}</td>",
            ]
            data_attrs = " ".join(f'data-{k}="{attr(v)}"' for k, v in data.items())
            rows.append(f'<tr {data_attrs}>{"".join(cells)}</tr>')
        table = (
            '<div class="ukb-explorer" data-ukb-explorer>\n'
            f'<form class="ukb-filters" onsubmit="return false">{"".join(controls)}</form>\n'
            f'<p class="ukb-count" aria-live="polite">{len(rows)} methods</p>\n'
            '<div class="ukb-scroll"><table class="ukb-table ukb-sortable" id="ukb-methods">'
            "<thead><tr>" + "".join(f"<th>{attr(h)}</th>" for h in head) + "</tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody></table></div>\n</div>"
        )
        intro = (
            f"Every method in the registry ({len(rows)}). Narrow the table with the filters; click a "
            "column heading to sort by it. *Observed or measured* matches the published label or the "
            "verdict measured on this project's toy world. What the labels mean: "
            f"[the taxonomy]({rel(src, TAXONOMY)}); which to choose for a legal or policy demand: "
            f"[the guide]({rel(src, 'index.md')}#which-method-for-which-obligation)."
        )
        return (_front_matter(title="Method explorer", hide=["navigation", "toc"])
                + "# Method explorer\n\n" + intro + "\n\n" + table + "\n")

    # ----------------------------------------------------------------- other records

    def benchmarks_page(self) -> str:
        src = BENCHMARKS
        used_by: dict[str, list[str]] = {b: [] for b in self.r.benchmarks}
        for m in self.methods:
            for b in m.evaluation.benchmarks:
                self.link_to(src, "benchmark", b)
                used_by[b].append(m.id)
        benchmarks = sorted(self.r.benchmarks.values(), key=lambda b: b.name.lower())
        out = [_front_matter(title="Benchmarks"), "# Benchmarks\n",
               "The test suites that unlearning methods are evaluated on, what their data are and what "
               f"they cannot show. How each metric works: [metrics]({rel(src, METRICS)}).\n",
               _table(["Benchmark", "Methods evaluated on it", "Metrics"], [
                   [f"[{md(b.name)}](#{b.id})", str(len(used_by[b.id])), str(len(b.metrics))] for b in benchmarks
               ]) + "\n"]
        for b in benchmarks:
            out.append(f"## {md(b.name)} {{#{b.id}}}\n")
            if b.aliases:
                out.append("Also known as: " + ", ".join(md(a) for a in b.aliases) + ".\n")
            out.append(md_paragraphs(b.summary) + "\n")
            out.append(f"**Data.** {md(b.data)}\n")
            if b.metrics:
                out.append("**Metrics.** " + ", ".join(
                    f"[{md(self.r.metrics[x].name if x in self.r.metrics else x)}]({self.link_to(src, 'metric', x)})"
                    for x in b.metrics) + ".\n")
            if b.limitations:
                out.append("**Limitations.**\n\n" + "\n".join(f"- {md(x)}" for x in b.limitations) + "\n")
            out.append(f"**Methods evaluated on it.** {self.method_links(src, used_by[b.id])}\n")
            if b.citation:
                out.append(f"**Source.** {self.citation(b.citation)}\n")
        return "\n".join(out)

    def metrics_page(self) -> str:
        src = METRICS
        metrics = sorted(self.r.metrics.values(), key=lambda x: (x.measures.value, x.name.lower()))
        in_benchmarks: dict[str, list[str]] = {x: [] for x in self.r.metrics}
        for b in self.r.benchmarks.values():
            for x in b.metrics:
                in_benchmarks[x].append(b.id)
        out = [_front_matter(title="Metrics"), "# Metrics: what each detects and what it misses\n",
               "A metric that reads only the model's answers (*behaviour*) cannot tell removal from "
               "suppression: a refusal or an output filter scores like deletion. Metrics that look for "
               "the knowledge itself (*knowledge*) try to bring it back or read it from the model's "
               "internals, ideally compared with a reference model that never saw the forget set.\n",
               _table(["Metric", "Looks at", "Detects", "Misses", "Needs a reference model"], [
                   [f"[{md(x.name)}](#{x.id})", md(x.measures.value), md(x.detects), md(x.misses),
                    YES_NO[x.needs_reference]] for x in metrics
               ]) + "\n"]
        groups = {"behaviour": "Behaviour: is it still said?", "knowledge": "Knowledge: is it still there?",
                  "utility": "Utility: is the rest intact?"}
        shown_group = None
        for x in metrics:
            if x.measures.value != shown_group:
                shown_group = x.measures.value
                out.append(f"## {md(groups.get(shown_group, shown_group))} {{#measures-{shown_group}}}\n")
            out.append(f"### {md(x.name)} {{#{x.id}}}\n")
            if x.aliases:
                out.append("Also known as: " + ", ".join(md(a) for a in x.aliases) + ".\n")
            out.append(md_paragraphs(x.summary) + "\n")
            if x.formula:
                out.append(math_block(x.formula) + "\n")
            out.append(f"**Detects.** {md(x.detects)}\n")
            out.append(f"**Misses.** {md(x.misses)}\n")
            if in_benchmarks[x.id]:
                out.append("**Reported by.** " + ", ".join(
                    f"[{md(self.r.benchmarks[b].name)}]({self.link_to(src, 'benchmark', b)})"
                    for b in in_benchmarks[x.id]) + ".\n")
            out.append(f"**Source.** {self.source(x.source)}\n")
        return "\n".join(out)

    def findings_page(self) -> str:
        src = FINDINGS
        by_kind: dict[FindingKind, list[Finding]] = {}
        for f in sorted(self.r.findings.values(), key=lambda f: f.title.lower()):
            by_kind.setdefault(f.finding_kind, []).append(f)
        out = [_front_matter(title="Findings"), "# Published findings\n",
               "What published experiments show about how unlearning methods behave, with their numbers "
               "and sources. Findings that bring forgotten knowledge back (relearning, quantization, "
               "probing, jailbreaks) are the evidence behind a method's *observed* label.\n",
               _table(["Kind of evidence", "Findings"], [
                   [f"[{md(kind.value.replace('-', ' ').capitalize())}](#kind-{kind.value})", str(len(fs))]
                   for kind, fs in sorted(by_kind.items(), key=lambda kv: kv[0].value)
               ]) + "\n"]
        for kind, fs in sorted(by_kind.items(), key=lambda kv: kv[0].value):
            out.append(f"## {md(kind.value.replace('-', ' ').capitalize())} {{#kind-{kind.value}}}\n")
            for f in fs:
                out.append(f"### {md(f.title)} {{#{f.id}}}\n")
                if f.supports:
                    out.append(f'<p class="ukb-badges">{self.badge("observed", f.supports.value, "supports: " + f.supports.value)}</p>\n')
                out.append(md_paragraphs(f.claim) + "\n")
                if f.numbers:
                    out.append("\n".join(f"- {md(n)}" for n in f.numbers) + "\n")
                out.append(f"**Methods.** {self.method_links(src, f.methods)}\n")
                out.append(f"**Source.** {self.source(f.source)}\n")
        return "\n".join(out)

    def taxonomy_page(self) -> str:
        src = TAXONOMY
        t = self.r.taxonomy
        out = [_front_matter(title="Taxonomy terms"), "# Taxonomy terms\n",
               "Every term the registry uses to classify methods, with its definition and its source. "
               f"A plain-language introduction: [removal or suppression?]({rel(src, 'taxonomy.md')}).\n"]
        sections = [("Intentions: what the authors set out to do", "intention", t.intentions),
                    ("Observed behaviour: what the evidence shows", "observed", t.observed),
                    ("Intervention levels: where the method acts", "level", t.levels)]
        for title, kind, terms in sections:
            out.append(f"## {title}\n")
            for d in terms:
                key = d.id.replace("_", "-") if kind == "observed" else d.id
                members = [m.id for m in self.methods if {
                    "intention": m.intention.stated.value, "observed": m.intention.observed.value,
                    "level": m.level.value}[kind] == key]
                out.append(f"### {md(d.name)} {{#{kind}-{key}}}\n")
                out.append(md_paragraphs(d.definition) + "\n")
                out.append(f"Source: {self.source(d.source)}\n")
                out.append(f"**Methods ({len(members)}).** {self.method_links(src, members)}\n")
        out.append("## Mechanism families: how the method works\n")
        for fam in t.families:
            members = [m.id for m in self.methods if m.family == fam.id]
            out.append(f"### {md(fam.name)} {{#family-{fam.id}}}\n")
            out.append('<p class="ukb-badges">usually '
                       f'{self.badge("intention", fam.intention.value)} {self.badge("level", fam.level.value)}</p>\n')
            out.append(md_paragraphs(fam.definition) + "\n")
            out.append(f"Source: {self.source(fam.source)}\n")
            out.append(f"**Methods ({len(members)}).** {self.method_links(src, members)}\n")
        return "\n".join(out)

    # ----------------------------------------------------------------- schema and export

    def schema_page(self) -> str:
        src = SCHEMA
        out = [_front_matter(title="Schema and downloads"), "# Schema and downloads\n",
               "Every record is validated against these models (`unlearn_kb.schema`) when the registry "
               "loads. Download the whole registry, or the JSON Schema of each kind of record, to "
               "build on the knowledge base without this package.\n",
               f"- [registry.json]({rel(src, EXPORT)}): every record, as the schemas below describe "
               "them: `taxonomy`, `methods`, `benchmarks`, `metrics`, `findings` and measured `results`.\n"]
        schemas = json_schemas()
        out += [f"- [{kind}.schema.json]({rel(src, f'{GENERATED}/schema/{kind}.schema.json')})"
                for kind in schemas]
        out.append("")
        for kind, schema in schemas.items():
            out.append(f"## {kind.capitalize()} {{#{kind}}}\n")
            out.append(md_paragraphs(schema.get("description", "")) + "\n")
            defs = schema.get("$defs", {})
            out.append(self._fields_table(schema, defs) + "\n")
            nested = [(name, d) for name, d in defs.items() if "properties" in d]
            for name, d in nested:
                out.append(f"#### {md(name)} {{#{kind}-{name.lower()}}}\n")
                if d.get("description"):
                    out.append(md_paragraphs(d["description"]) + "\n")
                out.append(self._fields_table(d, defs) + "\n")
            out.append(f'??? note "JSON Schema of a {kind} record"\n\n'
                       + _indent(code_block(json.dumps(schema, indent=2), "json")) + "\n")
        return "\n".join(out)

    @staticmethod
    def _type_of(prop: dict, defs: dict) -> str:
        if "$ref" in prop:
            name = prop["$ref"].rsplit("/", 1)[-1]
            target = defs.get(name, {})
            if "enum" in target:
                return " \\| ".join(f"`{v}`" for v in target["enum"])
            return md(name)
        if "const" in prop:
            return f"`{prop['const']}`"
        if "enum" in prop:
            return " \\| ".join(f"`{v}`" for v in prop["enum"])
        if "anyOf" in prop:
            return " or ".join(Pages._type_of(p, defs) for p in prop["anyOf"])
        kind = prop.get("type", "any")
        if kind == "array":
            return f"list of {Pages._type_of(prop.get('items', {}), defs)}"
        if kind == "object" and "additionalProperties" in prop:
            return f"map to {Pages._type_of(prop['additionalProperties'], defs)}"
        return md(kind)

    def _fields_table(self, schema: dict, defs: dict) -> str:
        required = set(schema.get("required", []))
        return _table(["Field", "Type", "Required", "Meaning"], [
            [f"`{name}`", self._type_of(prop, defs), "yes" if name in required else "no",
             md(prop.get("description", "")) or "—"]
            for name, prop in schema.get("properties", {}).items()
        ])

    def export(self) -> str:
        """The whole registry as one JSON document: the records as ``query --json`` prints them."""
        cat = Catalog.from_registry(self.r)
        data = {"taxonomy": cat.taxonomy,
                **{name: list(getattr(cat, name).values())
                   for name in ("methods", "benchmarks", "metrics", "findings", "results")}}
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    # ----------------------------------------------------------------- snippets for the home page

    def grid_snippet(self) -> str:
        src = SNIPPET_HOST
        grid = taxonomy_grid(Catalog.from_registry(self.r))
        explorer = rel(src, EXPLORER)
        header = ["Intervention level"] + [
            f"[{md(self.term_name('intention', i.value))}]({self.link_to(src, 'intention', i.value)})"
            for i in Intention]
        rows = []
        for lv in Level:
            cells = [f"[{md(self.term_name('level', lv.value))}]({self.link_to(src, 'level', lv.value)})"]
            for i in Intention:
                ids = grid[lv.value][i.value]
                query = urlencode({"stated": i.value, "level": lv.value})
                count = f"[**{len(ids)}**]({explorer}?{query})" if ids else "**0**"
                cells.append(f"{count}<br>{self.method_links(src, ids)}" if ids else count)
            rows.append(cells)
        return _table(header, rows) + "\n"

    def observed_snippet(self) -> str:
        src = SNIPPET_HOST
        explorer = rel(src, EXPLORER)
        header = ["Stated intention"] + [
            f"[{md(self.term_name('observed', o.value))}]({self.link_to(src, 'observed', o.value)})" for o in Observed]
        rows = []
        for i in Intention:
            cells = [md(self.term_name("intention", i.value))]
            for o in Observed:
                n = sum(1 for m in self.methods if m.intention.stated is i and m.intention.observed is o)
                query = urlencode({"stated": i.value, "observed": o.value})
                cells.append(f"[{n}]({explorer}?{query})" if n else "0")
            rows.append(cells)
        return _table(header, rows) + "\n"

    def obligations_snippet(self) -> str:
        src = SNIPPET_HOST
        rows = []
        for ob in OBLIGATIONS:
            ids = [m.id for m in self.methods if ob.qualifies(m, self.evidence(m))]
            rows.append([md(ob.situation), md(ob.needs), self.method_links(src, ids) if ids else md(ob.none_yet)])
        return _table(["Situation", "What it calls for", "Methods in the registry that fit"], rows) + "\n"

    def stats_snippet(self) -> str:
        src = SNIPPET_HOST
        r = self.r
        implemented = len(r.implemented())
        return (f"The registry holds [{len(r.methods)} methods]({rel(src, EXPLORER)}) "
                f"({implemented} runnable here), [{len(r.findings)} published findings]({rel(src, FINDINGS)}), "
                f"[{len(r.benchmarks)} benchmarks]({rel(src, BENCHMARKS)}) and "
                f"[{len(r.metrics)} metrics]({rel(src, METRICS)}); "
                f"{len(r.results)} {'method has' if len(r.results) == 1 else 'methods have'} been measured "
                "on the toy world.\n")

    def measured_snippet(self) -> str:
        """Every verdict measured on the toy world (``registry/results``), next to what the method
        intends, grouped by verdict: the evaluation page's summary table."""
        src = SNIPPET_HOST
        order = {v.value: i for i, v in enumerate(Verdict)}
        measured = sorted(self.r.results.values(), key=lambda res: (order[res.verdict.value], res.method))
        rows = []
        for res in measured:
            m = self.r.methods[res.method]
            holdout = res.figures.get("verdict (holdout-based)")
            rows.append([self.method_links(src, [m.id]), md(self.term_name("intention", m.intention.stated.value)),
                         md(self.term_name("level", m.level.value)), f"**{md(res.verdict.value)}**",
                         md(res.decided_by), md(holdout) if isinstance(holdout, str) else "—"])
        header = ["Method", "Stated intention", "Level", "Verdict", "Decided by", "Without a reference (holdout)"]
        return _table(header, rows) + "\n"

    # ----------------------------------------------------------------- everything

    def render(self) -> dict[str, str]:
        """Every generated text file, by path relative to the docs folder."""
        files: dict[str, str] = {}
        for kind, schema in json_schemas().items():
            files[f"{GENERATED}/schema/{kind}.schema.json"] = json.dumps(schema, indent=2) + "\n"
        for m in self.methods:
            files[self.method_path(m.id)] = self.method_page(m)
            result = self.r.results.get(m.id)
            svg = figures.bar_chart_svg(result) if result else None
            if svg:
                files[f"{GENERATED}/methods/{m.id}-results.svg"] = svg
        files[EXPLORER] = self.explorer()
        files[BENCHMARKS] = self.benchmarks_page()
        files[METRICS] = self.metrics_page()
        files[FINDINGS] = self.findings_page()
        files[TAXONOMY] = self.taxonomy_page()
        files[SCHEMA] = self.schema_page()
        files[EXPORT] = self.export()
        files[f"{GENERATED}/snippets/grid.md"] = self.grid_snippet()
        files[f"{GENERATED}/snippets/observed.md"] = self.observed_snippet()
        files[f"{GENERATED}/snippets/obligations.md"] = self.obligations_snippet()
        files[f"{GENERATED}/snippets/stats.md"] = self.stats_snippet()
        files[f"{GENERATED}/snippets/measured.md"] = self.measured_snippet()
        return files
