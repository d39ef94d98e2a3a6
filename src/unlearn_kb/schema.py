"""The record schema: one Pydantic model per kind of record in ``registry/``.

Field names here are a public interface: ``unlearn-kb query --json`` prints these models with
``model_dump(mode="json")`` and ``unlearn-kb schema`` publishes their JSON Schema, so scripts
rely on them. Rename nothing; add fields instead.

Closed vocabularies that scripts and the CLI enumerate (intentions, observed behaviour,
intervention levels, statuses) are enums here. Open vocabularies that grow with the literature
(mechanism families, benchmarks, metrics, findings) are records, and references to them are
checked across records when the registry is loaded (:mod:`unlearn_kb.registry`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from unlearn_kb.vocab import (  # noqa: F401 - re-exported: the schema is where users look for them
    FindingKind,
    Intention,
    Level,
    MeasureKind,
    Observed,
    Sequential,
    Status,
    Verdict,
)

SLUG_PATTERN = r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$"
ARXIV_PATTERN = r"^\d{4}\.\d{4,5}$"

Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN, max_length=64)]
"""A record id: lowercase words joined by underscores, so it is also a Python module name and a
safe file name (no path separators, no dots)."""

ArxivId = Annotated[str, StringConstraints(pattern=ARXIV_PATTERN)]
"""A new-style arXiv identifier without version, e.g. ``2404.05868``."""

Year = Annotated[int, Field(ge=1990, le=2026)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class Strict(BaseModel):
    """Base for every record: unknown keys are errors, field docstrings become schema text."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True, defer_build=True)


# --------------------------------------------------------------------------- vocabularies


# --------------------------------------------------------------------------- shared parts


class Source(Strict):
    """Where a claim comes from: a paper (arXiv id) or a page (url), and where in it."""

    title: Text
    """Title of the paper or page."""
    year: Year
    arxiv: ArxivId | None = None
    """arXiv identifier, when the source is on arXiv."""
    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")] | None = None
    """Address of the source, when it is not (only) on arXiv."""
    locator: Text | None = None
    """Where in the source: a section, table or figure."""

    @model_validator(mode="after")
    def _needs_a_pointer(self) -> Source:
        if self.arxiv is None and self.url is None:
            raise ValueError("a source needs an arxiv id or a url")
        return self


class Citation(Strict):
    """The paper that introduced a method, benchmark or metric."""

    title: Text
    authors: Annotated[list[Text], Field(min_length=1)]
    """Authors as written on the paper; 'et al.' is not allowed, list them or the first few."""
    year: Year
    arxiv: ArxivId | None = None
    venue: Text | None = None
    """Where it was published (conference or journal and year), if it was."""
    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")]
    code: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")] | None = None
    """The authors' official code, if released."""


class Definition(Strict):
    """One term of the taxonomy with its meaning and its source."""

    id: Slug
    name: Text
    definition: Text
    source: Source


# --------------------------------------------------------------------------- taxonomy


class Family(Definition):
    """A mechanism family (how a method works), e.g. gradient-based losses or model editing."""

    intention: Intention
    """The intention the family's methods usually state."""
    level: Level
    """The intervention level most of the family works at."""


class Taxonomy(Strict):
    """The intention taxonomy: the closed vocabularies, each defined with a source."""

    intentions: list[Definition]
    observed: list[Definition]
    levels: list[Definition]
    families: list[Family]

    @model_validator(mode="after")
    def _covers_the_enums(self) -> Taxonomy:
        for field, enum in (("intentions", Intention), ("observed", Observed), ("levels", Level)):
            defined = {d.id.replace("_", "-") for d in getattr(self, field)}
            missing = sorted({e.value for e in enum} - defined)
            if missing:
                raise ValueError(f"{field} must define {missing}")
        return self


# --------------------------------------------------------------------------- methods


Scalar = bool | int | float | str


class Hyperparameter(Strict):
    """A hyperparameter under the paper's own name, with the paper's default."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
    default: Scalar | list[Scalar] | None
    """The default the paper (or its official code) uses; null where the paper sets none."""
    description: Text
    source: Text | None = None
    """Where the default is stated, e.g. 'paper §4.1' or 'official code, unlearn.py'."""


class IntentionClaim(Strict):
    """What the authors intend, and what the evidence says the method does."""

    stated: Intention
    observed: Observed
    rationale: Text
    """Why the observed label was given, in plain words."""
    findings: list[Slug] = []
    """Ids of findings (``registry/findings``) that support the observed label."""


class Requirements(Strict):
    """What a user needs to run the method."""

    retain_set: bool
    """Needs data to keep (a retain set) besides the forget set."""
    reference_model: bool
    """Keeps a frozen copy of the original model during unlearning."""
    white_box: bool
    """Needs the model's weights (not only an API)."""
    extra_models: list[Text] = []
    """Other models it needs, e.g. a classifier or a small assistant model."""


class ReportedResult(Strict):
    """A number the authors (or a later paper) reported for the method."""

    benchmark: Slug
    metric: Slug | None = None
    value: Text
    """The figure as reported, with its unit, e.g. '0.97' or '25.4% (from 68.9%)'."""
    setting: Text
    """Model, split and conditions, e.g. 'Llama-2-7B-chat, TOFU forget10'."""
    source: Source


class Evaluation(Strict):
    benchmarks: list[Slug] = []
    """Ids of benchmarks (``registry/benchmarks``) the method was evaluated on."""
    reported: list[ReportedResult] = []


