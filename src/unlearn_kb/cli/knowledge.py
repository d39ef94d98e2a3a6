"""Knowledge commands: query, show, cite, list, stats, validate, schema.

These read the registry's cached JSON records (:mod:`unlearn_kb.catalog`). They never import torch or transformers (a test checks it),
so they answer in about the time Python takes to import typer, rich and pydantic.
"""

from __future__ import annotations

import csv
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from unlearn_kb.catalog import MethodQuery, Record, query_methods, records_json, taxonomy_grid
from unlearn_kb.cli.common import catalog, complete_method_id, stdout_console
from unlearn_kb.vocab import Intention, Level, Observed, Status


class Collection(StrEnum):
    methods = "methods"
    benchmarks = "benchmarks"
    metrics = "metrics"
    findings = "findings"
    families = "families"


class CiteFormat(StrEnum):
    bibtex = "bibtex"
    text = "text"
    json = "json"


JsonFlag = Annotated[bool, typer.Option("--json", help="Print a JSON array of full records (see 'schema').")]
CsvFlag = Annotated[bool, typer.Option("--csv", help="Print a flat CSV table, for spreadsheets.")]


# --------------------------------------------------------------------------- rendering


def _flat_method(m: Record, measured: str | None) -> dict[str, str]:
    """One spreadsheet row per method: the fields an analyst filters on."""
    req = m["requirements"]
    return {
        "id": m["id"],
        "name": m["name"],
        "intention_stated": m["intention"]["stated"],
        "intention_observed": m["intention"]["observed"],
        "measured_verdict": measured or "",
        "level": m["level"],
        "family": m["family"],
        "retain_set": str(req["retain_set"]).lower(),
        "reference_model": str(req["reference_model"]).lower(),
        "white_box": str(req["white_box"]).lower(),
        "sequential": m["scalability"]["sequential"],
        "benchmarks": ";".join(m["evaluation"]["benchmarks"]),
        "status": m["implementation"]["status"],
        "arxiv": m["citation"].get("arxiv") or "",
        "year": str(m["citation"]["year"]),
        "title": m["citation"]["title"],
        "summary": m["summary"],
    }


def _flat_other(collection: Collection, r: Record) -> dict[str, str]:
    if collection is Collection.benchmarks:
        return {"id": r["id"], "name": r["name"], "metrics": ", ".join(r["metrics"]), "summary": r["summary"]}
    if collection is Collection.metrics:
        return {"id": r["id"], "name": r["name"], "measures": r["measures"],
                "needs reference": "yes" if r["needs_reference"] else "no", "misses": r["misses"]}
    if collection is Collection.findings:
        return {"id": r["id"], "kind": r["finding_kind"], "title": r["title"], "methods": ", ".join(r["methods"]),
                "source": f"{r['source']['title']} ({r['source']['year']})"}
    return {"id": r["id"], "name": r["name"], "intention": r["intention"], "level": r["level"],
            "definition": r["definition"]}


def _write_csv(rows: list[dict[str, str]]) -> None:
    if not rows:
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def _observed_cell(published: str, measured: str | None) -> str:
    if measured is None:
        return published
    if measured == published:
        return f"{published} (measured too)"
    return f"{published}; measured: {measured}"


def _methods_table(methods: list[Record], title: str, width: int):
    """One line per method; level and status only where the terminal has room for them.

    ``show``, ``--json`` and ``--csv`` give everything else.
    """
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    cat = catalog()
    wide = width >= 100
    table = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("name", no_wrap=True, overflow="ellipsis", max_width=32 if wide else 22)
    columns = (("stated", 11), ("observed", 16)) + ((("level", 14), ("status", 11)) if wide else ())
    for column, min_width in columns:
        table.add_column(column, no_wrap=True, min_width=min_width)
    for m in methods:
        cells = [m["id"], escape(m["name"]), m["intention"]["stated"],
                 _observed_cell(m["intention"]["observed"], cat.measured(m["id"]))]
        if wide:
            cells += [m["level"], m["implementation"]["status"]]
        table.add_row(*cells)
    return table


def _table(rows: list[dict[str, str]], title: str):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for column in rows[0] if rows else ["id"]:
        table.add_column(column, overflow="fold", no_wrap=column == "id")
    for row in rows:
        table.add_row(*(escape(v) for v in row.values()))
    return table


