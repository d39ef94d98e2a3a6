"""The registry as plain JSON records, for the fast knowledge commands: query, show, list, stats.

Building the Pydantic schema costs more than importing all the libraries a query needs, so a
query does not build it: the validated registry is cached as JSON (exactly the records'
``model_dump(mode="json")``, the form ``--json`` prints) next to a fingerprint of the registry
files. A record change changes the fingerprint, and the next command re-validates everything
through :func:`unlearn_kb.registry.load_registry` and rewrites the cache. Nothing here imports
pydantic, torch or transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from unlearn_kb import __version__
from unlearn_kb.errors import UnknownIdError
from unlearn_kb.vocab import Level

Record = dict[str, Any]
COLLECTIONS = ("methods", "benchmarks", "metrics", "findings")


def cache_dir() -> Path:
    """``$UNLEARN_KB_CACHE``, else ``$XDG_CACHE_HOME/unlearn-kb``, else ``~/.cache/unlearn-kb``."""
    explicit = os.environ.get("UNLEARN_KB_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unlearn-kb"


def registry_root() -> Path:
    """The registry shipped with the package (a wheel) or the repo's ``registry/`` (a checkout)."""
    override = os.environ.get("UNLEARN_KB_REGISTRY")
    if override:
        return Path(override)
    import unlearn_kb.registry_data as shipped

    return Path(shipped.__path__[0])


@dataclass
class Catalog:
    """Every record as a JSON dict, by id; the measured results by method id."""

    root: Path
    taxonomy: Record
    methods: dict[str, Record]
    benchmarks: dict[str, Record]
    metrics: dict[str, Record]
    findings: dict[str, Record]
    results: dict[str, Record]

    @classmethod
    def from_registry(cls, registry) -> Catalog:
        """The JSON form of a validated :class:`unlearn_kb.registry.Registry`."""

        def dump(records: dict) -> dict[str, Record]:
            return {key: r.model_dump(mode="json") for key, r in sorted(records.items())}

        return cls(root=registry.root, taxonomy=registry.taxonomy.model_dump(mode="json"),
                   methods=dump(registry.methods), benchmarks=dump(registry.benchmarks),
                   metrics=dump(registry.metrics), findings=dump(registry.findings),
                   results=dump(registry.results))

    @cached_property
    def families(self) -> dict[str, Record]:
        return {f["id"]: f for f in self.taxonomy["families"]}

    @cached_property
    def _aliases(self) -> dict[str, str]:
        return alias_table((m["id"], m["name"], m["aliases"]) for m in self.methods.values())

    def method(self, wanted: str) -> Record:
        """A method by id, alias (an old id or another name) or full name; case-insensitive."""
        return self.methods[resolve_method_id(wanted, self.methods, self._aliases)]

    def find(self, wanted: str) -> Record:
        """Any record by id: a method (or alias) first, then a benchmark, metric or finding."""
        try:
            return self.method(wanted)
        except UnknownIdError:
            for collection in ("benchmarks", "metrics", "findings"):
                records = getattr(self, collection)
                if wanted in records:
                    return records[wanted]
            every = [*self.methods, *self.benchmarks, *self.metrics, *self.findings]
            raise UnknownIdError("method", wanted, every) from None

    def measured(self, method_id: str) -> str | None:
        """The verdict measured on the toy world by ``unlearn-kb bench``, if any."""
        result = self.results.get(method_id)
        return result["verdict"] if result else None

    def findings_about(self, method_id: str) -> list[Record]:
        return [f for f in self.findings.values() if method_id in f["methods"]]


def alias_table(methods: Iterable[tuple[str, str, Iterable[str]]]) -> dict[str, str]:
    """Lower-cased aliases and full names of ``(id, name, aliases)`` triples, to their ids."""
    table: dict[str, str] = {}
    for method_id, name, aliases in methods:
        for alias in (*aliases, name):
            table.setdefault(alias.lower(), method_id)
    return table


def resolve_method_id(wanted: str, ids: Iterable[str], aliases: dict[str, str]) -> str:
    """The id ``wanted`` names: an id, an alias or a full name, case-insensitive."""
    key = wanted.strip().lower()
    known = set(ids)
    if key in known:
        return key
    if key in aliases:
        return aliases[key]
    raise UnknownIdError("method", wanted, known)


# --------------------------------------------------------------------------- loading


