"""Resolving a method's settings: paper defaults, toy overrides, and --set, with clear errors."""

from __future__ import annotations

import pytest

from unlearn_kb.engine.run import coerce, parse_set_options, resolve_method, resolve_settings
from unlearn_kb.errors import ConfigError
from unlearn_kb.methods import dpo_idk, npo, rmu
from unlearn_kb.registry import load_registry


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def test_defaults_come_from_the_record_and_the_engine(registry):
    settings = resolve_settings(registry.method("npo"), npo.Config, toy=False)
    assert settings.config == npo.Config(beta=0.1, alpha=1.0, retain_loss="nll")
    assert settings.run.lr == 1e-5
    assert settings.sources["beta"] == "paper default (registry record)"
    assert settings.sources["lr"] == "engine default"


def test_toy_overrides_apply_only_on_the_toy_world(registry):
    record = registry.method("rmu")
    real = resolve_settings(record, rmu.Config, toy=False)
    toy = resolve_settings(record, rmu.Config, toy=True)
    assert real.config.layer == 7 and real.config.update_layers == [5, 6, 7]
    assert toy.config.layer == record.implementation.toy_overrides["layer"]
    assert isinstance(toy.config.update_layers, list) and all(isinstance(i, int) for i in toy.config.update_layers)
    assert toy.sources["layer"] == "toy-world override (registry record)"


def test_user_overrides_win_and_are_parsed_to_the_field_type(registry):
    settings = resolve_settings(registry.method("npo"), npo.Config, toy=True,
                                overrides={"beta": "0.5", "retain_loss": "kl", "lr": "1e-4", "steps": "7"})
    assert settings.config.beta == 0.5 and settings.config.retain_loss == "kl"
    assert settings.run.lr == 1e-4 and settings.run.steps == 7
    assert settings.sources["beta"] == "--set"


def test_an_unknown_key_is_an_error_listing_the_valid_keys(registry):
    with pytest.raises(ConfigError) as error:
        resolve_settings(registry.method("npo"), npo.Config, toy=False, overrides={"betta": "0.2"})
    message = str(error.value)
    assert "unknown setting 'betta'" in message and "did you mean 'beta'" in message
    assert "alpha, beta, retain_loss" in message and "lr" in message


@pytest.mark.parametrize("key, value, expected", [
    ("beta", "abc", "setting 'beta' expects a number, got 'abc'"),
    ("retain_loss", "mse", "setting 'retain_loss' expects one of 'nll', 'kl', got 'mse'"),
    ("steps", "2.5", "setting 'steps' expects an integer, got '2.5'"),
])
def test_a_wrong_type_is_an_error_naming_the_key_and_the_expected_type(registry, key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        resolve_settings(registry.method("npo"), npo.Config, toy=False, overrides={key: value})


def test_lists_and_booleans_parse_from_the_command_line(registry):
    assert coerce("update_layers", "1, 2,3", list[int]) == [1, 2, 3]
    assert coerce("update_layers", "[4,5]", list[int]) == [4, 5]
    with pytest.raises(ConfigError, match="comma-separated list of integers"):
        coerce("update_layers", "1,x", list[int])
    settings = resolve_settings(registry.method("dpo_idk"), dpo_idk.Config, toy=False,
                                overrides={"two_over_beta": "true"})
    assert settings.config.two_over_beta is True
    with pytest.raises(ConfigError, match="expects true or false"):
        coerce("two_over_beta", "maybe", bool)


def test_set_options_must_be_key_value_pairs():
    assert parse_set_options(["a=1", "b = x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_options(["beta"])


def test_a_method_that_is_not_implemented_is_refused_with_the_runnable_ids(registry):
    planned = next(m for m in registry.methods.values() if m.implementation.status.value != "implemented")
    with pytest.raises(ConfigError, match="no runnable implementation.*runnable methods: .*npo"):
        resolve_method(planned.id, registry)