def _print_method(m: Record) -> None:
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    cat = catalog()
    console = stdout_console()
    published, measured = m["intention"]["observed"], cat.measured(m["id"])
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    aliases = f"  (aliases: {', '.join(m['aliases'])})" if m["aliases"] else ""
    head.add_row("id", escape(m["id"] + aliases))
    head.add_row("intention", f"stated {m['intention']['stated']}; observed {published}"
                 + (f"; measured on the toy world: {measured}" if measured else ""))
    head.add_row("level / family", f"{m['level']} / {m['family']}")
    req = m["requirements"]
    needs = [name for name, flag in (("retain set", req["retain_set"]),
                                     ("frozen reference model", req["reference_model"]),
                                     ("white-box access", req["white_box"])) if flag]
    head.add_row("needs", escape(", ".join(needs + req["extra_models"])
                                 or "nothing beyond the model and the forget set"))
    impl = m["implementation"]
    head.add_row("implementation", impl["status"] + (f" ({impl['entry']})" if impl.get("entry") else ""))
    console.print(Panel(head, title=escape(m["name"]), title_align="left"))
    console.print(f"[bold]Summary[/bold]\n{escape(m['summary'])}\n")
    console.print(f"[bold]How it works[/bold]\n{escape(m['description'])}\n")
    console.print(f"[bold]Objective[/bold] (LaTeX)\n{escape(m['objective'])}\n")
    if m["hyperparameters"]:
        hp = Table("name", "default", "meaning", "source", header_style="bold")
        for h in m["hyperparameters"]:
            hp.add_row(h["name"], escape(json.dumps(h["default"])), escape(h["description"]),
                       escape(h.get("source") or ""))
        console.print(hp)
    console.print(f"[bold]Why '{published}'[/bold]\n{escape(m['intention']['rationale'])}")
    for f in cat.findings_about(m["id"]):
        source = f["source"]
        arxiv = f", arXiv {source['arxiv']}" if source.get("arxiv") else ""
        console.print(f"  - {escape(f['title'])} [dim]({escape(source['title'])}, {source['year']}{arxiv})[/dim]")
    result = cat.results.get(m["id"])
    if result:
        console.print(f"\n[bold]Measured on the toy world[/bold]: {result['verdict']} "
                      f"(decided by {escape(result['decided_by'])})")
    s = m["scalability"]
    lines = [f"compute: {s['compute']}", f"memory: {s['memory']}"]
    if s.get("largest_model"):
        lines.append(f"largest model reported: {s['largest_model']}")
    lines.append(f"sequential requests: {s['sequential']}")
    console.print("\n[bold]Scalability[/bold]\n" + escape("\n".join(lines)))
    if m["evaluation"]["benchmarks"]:
        console.print(f"benchmarks: {', '.join(m['evaluation']['benchmarks'])}")
    c = m["citation"]
    console.print(f"\n[bold]Citation[/bold]\n{escape(', '.join(c['authors']))}. {escape(c['title'])}. "
                  f"{escape(c.get('venue') or 'arXiv')} {c['year']}. {c['url']}")
    if impl["status"] == "implemented":
        console.print(f"\nRun it: [bold]unlearn-kb run {m['id']}[/bold]")


# --------------------------------------------------------------------------- commands


def query(
    intent: Annotated[Intention | None, typer.Option(help="Stated intention.")] = None,
    observed: Annotated[Observed | None, typer.Option(
        help="Observed behaviour: the published label or the measured toy-world verdict.")] = None,
    level: Annotated[Level | None, typer.Option(help="Intervention level.")] = None,
    family: Annotated[str | None, typer.Option(help="Mechanism family id (see 'list families').")] = None,
    benchmark: Annotated[str | None, typer.Option(help="Evaluated on this benchmark id.")] = None,
    status: Annotated[Status | None, typer.Option(help="Implementation status in this project.")] = None,
    reference_free: Annotated[bool, typer.Option("--reference-free", help="Needs no frozen reference model.")] = False,
    retain_free: Annotated[bool, typer.Option("--retain-free", help="Needs no retain set.")] = False,
    text: Annotated[str | None, typer.Option(help="Words that must all appear in the method's texts "
                                                  "or in findings about it.")] = None,
    as_json: JsonFlag = False,
    as_csv: CsvFlag = False,
) -> None:
    """Find methods by intention, level, family, benchmark, requirements or text."""
    cat = catalog()
    q = MethodQuery(
        intent=intent.value if intent else None, observed=observed.value if observed else None,
        level=level.value if level else None, family=family, benchmark=benchmark,
        status=status.value if status else None, reference_free=reference_free,
        retain_free=retain_free, text=text,
    )
    found = query_methods(cat, q)
    if as_json:
        typer.echo(records_json(found))
    elif as_csv:
        _write_csv([_flat_method(m, cat.measured(m["id"])) for m in found])
    else:
        console = stdout_console()
        console.print(_methods_table(found, f"{len(found)} method(s)", console.width))


