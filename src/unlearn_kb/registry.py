"""Load, validate, cross-reference and query the knowledge base in ``registry/``.

Validation runs in two passes, as contributors expect from a linter: every file on its own
(YAML syntax, then the schema), then the registry as a whole (unique ids, references between
records, taxonomy terms). All problems of a folder are collected and reported at once, one line
each, ``file:line: record: field: message``.

This module must stay cheap to import: the knowledge commands of the CLI run on it, and they
never import torch or transformers.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml
from pydantic import ValidationError

from unlearn_kb.catalog import alias_table, registry_root, resolve_method_id
from unlearn_kb.errors import Problem, RegistryError, UnknownIdError
from unlearn_kb.schema import (
    Benchmark,
    Finding,
    MeasuredResult,
    Method,
    Metric,
    Status,
    Strict,
    Taxonomy,
    is_slug,
)

try:  # libyaml's parser is about ten times faster than the pure-Python one
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader  # type: ignore[assignment]

COLLECTIONS: dict[str, type[Strict]] = {
    "methods": Method,
    "benchmarks": Benchmark,
    "metrics": Metric,
    "findings": Finding,
}


# --------------------------------------------------------------------------- loading


def _line_of(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The 1-based YAML line of the value at ``loc`` (or of its deepest existing parent)."""
    if node is None:
        return None
    for key in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
        if child is None:
            break
        node = child
    return node.start_mark.line + 1


def _read_yaml(path: Path, shown: str) -> tuple[object, list[Problem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(shown, f"cannot read file: {exc}")]
    try:
        return yaml.load(text, Loader=SafeLoader), []
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return None, [Problem(shown, f"invalid YAML: {reason}", line=mark.line + 1 if mark else None)]


def _validate(
    model: type[Strict], data: object, path: Path, shown: str
) -> tuple[Strict | None, list[Problem]]:
    record_id = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None
    if not isinstance(data, dict):
        return None, [Problem(shown, f"expected a mapping of fields, found {type(data).__name__}")]
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=SafeLoader)
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown field (not in the schema; see 'unlearn-kb schema')"
            problems.append(
                Problem(
                    shown,
                    message,
                    line=_line_of(root, loc),
                    record=record_id,
                    field=".".join(str(p) for p in loc) or None,
                )
            )
        return None, problems


@dataclass
class Registry:
    """The validated knowledge base: every record by id, plus the measured results."""

    root: Path
    taxonomy: Taxonomy
    methods: dict[str, Method] = field(default_factory=dict)
    benchmarks: dict[str, Benchmark] = field(default_factory=dict)
    metrics: dict[str, Metric] = field(default_factory=dict)
    findings: dict[str, Finding] = field(default_factory=dict)
    results: dict[str, MeasuredResult] = field(default_factory=dict)

    # ----------------------------------------------------------------- lookups

    @cached_property
    def families(self) -> dict[str, object]:
        return {f.id: f for f in self.taxonomy.families}

    @cached_property
    def _aliases(self) -> dict[str, str]:
        return alias_table((m.id, m.name, m.aliases) for m in self.methods.values())

    def method(self, wanted: str) -> Method:
        """A method by id, alias (an old id or another name) or full name; case-insensitive."""
        return self.methods[resolve_method_id(wanted, self.methods, self._aliases)]

    def get(self, collection: str, wanted: str) -> Strict:
        if collection == "methods":
            return self.method(wanted)
        records: dict[str, Strict] = getattr(self, collection)
        if wanted in records:
            return records[wanted]
        raise UnknownIdError(collection.removesuffix("s"), wanted, records)

    def observed(self, method: Method) -> tuple[str, str | None]:
        """The published observed label, and the measured verdict if the toy world gave one."""
        result = self.results.get(method.id)
        return method.intention.observed.value, (result.verdict.value if result else None)

    def findings_about(self, method_id: str) -> list[Finding]:
        return [f for f in self.findings.values() if method_id in f.methods]

    def implemented(self) -> list[Method]:
        return [m for m in self.methods.values() if m.implementation.status is Status.implemented]


def iter_record_files(root: Path) -> Iterator[tuple[str, Path]]:
    for collection in COLLECTIONS:
        folder = root / collection
        if folder.is_dir():
            for path in sorted(folder.glob("*.y*ml")):
                yield collection, path


