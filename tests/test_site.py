"""The documentation site: generated from the records, escaped, strict, and working in a browser.

Unit tests render pages from the small fixture registry. Build tests copy the docs sources
(mkdocs.yml, the hand-written pages, the hook) into a temporary folder and build them there, so
nothing in the checkout changes. Browser tests drive Debian's chromium through Playwright
(``executable_path``, no browser download) against the built site served on 127.0.0.1.
"""

from __future__ import annotations

import functools
import html
import http.server
import json
import re
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from typer.testing import CliRunner

from unlearn_kb import citations
from unlearn_kb.registry import load_registry
from unlearn_kb.schema import Citation, Finding, FindingKind, MeasuredResult, Source
from unlearn_kb.site import figures
from unlearn_kb.site.generate import build_site, generate, render
from unlearn_kb.site.pages import EXPLORER, DanglingReference, Pages
from unlearn_kb.site.text import attr, code_block, math_block, md, url

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "registry"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BUILD_BUDGET_S = 30.0

PAYLOAD = ('<script>alert("xss")</script><img src=x onerror="window.__xss=1"> *bold* '
           "[link](javascript:alert(1)) $x^2$ \\(y\\) | pipe & 1. ")


# --------------------------------------------------------------------------- fixtures


def edit_record(path: Path, **changes) -> None:
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data, allow_unicode=True))


def make_malicious(root: Path) -> None:
    """Put the payload into every kind of free text that reaches a page."""
    method = root / "methods" / "alpha_ascent.yaml"
    edit_record(method, name="Evil " + PAYLOAD, summary=PAYLOAD, description=PAYLOAD,
                objective=r"x^2 \text{</div><script>alert(1)</script>} + y")
    finding = root / "findings" / "relearn_restores.yaml"
    edit_record(finding, title="Finding " + PAYLOAD, claim=PAYLOAD, numbers=[PAYLOAD])
    edit_record(root / "benchmarks" / "bench_one.yaml", summary=PAYLOAD)


def make_project(folder: Path) -> Path:
    """The docs sources of the checkout, copied so that a build changes nothing in it."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "mkdocs.yml", folder / "mkdocs.yml")
    shutil.copytree(REPO / "docs", folder / "docs", ignore=shutil.ignore_patterns("generated"))
    hook = folder / "src" / "unlearn_kb" / "site"
    hook.mkdir(parents=True)
    shutil.copy(REPO / "src" / "unlearn_kb" / "site" / "hooks.py", hook / "hooks.py")
    shutil.copytree(REPO / "registry", folder / "registry")  # the contributor guide includes a record
    (folder / "benchmarks").mkdir()
    shutil.copy(REPO / "benchmarks" / "README.md", folder / "benchmarks")  # the speed page shows its figures
    return folder


def build(project: Path, registry_root: Path) -> tuple[Path, float]:
    """Generate and build ``project`` strictly from ``registry_root``; the site and the seconds."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    site = project / "site"
    with pytest.MonkeyPatch.context() as mp:  # the hook loads the registry the same way
        mp.setenv("UNLEARN_KB_REGISTRY", str(registry_root))
        start = time.perf_counter()
        generate(project / "docs", load_registry(registry_root))
        build_site(project / "mkdocs.yml", site_dir=site)
        return site, time.perf_counter() - start


@pytest.fixture(scope="session")
def real_site(tmp_path_factory) -> tuple[Path, float]:
    """The site built from the registry as it is in the checkout, and how long it took."""
    project = make_project(tmp_path_factory.mktemp("real"))
    return build(project, REPO / "registry")