class Scalability(Strict):
    compute: Text
    """Cost relative to ordinary fine-tuning, in words (e.g. '1 forward + 1 backward per step')."""
    memory: Text
    """Memory relative to fine-tuning (e.g. '2x weights: keeps a frozen reference')."""
    largest_model: Text | None = None
    """The largest model the method was reported on, e.g. 'Llama-2-7B' or '236B (DeepSeek-V2)'."""
    largest_forget_set: Text | None = None
    sequential: Sequential = Sequential.untested
    notes: Text | None = None


class Implementation(Strict):
    status: Status
    entry: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    """``module:object`` of the runnable method, e.g. ``unlearn_kb.methods.npo:NPO``."""
    tested: bool = False
    """True when a test runs the method on the toy world and checks that it forgets."""
    toy_overrides: dict[str, Scalar] = {}
    """Run settings that differ from the paper at toy scale (learning rate, steps), and why."""
    notes: Text | None = None
    """Where the implementation departs from the paper, or why it is not planned."""

    @model_validator(mode="after")
    def _entry_matches_status(self) -> Implementation:
        if self.status is Status.implemented and self.entry is None:
            raise ValueError("an implemented method needs an entry ('module:object')")
        if self.tested and self.status is not Status.implemented:
            raise ValueError("only an implemented method can be tested")
        return self


class Method(Strict):
    """One unlearning method as the literature describes it."""

    kind: Literal["method"] = "method"
    id: Slug
    """Stable id: once published it keeps its meaning; renames keep the old id in aliases."""
    name: Text
    aliases: list[Text] = []
    """Other names and old ids; ``show`` resolves them."""
    summary: Text
    """What the method does, in plain language for readers who do not do machine learning."""
    description: Text
    """How it works, for researchers."""
    intention: IntentionClaim
    level: Level
    family: Slug
    """Id of a mechanism family in ``registry/taxonomy.yaml``."""
    objective: Text
    """The objective or update rule in LaTeX (without surrounding $$)."""
    hyperparameters: list[Hyperparameter] = []
    requirements: Requirements
    evaluation: Evaluation
    scalability: Scalability
    citation: Citation
    implementation: Implementation
    notes: Text | None = None

    @model_validator(mode="after")
    def _unique_hyperparameters(self) -> Method:
        names = [h.name for h in self.hyperparameters]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"hyperparameter names repeat: {duplicated}")
        return self


# --------------------------------------------------------------------------- other records


class Benchmark(Strict):
    kind: Literal["benchmark"] = "benchmark"
    id: Slug
    name: Text
    aliases: list[Text] = []
    summary: Text
    """What it tests, in plain language."""
    data: Text
    """What the forget / retain data are, and how much of it."""
    metrics: list[Slug] = []
    """Ids of the metrics it reports."""
    limitations: list[Text] = []
    citation: Citation | None = None
    """Null only for this project's own toy world."""


class Metric(Strict):
    kind: Literal["metric"] = "metric"
    id: Slug
    name: Text
    aliases: list[Text] = []
    measures: MeasureKind
    summary: Text
    """What it measures, in plain language."""
    formula: Text | None = None
    """LaTeX, without surrounding $$."""
    detects: Text
    """What a change in this metric can reveal."""
    misses: Text
    """What it cannot detect: the blind spot that matters for removal vs suppression."""
    needs_reference: bool = False
    """Needs a reference model that never saw the forget set."""
    source: Source


class Finding(Strict):
    """A published claim about how unlearning methods behave, with its numbers."""

    kind: Literal["finding"] = "finding"
    id: Slug
    title: Text
    """The claim in one line."""
    finding_kind: FindingKind
    claim: Text
    """The claim in plain language, with its key numbers."""
    numbers: list[Text] = []
    """Key figures, each with its setting, e.g. '4-bit: retained knowledge 21% -> 83% (MUSE News)'."""
    methods: Annotated[list[Slug], Field(min_length=1)]
    """Ids of the methods it concerns."""
    supports: Observed | None = None
    """The observed behaviour it is evidence for, if it speaks to one."""
    source: Source


Record = Method | Benchmark | Metric | Finding

RECORD_KINDS: dict[str, type[Strict]] = {
    "taxonomy": Taxonomy,
    "method": Method,
    "benchmark": Benchmark,
    "metric": Metric,
    "finding": Finding,
}


def is_slug(text: str) -> bool:
    return re.fullmatch(SLUG_PATTERN, text) is not None


class MeasuredResult(Strict):
    """Measured evidence written by ``unlearn-kb bench`` to ``registry/results/<method>.json``."""

    kind: Literal["result"] = "result"
    method: Slug
    verdict: Verdict
    decided_by: Text
    """The probe or rule that decided the verdict."""
    figures: dict[str, Scalar | None | dict[str, Scalar | None]]
    """Every measured figure, for the method, the original and the reference model."""
    command: Text
    """The exact command that produced this result."""
    seed: int
    versions: dict[str, str]
    date: Text


def json_schemas() -> dict[str, dict]:
    """The JSON Schema of every record kind, as ``unlearn-kb schema`` publishes it."""
    kinds: dict[str, type[BaseModel]] = {**RECORD_KINDS, "result": MeasuredResult}
    return {kind: model.model_json_schema() for kind, model in kinds.items()}