def load_registry(root: Path | str | None = None) -> Registry:
    """Load and validate a registry folder; raise :class:`RegistryError` listing every problem."""
    root = Path(root) if root is not None else registry_root()
    if not root.is_dir():
        raise RegistryError([Problem(str(root), "no such registry folder")])
    problems: list[Problem] = []

    def shown(path: Path) -> str:
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    taxonomy_path = root / "taxonomy.yaml"
    taxonomy = None
    if not taxonomy_path.is_file():
        problems.append(Problem(shown(taxonomy_path), "missing: the registry needs its taxonomy"))
    else:
        data, errs = _read_yaml(taxonomy_path, shown(taxonomy_path))
        problems += errs
        if not errs:
            taxonomy, errs = _validate(Taxonomy, data, taxonomy_path, shown(taxonomy_path))
            problems += errs

    collected: dict[str, dict[str, Strict]] = {name: {} for name in COLLECTIONS}
    origin: dict[tuple[str, str], str] = {}
    broken: set[str] = set()  # ids of records that failed on their own: no cascade of errors about them
    for collection, path in iter_record_files(root):
        data, errs = _read_yaml(path, shown(path))
        problems += errs
        if errs:
            broken.add(path.stem)
            continue
        record, errs = _validate(COLLECTIONS[collection], data, path, shown(path))
        problems += errs
        if record is None:
            broken.add(data["id"] if isinstance(data, dict) and isinstance(data.get("id"), str) else path.stem)
            continue
        record_id = record.id  # type: ignore[attr-defined]
        if record_id in collected[collection]:
            first = origin[(collection, record_id)]
            problems.append(
                Problem(shown(path), f"duplicate id (first defined in {first})", line=1,
                        record=record_id, field="id")
            )
            continue
        if path.stem != record_id:
            problems.append(
                Problem(shown(path), f"file name must be the id: rename it to '{record_id}{path.suffix}'",
                        record=record_id, field="id")
            )
        collected[collection][record_id] = record
        origin[(collection, record_id)] = shown(path)

    results = {}
    results_dir = root / "results"
    if results_dir.is_dir():
        for path in sorted(results_dir.glob("*.json")):
            try:
                result = MeasuredResult.model_validate_json(path.read_bytes())
            except (OSError, ValidationError) as exc:
                first = exc.errors()[0] if isinstance(exc, ValidationError) else None
                where = ".".join(map(str, first["loc"])) if first else None
                problems.append(Problem(shown(path), first["msg"] if first else str(exc), field=where))
                continue
            results[result.method] = result

    if taxonomy is None:
        raise RegistryError(problems)
    registry = Registry(root=root, taxonomy=taxonomy, results=results, **collected)  # type: ignore[arg-type]
    problems += _cross_reference(registry, origin, shown(results_dir), broken)
    if problems:
        raise RegistryError(problems)
    return registry


def _cross_reference(
    registry: Registry, origin: dict[tuple[str, str], str], results_dir: str, broken: set[str]
) -> list[Problem]:
    """Every id a record mentions must name a record of the right kind."""
    problems: list[Problem] = []
    families = registry.families

    def check(collection: str, record_id: str, field_path: str, wanted: Iterable[str], known, kind: str):
        for ref in wanted:
            if ref not in known and ref not in broken:
                close = difflib.get_close_matches(ref, sorted(known), n=1, cutoff=0.5)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                problems.append(
                    Problem(origin[(collection, record_id)], f"unknown {kind} id '{ref}'{hint}",
                            record=record_id, field=field_path)
                )

    for m in registry.methods.values():
        check("methods", m.id, "family", [m.family], families, "family")
        check("methods", m.id, "intention.findings", m.intention.findings, registry.findings, "finding")
        if m.intention.observed.value != "unknown" and not m.intention.findings:
            problems.append(Problem(origin[("methods", m.id)],
                                    f"observed '{m.intention.observed.value}' needs evidence: list the "
                                    "finding ids that support it (or say 'unknown')",
                                    record=m.id, field="intention.findings"))
        for finding_id in m.intention.findings:
            finding = registry.findings.get(finding_id)
            if finding is not None and m.id not in finding.methods:
                problems.append(Problem(origin[("methods", m.id)],
                                        f"finding '{finding_id}' is not about this method (its 'methods' "
                                        "does not list it)", record=m.id, field="intention.findings"))
        check("methods", m.id, "evaluation.benchmarks", m.evaluation.benchmarks, registry.benchmarks, "benchmark")
        for i, r in enumerate(m.evaluation.reported):
            check("methods", m.id, f"evaluation.reported.{i}.benchmark", [r.benchmark], registry.benchmarks, "benchmark")
            if r.metric:
                check("methods", m.id, f"evaluation.reported.{i}.metric", [r.metric], registry.metrics, "metric")
        if m.implementation.status is Status.implemented and m.implementation.entry:
            module = m.implementation.entry.split(":")[0]
            if not module.startswith("unlearn_kb."):
                problems.append(Problem(origin[("methods", m.id)], "entry must live in the unlearn_kb package",
                                        record=m.id, field="implementation.entry"))
    for b in registry.benchmarks.values():
        check("benchmarks", b.id, "metrics", b.metrics, registry.metrics, "metric")
    for f in registry.findings.values():
        check("findings", f.id, "methods", f.methods, registry.methods, "method")

    alias_owner: dict[str, str] = {}
    for m in registry.methods.values():
        for alias in m.aliases:
            key = alias.lower()
            if key in registry.methods and key != m.id:
                problems.append(Problem(origin[("methods", m.id)], f"alias '{alias}' is another method's id",
                                        record=m.id, field="aliases"))
            elif alias_owner.setdefault(key, m.id) != m.id:
                problems.append(Problem(origin[("methods", m.id)],
                                        f"alias '{alias}' is also an alias of '{alias_owner[key]}'",
                                        record=m.id, field="aliases"))
    for method_id in registry.results:
        if method_id not in registry.methods:
            problems.append(Problem(results_dir, f"result for unknown method '{method_id}'", field="method"))
    return problems


def check_slug(text: str, what: str = "id") -> str:
    """Reject ids that could escape a folder when used as a file name."""
    if not is_slug(text):
        raise ValueError(f"{what} '{text}' is not a valid id (lowercase letters, digits and '_')")
    return text
