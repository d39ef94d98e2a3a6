"""The registry loader: valid folders load, every kind of bad record is reported precisely."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unlearn_kb.catalog import Catalog, MethodQuery, query_methods
from unlearn_kb.errors import RegistryError, UnknownIdError
from unlearn_kb.registry import load_registry

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "registry"


def problems_of(root: Path) -> list[str]:
    with pytest.raises(RegistryError) as caught:
        load_registry(root)
    return [str(p) for p in caught.value.problems]


def test_fixture_registry_loads_every_record(fixture_root):
    reg = load_registry(fixture_root)
    assert sorted(reg.methods) == ["alpha_ascent", "beta_preference", "gamma_prompt"]
    assert list(reg.benchmarks) == ["bench_one"] and list(reg.findings) == ["relearn_restores"]


def test_shipped_registry_is_valid_and_large_enough():
    reg = load_registry()
    assert len(reg.methods) >= 35
    assert len(reg.benchmarks) >= 6 and len(reg.metrics) >= 14 and len(reg.findings) >= 12
    for family in reg.taxonomy.families:
        assert any(m.family == family.id for m in reg.methods.values()), f"family {family.id} has no method"


def test_malformed_yaml_names_file_and_line(fixture_root):
    path = fixture_root / "methods" / "alpha_ascent.yaml"
    path.write_text(path.read_text() + "broken: [unclosed\n")
    [problem] = problems_of(fixture_root)
    assert "alpha_ascent.yaml:" in problem and "invalid YAML" in problem


def test_wrong_type_names_record_field_and_line(fixture_root):
    path = fixture_root / "methods" / "beta_preference.yaml"
    path.write_text(path.read_text().replace('year: 2024, arxiv: "2401.00002", url', 'year: soon, arxiv: "2401.00002", url'))
    [problem] = problems_of(fixture_root)
    assert "beta_preference.yaml:" in problem
    assert "record 'beta_preference'" in problem and "field 'citation.year'" in problem
    assert "valid integer" in problem


def test_unknown_field_is_rejected(fixture_root):
    path = fixture_root / "metrics" / "metric_one.yaml"
    path.write_text(path.read_text() + "colour: blue\n")
    [problem] = problems_of(fixture_root)
    assert "field 'colour'" in problem and "unknown field" in problem and "metric_one.yaml:8" in problem


def test_unknown_cross_reference_suggests_the_closest_id(fixture_root):
    path = fixture_root / "methods" / "alpha_ascent.yaml"
    path.write_text(path.read_text().replace("benchmarks: [bench_one]", "benchmarks: [bench_onee]"))
    [problem] = problems_of(fixture_root)
    assert "field 'evaluation.benchmarks'" in problem and "unknown benchmark id 'bench_onee'" in problem
    assert "did you mean 'bench_one'" in problem


def test_finding_about_an_unknown_method_is_rejected(fixture_root):
    path = fixture_root / "findings" / "relearn_restores.yaml"
    path.write_text(path.read_text().replace("methods: [alpha_ascent]", "methods: [alpha_ascend]"))
    problems = problems_of(fixture_root)
    assert any("record 'relearn_restores'" in p and "unknown method id 'alpha_ascend'" in p for p in problems)
    # ... and the method that cites it as evidence learns that the finding no longer concerns it
    assert any("record 'alpha_ascent'" in p and "is not about this method" in p for p in problems)


def test_duplicate_id_is_rejected(fixture_root):
    source = fixture_root / "methods" / "alpha_ascent.yaml"
    shutil.copy(source, fixture_root / "methods" / "alpha_ascent_copy.yaml")
    problems = problems_of(fixture_root)
    assert any("duplicate id" in p and "alpha_ascent.yaml" in p for p in problems)


@pytest.mark.parametrize("bad_id", ["../evil", "Upper", "with space", "dot.ted", "trailing_"])
def test_ids_must_be_slugs(fixture_root, bad_id):
    path = fixture_root / "metrics" / "metric_one.yaml"
    path.write_text(path.read_text().replace("id: metric_one", f"id: '{bad_id}'"))
    problems = problems_of(fixture_root)
    assert any("field 'id'" in p and "should match pattern" in p for p in problems)


def test_malformed_arxiv_id_and_implausible_year_are_both_reported(fixture_root):
    path = fixture_root / "methods" / "alpha_ascent.yaml"
    text = path.read_text().replace('year: 2023, arxiv: "2301.00001"', 'year: 1066, arxiv: "arXiv:2301"')
    path.write_text(text)
    problems = problems_of(fixture_root)
    assert any("citation.year" in p and "greater than or equal to 1990" in p for p in problems)
    assert any("citation.arxiv" in p for p in problems)


def test_all_problems_of_a_folder_are_reported_at_once(fixture_root):
    for name in ("alpha_ascent", "gamma_prompt"):
        path = fixture_root / "methods" / f"{name}.yaml"
        path.write_text(path.read_text().replace("level: ", "level: nowhere_"))
    assert len(problems_of(fixture_root)) == 2


def test_file_name_must_match_the_id(fixture_root):
    (fixture_root / "metrics" / "metric_one.yaml").rename(fixture_root / "metrics" / "other.yaml")
    [problem] = problems_of(fixture_root)
    assert "rename it to 'metric_one.yaml'" in problem


def test_implemented_method_needs_an_entry(fixture_root):
    path = fixture_root / "methods" / "gamma_prompt.yaml"
    path.write_text(path.read_text().replace("status: not-planned, notes: a fixture", "status: implemented"))
    [problem] = problems_of(fixture_root)
    assert "field 'implementation'" in problem and "needs an entry" in problem


def test_aliases_and_old_ids_resolve(fixture_root):
    reg = load_registry(fixture_root)
    assert reg.method("old_alpha").id == "alpha_ascent"
    assert reg.method("Alpha Ascent").id == "alpha_ascent"
    with pytest.raises(UnknownIdError, match="did you mean 'alpha_ascent'"):
        reg.method("alpha_ascnt")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (MethodQuery(intent="removal"), ["alpha_ascent", "beta_preference"]),
        (MethodQuery(intent="suppression"), ["gamma_prompt"]),
        (MethodQuery(intent="removal", observed="suppression-like"), ["alpha_ascent"]),
        (MethodQuery(observed="unknown"), ["beta_preference", "gamma_prompt"]),
        (MethodQuery(level="input"), ["gamma_prompt"]),
        (MethodQuery(reference_free=True, benchmark="bench_one"), ["alpha_ascent"]),
        (MethodQuery(retain_free=True), ["alpha_ascent", "gamma_prompt"]),
        (MethodQuery(family="preference_optimization"), ["beta_preference"]),
        (MethodQuery(text="quantization"), ["alpha_ascent", "beta_preference"]),  # via a finding, and a summary
        (MethodQuery(text="relearning attack"), ["alpha_ascent"]),
        (MethodQuery(status="not-planned"), ["gamma_prompt"]),
    ],
)
def test_queries_return_the_right_sets(fixture_root, query, expected):
    catalog = Catalog.from_registry(load_registry(fixture_root))
    assert [m["id"] for m in query_methods(catalog, query)] == expected


def test_query_with_unknown_family_suggests_one(fixture_root):
    catalog = Catalog.from_registry(load_registry(fixture_root))
    with pytest.raises(UnknownIdError, match="did you mean 'in_context'"):
        query_methods(catalog, MethodQuery(family="in_contxt"))


def test_findings_given_as_evidence_must_concern_the_method(fixture_root):
    path = fixture_root / "methods" / "beta_preference.yaml"
    path.write_text(path.read_text().replace(
        "observed: unknown, rationale: No attack has been published.}",
        "observed: suppression-like, rationale: Relearning., findings: [relearn_restores]}"))
    [problem] = problems_of(fixture_root)
    assert "record 'beta_preference'" in problem and "finding 'relearn_restores' is not about this method" in problem


def test_observed_label_without_evidence_is_rejected(fixture_root):
    path = fixture_root / "methods" / "alpha_ascent.yaml"
    path.write_text(path.read_text().replace(", findings: [relearn_restores]}", "}"))
    [problem] = problems_of(fixture_root)
    assert "field 'intention.findings'" in problem and "needs evidence" in problem

yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 3000) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["id", "name", "intention", "level", "citation", "requirements", "hyperparameters",
                              "evaluation", "implementation", "aliases", "unexpected"]),
       value=yaml_values)
def test_any_field_value_gives_a_registry_or_the_clear_error(fixture_root, field, value):
    path = fixture_root / "methods" / "alpha_ascent.yaml"
    record = yaml.safe_load((FIXTURE / "methods" / "alpha_ascent.yaml").read_text())
    record[field] = value
    path.write_text(yaml.safe_dump(record))
    try:
        load_registry(fixture_root)
    except RegistryError as exc:
        assert exc.problems and all(str(p).startswith(str(p.file)) for p in exc.problems)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_any_file_text_gives_a_registry_or_the_clear_error(fixture_root, text):
    (fixture_root / "metrics" / "metric_one.yaml").write_text(text)
    try:
        load_registry(fixture_root)
    except RegistryError as exc:
        assert any("metric_one.yaml" in str(p) for p in exc.problems)
