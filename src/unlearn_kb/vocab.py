"""The closed vocabularies of the knowledge base.

Kept apart from the Pydantic schema so that the fast knowledge commands can offer them as
choices without building the schema's models.
"""

from __future__ import annotations

from enum import StrEnum


class Intention(StrEnum):
    """What a method's authors set out to do (the SoK's axis, arXiv 2506.09227)."""

    removal = "removal"
    suppression = "suppression"


class Observed(StrEnum):
    """How the method has been seen to behave under recovery attacks and probes."""

    removal_like = "removal-like"
    suppression_like = "suppression-like"
    contested = "contested"
    unknown = "unknown"


class Verdict(StrEnum):
    """A measured verdict from ``unlearn-kb eval`` (see the evaluation docs for the rule)."""

    removal_like = "removal-like"
    suppression_like = "suppression-like"
    ineffective = "ineffective"
    destructive = "destructive"


class Level(StrEnum):
    """Where in the model the method intervenes."""

    parameter = "parameter"
    representation = "representation"
    input = "input"
    output = "output"


class Sequential(StrEnum):
    """Whether successive forget requests are supported."""

    supported = "supported"
    degrades = "degrades"
    untested = "untested"


class Status(StrEnum):
    """Whether this project ships a runnable implementation."""

    implemented = "implemented"
    planned = "planned"
    not_planned = "not-planned"


class MeasureKind(StrEnum):
    """What a metric looks at: outputs (behaviour) or internal state (knowledge)."""

    behaviour = "behaviour"
    knowledge = "knowledge"
    utility = "utility"


class FindingKind(StrEnum):
    """The kind of evidence a published finding brings."""

    relearning = "relearning"
    quantization = "quantization"
    probing = "probing"
    orthogonalization = "orthogonalization"
    jailbreak = "jailbreak"
    benchmark_critique = "benchmark-critique"
    editing_recovery = "editing-recovery"
    mechanism = "mechanism"
    scalability = "scalability"
    sequential = "sequential"
    guardrail_baseline = "guardrail-baseline"
