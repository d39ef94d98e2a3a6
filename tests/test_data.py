"""Reading forget / retain sets and turning them into masked batches."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearn_kb.engine.data import (
    IGNORE_INDEX,
    DataError,
    Example,
    collate,
    encode_example,
    ensure_pad_token,
    example_from_mapping,
    read_examples,
)


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """A byte-level BPE tokenizer trained on a few lines: merges make prompt/answer fusion possible."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["Question: Where was Ada born?\nAnswer: Paris", "Answer:Paris Answer: Paris Paris Paris"] * 20
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def test_jsonl_with_a_broken_line_names_the_line(tmp_path):
    path = tmp_path / "forget.jsonl"
    path.write_text('{"question": "q1", "answer": "a1"}\n{"question": "q2", "answer": \n')
    with pytest.raises(DataError, match=r"forget.jsonl:2: invalid JSON"):
        read_examples(path)


def test_missing_answer_is_named(tmp_path):
    path = tmp_path / "retain.jsonl"
    path.write_text('{"question": "q1"}\n')
    with pytest.raises(DataError, match=r"retain.jsonl:1: missing 'answer'"):
        read_examples(path)


@pytest.mark.parametrize(("line", "message"), [
    ('{"answer": "a1"}', "missing 'question'"),
    ("{}", "missing 'question' and 'answer'"),
    ('{"text": ""}', "'text' must be a non-empty string"),
])
def test_a_line_without_question_answer_or_text_is_named(tmp_path, line, message):
    path = tmp_path / "forget.jsonl"
    path.write_text('{"question": "q1", "answer": "a1"}\n' + line + "\n")
    with pytest.raises(DataError, match=f"forget.jsonl:2: {message}"):
        read_examples(path)


def test_empty_forget_set_is_an_error(tmp_path):
    path = tmp_path / "forget.jsonl"
    path.write_text("\n\n")
    with pytest.raises(DataError, match="no examples"):
        read_examples(path)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_examples(tmp_path / "nope.jsonl")


def test_tofu_json_array_and_text_records_are_read(tmp_path):
    path = tmp_path / "tofu.json"
    path.write_text(json.dumps([{"question": "Who?", "answer": "Ada", "paraphrased_answer": "A."},
                                {"text": "Ada was born in Paris."}]))
    qa, text = read_examples(path)
    assert qa.is_qa and qa.extras == {"paraphrased_answer": "A."}
    assert not text.is_qa and text.text == "Ada was born in Paris."


def test_answer_is_tokenized_apart_from_the_prompt_and_only_it_is_labelled(bpe_tokenizer):
    tok = bpe_tokenizer
    encoded = encode_example(tok, Example(question="Where was Ada born?", answer="Paris"), 0, 64)
    answer_ids = tok(" Paris", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    labelled = [label for label in encoded.labels if label != IGNORE_INDEX]
    assert labelled == answer_ids
    assert encoded.input_ids[-len(answer_ids):] == answer_ids
    prompt_length = len(encoded.input_ids) - len(answer_ids)
    assert encoded.labels[:prompt_length] == [IGNORE_INDEX] * prompt_length


def test_long_prompt_loses_its_start_and_keeps_the_whole_answer(bpe_tokenizer):
    encoded = encode_example(bpe_tokenizer, Example(question="Where was Ada born? " * 20, answer="Paris"), 3, 16)
    assert len(encoded.input_ids) == 16 and encoded.index == 3
    assert sum(label != IGNORE_INDEX for label in encoded.labels) == len(
        bpe_tokenizer(" Paris", add_special_tokens=False)["input_ids"]) + 1


def test_answer_longer_than_the_context_is_refused(bpe_tokenizer):
    with pytest.raises(DataError, match="the answer alone is"):
        encode_example(bpe_tokenizer, Example(question="q", answer="Paris " * 40), 0, 16)


def test_collate_pads_on_the_right_and_masks_padding(bpe_tokenizer):
    tok = bpe_tokenizer
    a = encode_example(tok, Example(question="Where?", answer="Paris"), 0, 64)
    b = encode_example(tok, Example(text="Ada was born in Paris Paris"), 1, 64)
    batch = collate([a, b], tok.pad_token_id)
    width = max(len(a.input_ids), len(b.input_ids))
    assert batch["input_ids"].shape == (2, width)
    short = 0 if len(a.input_ids) < width else 1
    n = min(len(a.input_ids), len(b.input_ids))
    assert batch["attention_mask"][short, n:].sum() == 0
    assert (batch["labels"][short, n:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][short, n:] == tok.pad_token_id).all()
    assert batch["index"].tolist() == [0, 1]


def test_tokenizer_without_pad_token_pads_with_eos(bpe_tokenizer):
    tok = bpe_tokenizer
    original = tok.pad_token
    tok.pad_token = None
    try:
        ensure_pad_token(tok)
        assert tok.pad_token == tok.eos_token
    finally:
        tok.pad_token = original


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=6)
rows = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={"question": json_values, "answer": json_values, "text": json_values,
                                        "alternate": json_values}),
)


@settings(max_examples=300, deadline=None)
@given(row=rows)
def test_any_json_row_gives_an_example_or_a_clear_error(row):
    try:
        example = example_from_mapping(row, "data.jsonl:1")
    except DataError as exc:
        assert str(exc).startswith("data.jsonl:1: ")
    else:
        assert example.is_qa or isinstance(example.text, str)


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(st.text(alphabet=string.printable, max_size=40), min_size=1, max_size=5))
def test_any_file_content_gives_examples_or_a_clear_error(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("data") / "random.jsonl"
    path.write_text("\n".join(lines))
    try:
        examples = read_examples(path)
    except DataError as exc:
        assert str(exc).startswith(str(path))
    else:
        assert examples and all(isinstance(e, Example) for e in examples)