def show(
    record_id: Annotated[str, typer.Argument(metavar="ID", help="A method id or alias (or a benchmark, "
                                             "metric or finding id).", autocompletion=complete_method_id)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full record as JSON.")] = False,
) -> None:
    """Show one record: for a method, its summary, formula, evidence and citation."""
    record = catalog().find(record_id)
    if as_json:
        typer.echo(json.dumps(record, indent=2, ensure_ascii=False))
    elif record.get("kind") == "method":
        _print_method(record)
    else:
        from rich.pretty import Pretty

        stdout_console().print(Pretty({k: v for k, v in record.items() if v not in (None, [], {})}))


def cite(
    record_id: Annotated[str, typer.Argument(metavar="ID", autocompletion=complete_method_id)],
    fmt: Annotated[CiteFormat, typer.Option("--format", help="Output format.")] = CiteFormat.bibtex,
) -> None:
    """Print the citation of a method (or a benchmark) as BibTeX, plain text or JSON."""
    from unlearn_kb.citations import bibtex, plain
    from unlearn_kb.errors import UserError
    from unlearn_kb.schema import Citation

    record = catalog().find(record_id)
    if record.get("citation") is None:
        raise UserError(f"'{record_id}' has no citation of its own (it is this project's own record)")
    citation = Citation.model_validate(record["citation"])
    if fmt is CiteFormat.bibtex:
        typer.echo(bibtex(citation, key=record["id"]))
    elif fmt is CiteFormat.text:
        typer.echo(plain(citation))
    else:
        typer.echo(json.dumps(record["citation"], indent=2, ensure_ascii=False))


def list_records(
    collection: Annotated[Collection, typer.Argument(help="What to list.")],
    as_json: JsonFlag = False,
    as_csv: CsvFlag = False,
) -> None:
    """List benchmarks, metrics, findings, families or methods."""
    cat = catalog()
    if collection is Collection.families:
        records = list(cat.taxonomy["families"])
    else:
        records = list(getattr(cat, collection.value).values())
    if as_json:
        typer.echo(records_json(records))
    elif collection is Collection.methods:
        if as_csv:
            _write_csv([_flat_method(m, cat.measured(m["id"])) for m in records])
        else:
            console = stdout_console()
            console.print(_methods_table(records, f"{len(records)} method(s)", console.width))
    else:
        rows = [_flat_other(collection, r) for r in records]
        if as_csv:
            _write_csv(rows)
        else:
            stdout_console().print(_table(rows, f"{len(rows)} {collection.value}"))


def stats(as_json: JsonFlag = False) -> None:
    """The taxonomy grid: methods by intervention level and stated intention, with counts."""
    from rich.table import Table

    cat = catalog()
    grid = taxonomy_grid(cat)
    if as_json:
        typer.echo(json.dumps(grid, indent=2))
        return
    table = Table("level", "removal-intended", "suppression-intended", header_style="bold",
                  title=f"{len(cat.methods)} methods by intention and intervention level", title_justify="left")
    for level, cells in grid.items():
        table.add_row(level, *(f"{len(ids)}: {', '.join(ids)}" if ids else "0" for ids in cells.values()))
    console = stdout_console()
    console.print(table)
    observed: dict[str, int] = {}
    for m in cat.methods.values():
        observed[m["intention"]["observed"]] = observed.get(m["intention"]["observed"], 0) + 1
    console.print("observed behaviour (published): " + ", ".join(f"{k} {v}" for k, v in sorted(observed.items())))
    implemented = [m for m in cat.methods.values() if m["implementation"]["status"] == "implemented"]
    console.print(f"implemented here: {len(implemented)}; measured verdicts: {len(cat.results)}; "
                  f"benchmarks {len(cat.benchmarks)}, metrics {len(cat.metrics)}, findings {len(cat.findings)}")


def validate(
    folder: Annotated[Path | None, typer.Argument(help="A registry folder (default: the shipped one).")] = None,
) -> None:
    """Check a folder of records: every problem is reported at once, one line each."""
    from unlearn_kb.registry import load_registry

    reg = load_registry(folder)
    typer.echo(f"ok: {reg.root}: {len(reg.methods)} methods, {len(reg.benchmarks)} benchmarks, "
               f"{len(reg.metrics)} metrics, {len(reg.findings)} findings, {len(reg.results)} results")


def schema(
    kind: Annotated[str | None, typer.Option(help="One record kind (method, benchmark, metric, finding, "
                                                  "taxonomy, result).")] = None,
) -> None:
    """Print the JSON Schema of every record kind (what '--json' output follows)."""
    from unlearn_kb.errors import UserError
    from unlearn_kb.schema import json_schemas

    schemas = json_schemas()
    if kind is not None and kind not in schemas:
        raise UserError(f"no record kind '{kind}'; choose from {', '.join(schemas)}")
    typer.echo(json.dumps({kind: schemas[kind]} if kind else schemas, indent=2))


def register(app: typer.Typer) -> None:
    app.command()(query)
    app.command()(show)
    app.command()(cite)
    app.command(name="list")(list_records)
    app.command()(stats)
    app.command()(validate)
    app.command()(schema)
