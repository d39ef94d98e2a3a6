"""The toy world: its data is deterministic and leak-free, its tokenizer is exact, its cache is
safe, and its models know what they were trained on (and the reference does not)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unlearn_kb.engine.data import IGNORE_INDEX, Example, encode_example, read_examples
from unlearn_kb.errors import UserError
from unlearn_kb.toyworld import WorldConfig, load_toyworld
from unlearn_kb.toyworld.generator import ATTRIBUTES, REFUSALS, generate
from unlearn_kb.toyworld.tokenizer import build_tokenizer

SPLITS = ("forget", "retain", "holdout")

# A world small enough to build in seconds: for the cache and lifecycle tests, not for recall.
TINY = WorldConfig(n_entities=20, epochs=1, assistant_epochs=1, hidden_size=32, n_layers=1, n_heads=2,
                   intermediate_size=64, assistant_hidden_size=16, assistant_layers=1, assistant_heads=2,
                   assistant_intermediate_size=32)


def _rows(examples: list[Example]) -> list[tuple]:
    return [(e.question, e.answer, e.text, sorted(e.extras.items())) for e in examples]


@pytest.fixture(scope="module")
def data():
    return generate(WorldConfig())


@pytest.fixture(scope="module")
def tokenizer(data):
    return build_tokenizer(data.all_texts())


# --------------------------------------------------------------------------- the generator


def test_same_config_generates_the_same_world_example_for_example(data):
    again = generate(WorldConfig())
    assert data.examples.keys() == again.examples.keys()
    for name in data.examples:
        assert _rows(data.examples[name]) == _rows(again.examples[name])


def test_another_seed_generates_another_world(data):
    other = generate(WorldConfig(seed=1))
    assert [e.name for e in other.entities] != [e.name for e in data.entities]


def test_splits_are_disjoint_by_entity_and_cover_every_entity(data):
    names = {split: {e.name for e in data.splits[split]} for split in SPLITS}
    assert not names["forget"] & names["retain"]
    assert not names["forget"] & names["holdout"]
    assert not names["retain"] & names["holdout"]
    assert set().union(*names.values()) == {e.name for e in data.entities}
    assert (len(names["forget"]), len(names["holdout"]), len(names["retain"])) == (20, 20, 160)
    for split in SPLITS:
        for suffix in ("", "_paraphrased"):
            assert {e.extras["entity"] for e in data.examples[split + suffix]} == names[split]


def test_entity_names_are_unique_single_words_unlike_any_answer(data):
    names = [e.name for e in data.entities]
    assert len(set(names)) == len(names)
    assert all(name.isalpha() for name in names)
    values = {v.lower() for a in ATTRIBUTES for v in a.values}
    assert not {n.lower() for n in names} & values


def test_held_out_templates_never_appear_in_training_examples(data):
    config = WorldConfig()
    for split in SPLITS:
        trained, paraphrased = data.examples[split], data.examples[split + "_paraphrased"]
        assert {e.extras["template"] for e in trained} == set(range(config.n_training_templates))
        assert {e.extras["template"] for e in paraphrased} == set(
            range(config.n_training_templates, config.n_templates))
        assert not {e.question for e in trained} & {e.question for e in paraphrased}
        # Every trained example points at its fact's held-out phrasing.
        held_out = {e.question for e in paraphrased}
        assert all(e.extras["paraphrased_question"] in held_out for e in trained)
    every_trained_question = {e.question for s in SPLITS for e in data.examples[s]}
    assert not every_trained_question & {e.question for s in SPLITS for e in data.examples[s + "_paraphrased"]}


def test_each_fact_is_asked_through_every_training_template_with_one_answer(data):
    config = WorldConfig()
    by_fact: dict[str, list[Example]] = {}
    for e in data.examples["forget"]:
        by_fact.setdefault(e.extras["fact_id"], []).append(e)
    assert len(by_fact) == 20 * config.n_attributes
    for examples in by_fact.values():
        assert len(examples) == config.n_training_templates
        assert len({e.answer for e in examples}) == 1
        assert all(e.extras["entity"] in e.question for e in examples)


def test_every_fact_has_a_refusal_and_three_wrong_answers_of_its_attribute(data):
    values = {a.key: set(a.values) for a in ATTRIBUTES}
    for split in SPLITS:
        for e in data.examples[split] + data.examples[split + "_paraphrased"]:
            assert e.extras["alternate"] in REFUSALS
            perturbed = e.extras["perturbed"]
            assert len(perturbed) == len(set(perturbed)) == 3
            assert e.answer not in perturbed
            assert set(perturbed) <= values[e.extras["attribute"]]
            assert e.answer in values[e.extras["attribute"]]
    assert len({e.extras["alternate"] for e in data.examples["retain"]}) > 1, "refusals should vary"


def test_general_text_is_about_retain_entities_only(data):
    retain = {e.name for e in data.splits["retain"]}
    others = {e.name for e in data.entities} - retain
    assert data.examples["general"]
    for example in data.examples["general"]:
        words = set(example.text.rstrip(".").split())
        assert not example.is_qa and not example.extras
        assert words & retain and not words & others, example.text


def test_invalid_config_is_a_user_error_naming_the_field():
    with pytest.raises(UserError, match="n_paraphrase_templates"):
        WorldConfig(n_templates=3, n_paraphrase_templates=3)
    with pytest.raises(UserError, match="forget_fraction"):
        WorldConfig(forget_fraction=0.6, holdout_fraction=0.5)


def test_config_key_changes_with_every_field():
    base = WorldConfig()
    keys = {base.key()}
    for f in dataclasses.fields(WorldConfig):
        value = getattr(base, f.name)
        candidates = [not value] if isinstance(value, bool) else [value + 1, value * 2, value - 1, value / 2]
        for candidate in candidates:
            try:
                keys.add(dataclasses.replace(base, **{f.name: type(value)(candidate)}).key())
                break
            except UserError:
                continue
    assert len(keys) == len(dataclasses.fields(WorldConfig)) + 1
    assert WorldConfig().key() == base.key()


# --------------------------------------------------------------------------- the tokenizer


def test_tokenizer_round_trips_every_answer_and_refusal(tokenizer):
    for text in [v for a in ATTRIBUTES for v in a.values] + list(REFUSALS):
        ids = tokenizer(" " + text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_splits_punctuation_and_knows_every_word_of_the_world(tokenizer, data):
    name = data.entities[0].name
    assert tokenizer.tokenize(f"Where was {name} born?") == ["Where", "was", name, "born", "?"]
    assert tokenizer.tokenize("Varlo") == ["<unk>"], "a word outside the world is unknown, not split"
    for text in data.all_texts():
        assert tokenizer.unk_token_id not in tokenizer(text)["input_ids"], text


def test_tokenizer_masks_the_prompt_and_keeps_the_answer_as_one_token_plus_eos(tokenizer, data):
    example = data.examples["forget"][0]
    encoded = encode_example(tokenizer, example, 0, 48)
    answer = [t for t in encoded.labels if t != IGNORE_INDEX]
    assert tokenizer.convert_ids_to_tokens(answer) == [example.answer, "</s>"]
    assert encoded.input_ids[0] == tokenizer.bos_token_id


def test_tokenizer_survives_save_pretrained(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "Question: What pet does Varlo have?\nAnswer: I do not know"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id) == (0, 1, 2)


# --------------------------------------------------------------------------- the cache


def test_unbuilt_world_is_a_user_error_when_building_is_not_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_KB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="not built"):
        load_toyworld(WorldConfig(), build=False)


def test_folder_without_manifest_counts_as_unbuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_KB_CACHE", str(tmp_path))
    leftover = tmp_path / "toyworld" / WorldConfig().key()
    (leftover / "original").mkdir(parents=True)
    (leftover / "forget.jsonl").write_text("half a line")
    with pytest.raises(UserError, match="not built"):
        load_toyworld(WorldConfig(), build=False)


def test_cache_folder_honours_unlearn_kb_cache_then_xdg(tmp_path, monkeypatch):
    from unlearn_kb.toyworld import cache_root

    monkeypatch.delenv("UNLEARN_KB_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "unlearn-kb"
    monkeypatch.setenv("UNLEARN_KB_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"


def test_cli_module_does_not_import_torch():
    code = "import sys, unlearn_kb.cli.toyworld, unlearn_kb.toyworld; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_info_of_an_unbuilt_world_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_KB_CACHE", str(tmp_path))
    result = _cli(["toyworld", "info", "--seed", "7"])
    assert isinstance(result.exception, UserError)
    assert "toyworld build" in str(result.exception)


def _cli(args: list[str]):
    import typer
    from typer.testing import CliRunner

    from unlearn_kb.cli import toyworld

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    toyworld.register(app)
    return CliRunner().invoke(app, args)


@pytest.mark.slow
def test_tiny_world_builds_atomically_and_its_assistant_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_KB_CACHE", str(tmp_path))
    messages: list[str] = []
    world = load_toyworld(TINY, progress=messages.append)
    assert any("original" in m for m in messages) and any("reference" in m for m in messages)
    assert (world.path / "manifest.json").exists()
    assert not world.assistant_path.exists()
    assert [p.name for p in world.path.parent.iterdir() if p.name.startswith(".")] == []  # no staging left
    assert _rows(read_examples(world.path / "forget.jsonl")) == _rows(generate(TINY).examples["forget"])
    with pytest.raises(UserError, match="assistant"):
        world.load("assistant")

    world = load_toyworld(TINY, assistant=True)
    assert "assistant" in world.info()["models"]
    assistant = world.load("assistant")
    assert assistant.model.config.hidden_size == TINY.assistant_hidden_size
    assert assistant.tokenizer.get_vocab() == world.load("original").tokenizer.get_vocab()


@pytest.mark.slow
def test_two_processes_asking_for_one_world_train_it_once(tmp_path):
    fields = ", ".join(f"{f.name}={getattr(TINY, f.name)!r}" for f in dataclasses.fields(TINY))
    code = ("from unlearn_kb.toyworld import WorldConfig, load_toyworld\n"
            f"load_toyworld(WorldConfig({fields}), progress=print)")
    env = {**os.environ, "UNLEARN_KB_CACHE": str(tmp_path)}
    runs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert sum("training original" in out for out in outputs) == 1, outputs


@pytest.mark.slow
def test_same_config_trains_bit_identical_weights_on_cpu(tmp_path, monkeypatch):
    paths = []
    for run in ("a", "b"):
        monkeypatch.setenv("UNLEARN_KB_CACHE", str(tmp_path / run))
        paths.append(load_toyworld(TINY).original_path / "model.safetensors")
    assert paths[0].read_bytes() == paths[1].read_bytes()


# --------------------------------------------------------------------------- the default world


def _recall(model, examples: list[Example]) -> float:
    model.batch_size = 256
    answers = model.generate_answers([e.question for e in examples], max_new_tokens=4)
    return sum(a == e.answer for a, e in zip(answers, examples, strict=True)) / len(examples)


# Measured afresh from the saved checkpoints, not read from the build's own record. One retain
# question in four is plenty for a 95% bar and saves the suite seconds.


@pytest.mark.slow
def test_original_model_recalls_its_facts_through_training_templates_and_paraphrases(toy_world):
    original = toy_world.load("original")
    assert _recall(original, toy_world.forget) >= 0.95
    assert _recall(original, toy_world.retain[::4]) >= 0.95
    assert _recall(original, toy_world.forget_paraphrased) >= 0.5
    assert _recall(original, toy_world.retain_paraphrased) >= 0.5
    assert _recall(original, toy_world.holdout) < 0.2, "holdout entities were never trained"


@pytest.mark.slow
def test_reference_model_knows_retain_facts_but_not_the_forget_facts_it_never_saw(toy_world):
    reference = toy_world.load("reference")
    assert _recall(reference, toy_world.retain[::4]) >= 0.95
    assert _recall(reference, toy_world.retain_paraphrased) >= 0.5
    assert _recall(reference, toy_world.forget) < 0.2
    assert _recall(reference, toy_world.forget_paraphrased) < 0.2


@pytest.mark.slow
def test_built_world_loads_from_cache_at_once_with_the_measured_figures(toy_world):
    start = time.perf_counter()
    again = load_toyworld(WorldConfig(), build=False)
    assert time.perf_counter() - start < 5
    assert again.path == toy_world.path
    assert _rows(again.forget) == _rows(toy_world.forget)
    info = again.info()
    assert info["entities"] == {"forget": 20, "retain": 160, "holdout": 20}
    for which in ("original", "reference"):
        assert info["models"][which]["recall"]["retain"]["train_templates"] >= 0.95


@pytest.mark.slow
def test_checkpoints_load_with_the_transformers_auto_classes(toy_world):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for path in (toy_world.original_path, toy_world.reference_path):
        model = AutoModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        assert model.config.model_type == "llama"
        assert model.config.vocab_size == len(tokenizer)


@pytest.mark.slow
def test_cli_info_prints_the_recall_table_of_the_default_world(toy_world, monkeypatch):
    monkeypatch.setenv("UNLEARN_KB_CACHE", str(Path(toy_world.path).parents[1]))
    monkeypatch.setenv("COLUMNS", "160")
    result = _cli(["toyworld", "info"])
    assert result.exit_code == 0, result.output
    assert "original" in result.output and "reference" in result.output and "%" in result.output