def _fingerprint(root: Path) -> str:
    """Changes whenever a registry file is added, removed or edited, or the package changes."""
    digest = hashlib.sha256(f"{__version__}\0{root.resolve()}".encode())
    for folder in (root, *(root / c for c in (*COLLECTIONS, "results"))):
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.is_file() and entry.name.endswith((".yaml", ".yml", ".json")):
                stat = entry.stat()
                digest.update(f"{entry.path}\0{stat.st_mtime_ns}\0{stat.st_size}\n".encode())
    return digest.hexdigest()[:32]


def load_catalog(root: Path | str | None = None, *, use_cache: bool = True) -> Catalog:
    """The registry as JSON records, from the cache when the files have not changed.

    On a miss the registry is loaded and validated in full (raising
    :class:`unlearn_kb.errors.RegistryError` with every problem), then cached.
    """
    root = Path(root) if root is not None else registry_root()
    key = _fingerprint(root)
    cache_file = cache_dir() / f"registry-{key}.json"
    if use_cache:
        try:
            data = json.loads(cache_file.read_bytes())
            return Catalog(root=root, **data)
        except (OSError, ValueError, TypeError):
            pass
    from unlearn_kb.registry import load_registry

    catalog = Catalog.from_registry(load_registry(root))
    if use_cache:
        _write_atomically(cache_file, {
            "taxonomy": catalog.taxonomy, "methods": catalog.methods, "benchmarks": catalog.benchmarks,
            "metrics": catalog.metrics, "findings": catalog.findings, "results": catalog.results,
        })
    return catalog


def _write_atomically(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
            json.dump(data, handle)
        os.replace(handle.name, path)
    except OSError:  # a read-only home is no reason to fail a query
        pass


# --------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class MethodQuery:
    """Filters for :func:`query_methods`; every filter that is set must hold."""

    intent: str | None = None
    observed: str | None = None
    level: str | None = None
    family: str | None = None
    benchmark: str | None = None
    status: str | None = None
    reference_free: bool = False
    retain_free: bool = False
    text: str | None = None


def _searchable_text(catalog: Catalog, method: Record) -> str:
    scal, impl = method["scalability"], method["implementation"]
    parts = [method["id"], method["name"], *method["aliases"], method["summary"], method["description"],
             method["intention"]["rationale"], scal["compute"], scal["memory"], scal.get("notes") or "",
             impl.get("notes") or "", method.get("notes") or ""]
    for finding in catalog.findings_about(method["id"]):
        parts += [finding["title"], finding["claim"], *finding["numbers"]]
    return " ".join(parts).lower()


def query_methods(catalog: Catalog, q: MethodQuery) -> list[Record]:
    """The methods matching every filter in ``q``, sorted by id.

    ``observed`` matches the published label or, where the toy world measured one, the measured
    verdict: both are evidence, and a user filtering for suppression-like methods wants either.
    """
    if q.family is not None and q.family not in catalog.families:
        raise UnknownIdError("family", q.family, catalog.families)
    if q.benchmark is not None and q.benchmark not in catalog.benchmarks:
        raise UnknownIdError("benchmark", q.benchmark, catalog.benchmarks)
    words = q.text.lower().split() if q.text else []
    found = []
    for m in catalog.methods.values():
        if q.intent and m["intention"]["stated"] != q.intent:
            continue
        if q.observed and q.observed not in (m["intention"]["observed"], catalog.measured(m["id"])):
            continue
        if q.level and m["level"] != q.level:
            continue
        if q.family and m["family"] != q.family:
            continue
        if q.benchmark and q.benchmark not in m["evaluation"]["benchmarks"]:
            continue
        if q.status and m["implementation"]["status"] != q.status:
            continue
        if q.reference_free and m["requirements"]["reference_model"]:
            continue
        if q.retain_free and m["requirements"]["retain_set"]:
            continue
        if words and not all(w in _searchable_text(catalog, m) for w in words):
            continue
        found.append(m)
    return sorted(found, key=lambda m: m["id"])


def taxonomy_grid(catalog: Catalog) -> dict[str, dict[str, list[str]]]:
    """Method ids by intervention level, then by stated intention: the SoK's grid."""
    grid: dict[str, dict[str, list[str]]] = {lv.value: {"removal": [], "suppression": []} for lv in Level}
    for method in sorted(catalog.methods.values(), key=lambda m: m["id"]):
        grid[method["level"]][method["intention"]["stated"]].append(method["id"])
    return grid


def records_json(records: Iterable[Record]) -> str:
    """A JSON array of full records, exactly as the published JSON Schema describes them."""
    return json.dumps(list(records), indent=2, ensure_ascii=False)