@pytest.fixture(scope="session")
def malicious_site(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("malicious")
    root = folder / "registry-under-test"
    shutil.copytree(FIXTURE, root)
    shutil.copy(REPO / "registry" / "taxonomy.yaml", root / "taxonomy.yaml")
    make_malicious(root)
    site, _ = build(make_project(folder / "project"), root)
    return site


# --------------------------------------------------------------------------- citations


def citation(**changes) -> Citation:
    data = dict(title="Negative Preference Optimization: From Collapse to 100% & Back_1",
                authors=["Ruiqi Zhang", "Song Mei"], year=2024, arxiv="2404.05868", venue="COLM 2024",
                url="https://arxiv.org/abs/2404.05868")
    data.update(changes)
    return Citation(**data)


def test_bibtex_escapes_latex_specials_and_picks_the_entry_type():
    entry = citations.bibtex(citation(), key="npo")
    assert entry.startswith("@inproceedings{npo,\n")
    assert r"{{Negative Preference Optimization: From Collapse to 100\% \& Back\_1}}" in entry
    assert "{Ruiqi Zhang and Song Mei}" in entry and "{COLM 2024}" in entry
    assert "{2404.05868}" in entry and entry.endswith("\n}")
    assert citations.bibtex(citation(venue=None), key="x").startswith("@misc{x,")
    assert citations.bibtex(citation(venue="TMLR 2025"), key="x").startswith("@article{x,")
    with pytest.raises(ValueError):
        citations.bibtex(citation(), key="bad key}")


def test_plain_citation_reads_authors_year_title_venue_arxiv_and_url():
    assert citations.plain(citation(authors=["A B", "C D", "E F"])) == (
        "A B, C D and E F (2024). Negative Preference Optimization: From Collapse to 100% & Back_1. "
        "COLM 2024. arXiv:2404.05868. https://arxiv.org/abs/2404.05868")


# --------------------------------------------------------------------------- escaping


def test_md_turns_markup_in_record_text_into_literal_characters():
    out = md(PAYLOAD)
    for dangerous in ("<", ">", "*", "[", "]", "(", ")", "$", "\\", "|", "&x"):
        assert dangerous not in out.replace("&#", "")
    assert html.unescape(out) == " ".join(PAYLOAD.split())
    assert md("1. not a list").startswith("1&#46;")
    assert md(": not a definition").startswith("&#58;")


def test_math_block_keeps_latex_intact_but_escapes_html():
    latex = r"\frac{a}{b} < c \quad \text{</div><script>}"
    block = math_block(latex)
    assert block.startswith('<div class="arithmatex">\\[') and block.endswith("\\]</div>")
    assert "<script>" not in block and html.unescape(block[len('<div class="arithmatex">'):-6]) == f"\\[{latex}\\]"


def test_links_and_code_blocks_from_records_cannot_break_out():
    with pytest.raises(ValueError):
        url("javascript:alert(1)")
    assert url('https://x.org/a(b)"<c>') == "https://x.org/a%28b%29%22%3Cc%3E"
    assert attr('"><script>') == "&quot;&gt;&lt;script&gt;"
    block = code_block("has ``` inside", "bibtex")
    assert block.startswith("````bibtex\n") and block.endswith("\n````")


# --------------------------------------------------------------------------- generated pages


def test_every_method_gets_a_page_an_explorer_row_and_a_grid_entry(fixture_root):
    reg = load_registry(fixture_root)
    files = Pages(reg).render()
    explorer = files[EXPLORER]
    for method_id in reg.methods:
        page = files[f"generated/methods/{method_id}.md"]
        assert page.startswith("---\n") and "## Does it remove or suppress?" in page
        assert f'href="{method_id}.html"' in explorer
        assert f"generated/methods/{method_id}.md" in files["generated/snippets/grid.md"]
    assert explorer.count("<tr data-stated=") == len(reg.methods)


def test_method_page_puts_the_plain_summary_first_then_evidence_objective_and_citation(fixture_root):
    reg = load_registry(fixture_root)
    page = Pages(reg).method_page(reg.methods["alpha_ascent"])
    order = ["In plain words", "## At a glance", "## Does it remove or suppress?", "### Published findings",
             "Relearning restores alpha", "## How it works", '<div class="arithmatex">', "## Cite", "@misc{alpha_ascent,"]
    positions = [page.index(marker) for marker in order]
    assert positions == sorted(positions)
    front = yaml.safe_load(page.split("---\n")[1])
    assert front["tags"] == ["Removal-intended", "Parameter space", "Gradient-based objectives"]


def test_a_dangling_reference_fails_the_generator_loudly(fixture_root):
    reg = load_registry(fixture_root)  # valid on disk; the loader would reject the same mistake
    reg.findings["ghost"] = Finding(id="ghost", title="t", finding_kind=FindingKind.relearning, claim="c",
                                    methods=["no_such_method"], source=Source(title="s", year=2024, arxiv="2401.00001"))
    with pytest.raises(DanglingReference, match="no_such_method"):
        render(reg)


def test_generate_writes_only_changes_and_removes_pages_of_deleted_records(fixture_root, tmp_path):
    docs = tmp_path / "docs"
    first = generate(docs, load_registry(fixture_root))
    assert "generated/methods/alpha_ascent.md" in first.written and not first.removed
    assert (docs / "generated/assets/vendor/katex/katex.min.js").is_file()
    assert generate(docs, load_registry(fixture_root)).written == []

    (fixture_root / "methods" / "gamma_prompt.yaml").unlink()
    again = generate(docs, load_registry(fixture_root))
    assert "generated/methods/gamma_prompt.md" in again.removed
    assert not (docs / "generated/methods/gamma_prompt.md").exists()


def test_a_record_change_changes_its_page(fixture_root, tmp_path):
    docs = tmp_path / "docs"
    generate(docs, load_registry(fixture_root))
    edit_record(fixture_root / "methods" / "alpha_ascent.yaml", summary="A brand new plain summary.")
    report = generate(docs, load_registry(fixture_root))
    assert "generated/methods/alpha_ascent.md" in report.written
    assert "A brand new plain summary" in (docs / "generated/methods/alpha_ascent.md").read_text()


def write_result(root: Path, method: str = "alpha_ascent") -> None:
    result = MeasuredResult(
        method=method, verdict="suppression-like", decided_by="relearning", seed=0, date="2026-01-01",
        command=f"unlearn-kb bench {method} --seed 0", versions={"unlearn_kb": "0.1.0"},
        figures={"forget.rouge_l": {"model": 0.05, "reference": 0.04, "original": 0.97},
                 "relearn.forget_b_after": {"model": 0.6, "reference": 0.1, "original": 0.97},
                 "fluency.perplexity": {"model": 12.5, "reference": 9.0, "original": 8.7},
                 "steps": 100})
    (root / "results").mkdir(exist_ok=True)
    (root / "results" / f"{method}.json").write_text(result.model_dump_json())


def test_a_measured_result_shows_its_verdict_figures_and_chart(fixture_root):
    write_result(fixture_root)
    files = Pages(load_registry(fixture_root)).render()
    page = files["generated/methods/alpha_ascent.md"]
    assert "ukb-verdict-suppression-like" in page and "(alpha_ascent-results.svg)" in page
    assert "after the attack" in page or "relearning" in page
    assert "unlearn-kb bench alpha_ascent --seed 0" in page
    svg = files["generated/methods/alpha_ascent-results.svg"]
    assert "after a relearning attack" in svg and "perplexity" not in svg  # only shares are drawn
    assert 'data-observed="suppression-like"' in files[EXPLORER]


def test_the_evaluation_summary_table_lists_every_measured_result(fixture_root):
    write_result(fixture_root)
    snippet = Pages(load_registry(fixture_root)).render()["generated/snippets/measured.md"]
    (row,) = [line for line in snippet.splitlines() if "alpha_ascent" in line]
    assert "generated/methods/alpha_ascent.md" in row and "**suppression&#45;like**" in row
    assert "relearning" in row and row.count("|") == 7  # six columns
    assert len(snippet.splitlines()) == 3  # header, rule, the one result


def test_the_chart_draws_only_figures_between_zero_and_one():
    result = MeasuredResult(method="m", verdict="removal-like", decided_by="x", command="c", seed=0,
                            versions={}, date="d", figures={"loss": {"model": 3.0}, "steps": 5})
    assert figures.bar_chart_svg(result) is None


def test_the_erasure_row_of_the_obligation_guide_lists_only_removal_like_evidence(fixture_root):
    reg = load_registry(fixture_root)
    guide = Pages(reg).obligations_snippet().splitlines()
    erasure = next(line for line in guide if "erasure" in line)
    assert "None yet" in erasure  # the fixture has no removal-like method
    write_result(fixture_root, "beta_preference")
    path = fixture_root / "results" / "beta_preference.json"
    path.write_text(path.read_text().replace("suppression-like", "removal-like"))
    guide = Pages(load_registry(fixture_root)).obligations_snippet().splitlines()
    erasure = next(line for line in guide if "erasure" in line)
    assert "beta_preference.md" in erasure and "alpha_ascent.md" not in erasure


def test_docs_generate_command_writes_the_pages(fixture_root, tmp_path, monkeypatch):
    import typer

    from unlearn_kb.cli import docs as docs_cli

    monkeypatch.setenv("UNLEARN_KB_REGISTRY", str(fixture_root))
    app = typer.Typer()
    app.callback()(lambda: None)
    docs_cli.register(app)
    result = CliRunner().invoke(app, ["docs", "generate", "--docs-dir", str(tmp_path / "docs")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "docs/generated/methods/alpha_ascent.md").is_file()


# --------------------------------------------------------------------------- the built site


def test_the_real_site_builds_strictly_in_under_30_seconds(real_site):
    site, seconds = real_site
    print(f"\nsite built (generate + mkdocs build --strict) in {seconds:.1f} s")
    assert (site / "index.html").is_file() and (site / "generated/methods/index.html").is_file()
    assert seconds < BUILD_BUDGET_S


def test_a_broken_link_fails_the_strict_build(fixture_root, tmp_path):
    project = make_project(tmp_path / "project")
    page = project / "docs" / "glossary.md"
    page.write_text(page.read_text() + "\n[gone](generated/methods/no_such_method.md)\n")
    from mkdocs.exceptions import Abort

    with pytest.raises(Abort):
        build(project, fixture_root)


def internal_references(site: Path):
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        for ref in re.findall(r'(?:href|src)="([^"]+)"', text):
            yield page, html.unescape(ref)


def test_every_internal_link_and_asset_in_the_built_site_resolves(real_site):
    site, _ = real_site
    broken = []
    for page, ref in internal_references(site):
        parts = urlsplit(ref)
        if parts.scheme or ref.startswith(("#", "mailto:", "//")):
            continue
        base = site if parts.path.startswith("/") else page.parent  # 404.html links from the root
        target = (base / unquote(parts.path).lstrip("/")).resolve() if parts.path else page
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            broken.append(f"{page.relative_to(site)} -> {ref}")
    assert broken == []


def test_the_built_site_loads_nothing_from_another_host(real_site):
    site, _ = real_site
    external = set()
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        external |= set(re.findall(r'<(?:script|link|img|iframe)[^>]+(?:src|href)="(https?://[^"]+)"', text))
    assert external == set()


def test_the_registry_export_and_the_schemas_are_downloadable(real_site):
    jsonschema = pytest.importorskip("jsonschema")
    site, _ = real_site
    export = json.loads((site / "generated/registry.json").read_text())
    method_schema = json.loads((site / "generated/schema/method.schema.json").read_text())
    assert len(export["methods"]) == len(load_registry(REPO / "registry").methods)
    for method in export["methods"]:
        jsonschema.validate(method, method_schema)


def test_record_text_is_escaped_in_the_built_site(malicious_site):
    pages = {p: p.read_text(encoding="utf-8") for p in malicious_site.rglob("*.html")}
    for path, text in pages.items():
        assert "<script>alert" not in text, path
        assert 'onerror="window.__xss' not in text and "onerror=window" not in text, path
        assert 'href="javascript:' not in text, path
    page = pages[malicious_site / "generated/methods/alpha_ascent.html"]
    shown = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert '<script>alert("xss")</script>' in shown  # visible as text
    assert "$x^2$" in shown and "*bold*" in shown
    assert r"\text{</div><script>alert(1)</script>}" in shown  # the LaTeX, intact inside its math block


# --------------------------------------------------------------------------- in a browser


def serve(site: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def base_url(real_site):
    server, address = serve(real_site[0])
    yield address
    server.shutdown()


@pytest.fixture
def page(browser, base_url):
    """A page that records every request leaving 127.0.0.1 and every script error."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.outside, page.errors = [], []
    page.on("request", lambda r: None if r.url.startswith((base_url, "data:")) else page.outside.append(r.url))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    context.close()
    assert page.outside == [], "the site must work with no network"
    assert page.errors == []


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"site-{name}.png"), full_page=True)


@pytest.mark.browser
def test_search_finds_npo(page, base_url):
    from playwright.sync_api import expect

    page.goto(f"{base_url}/index.html")
    page.locator("input.md-search__input").fill("NPO")
    first = page.locator(".md-search-result__item").first
    expect(first).to_contain_text("Negative Preference Optimization (NPO)", timeout=10_000)
    shot(page, "search-npo")


@pytest.mark.browser
def test_explorer_filtered_to_removal_intended_keeps_only_those_rows(page, base_url):
    from playwright.sync_api import expect

    reg = load_registry(REPO / "registry")
    removal = {m.name for m in reg.methods.values() if m.intention.stated.value == "removal"}
    page.goto(f"{base_url}/generated/methods/index.html")
    rows = page.locator("#ukb-methods tbody tr")
    expect(rows).to_have_count(len(reg.methods))
    page.select_option("select[data-filter=stated]", "removal")
    visible = page.locator("#ukb-methods tbody tr:not([hidden])")
    expect(visible).to_have_count(len(removal))
    assert set(visible.locator("td:first-child a").all_inner_texts()) == removal
    expect(page.locator(".ukb-count")).to_have_text(f"Showing {len(removal)} of {len(reg.methods)} methods")
    shot(page, "explorer-removal")

    page.locator("#ukb-methods th", has_text="Method").click()
    page.locator("#ukb-methods th", has_text="Method").click()  # second click: descending
    names = visible.locator("td:first-child a").all_inner_texts()
    assert names == sorted(names, key=str.lower, reverse=True)

    page.goto(f"{base_url}/generated/methods/index.html?stated=suppression&level=output")
    expected = [m for m in reg.methods.values()
                if m.intention.stated.value == "suppression" and m.level.value == "output"]
    expect(page.locator("#ukb-methods tbody tr:not([hidden])")).to_have_count(len(expected))


@pytest.mark.browser
def test_method_page_renders_its_objective_after_instant_navigation(page, base_url):
    from playwright.sync_api import expect

    page.goto(f"{base_url}/generated/methods/index.html")
    page.locator("#ukb-methods").get_by_role("link", name="Negative Preference Optimization", exact=True).click()
    expect(page.locator("h1")).to_contain_text("Negative Preference Optimization (NPO)")
    expect(page.locator(".arithmatex .katex").first).to_be_visible()
    assert page.locator(".katex-error").count() == 0
    shot(page, "method-npo")


@pytest.mark.browser
def test_every_formula_in_the_registry_renders_without_a_katex_error(page, base_url):
    pages = [f"generated/methods/{i}.html" for i in sorted(load_registry(REPO / "registry").methods)]
    failures = []
    for path in [*pages, "generated/metrics.html"]:
        page.goto(f"{base_url}/{path}")
        page.wait_for_function("document.querySelectorAll('.arithmatex').length === "
                               "document.querySelectorAll('.arithmatex .katex').length")
        if page.locator(".katex-error").count():
            failures.append(f"{path}: {page.locator('.katex-error').first.get_attribute('title')}")
    assert failures == []


@pytest.mark.browser
def test_home_page_in_light_and_dark_mode(page, base_url):
    from playwright.sync_api import expect

    page.goto(f"{base_url}/index.html")
    expect(page.locator("h1")).to_contain_text("Unlearning knowledge base")
    expect(page.locator("article table").first).to_be_visible()
    shot(page, "home-light")
    page.locator("label.md-header__button[for^=__palette]:visible").first.click()
    expect(page.locator("body")).to_have_attribute("data-md-color-scheme", "slate")
    shot(page, "home-dark")


@pytest.mark.browser
def test_malicious_record_text_runs_no_script_in_the_browser(browser, malicious_site):
    server, address = serve(malicious_site)
    try:
        page = browser.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(f"{address}/generated/methods/alpha_ascent.html")
        page.locator("input.md-search__input").fill("bold pipe")
        page.wait_for_timeout(1500)  # let search render its results
        shot(page, "malicious-record")
        page.goto(f"{address}/generated/methods/index.html")
        page.wait_for_timeout(300)
        assert page.evaluate("window.__xss") is None
        assert dialogs == []
        page.close()
    finally:
        server.shutdown()
