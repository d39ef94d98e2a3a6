"""ECO (embedding-corrupted prompts): the corruptions, the zeroth-order step, the classifier, the wrapper.

ELM is not implemented (see its record's implementation notes): the toy model cannot play the
expert / novice prompts its target distribution is built from, so it has no entry here.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from toy_bounds import assert_serves_the_original_weights, run_within_bounds

from unlearn_kb.engine.data import prompt_text
from unlearn_kb.engine.lm import LanguageModel

# method: (forget_max, retain_min, why)
EXPECTED: dict[str, tuple[float, float, str]] = {
    "eco": (0.3, 0.95, "0.17 / 1.00: every forget question is flagged and its entity-name embedding gets "
                       "N(0, sigma^2) noise on dimension 0 (sigma ~1660 after the zeroth-order search); no "
                       "retain question is flagged, so retain answers are the original's"),
}


# --------------------------------------------------------------------------- hand-computed pieces


def test_corruptions_match_hand_values_and_spare_unselected_tokens():
    from unlearn_kb.methods.eco import corrupt_embeddings

    emb = torch.tensor([[[1.0, -3.0, 2.0], [4.0, 0.5, -1.0]]])  # (1, 2, 3)
    selected = torch.tensor([[True, False]])
    zero = corrupt_embeddings(emb, selected, "zero_out_top_k", 1)
    assert zero.tolist() == [[[1.0, 0.0, 2.0], [4.0, 0.5, -1.0]]]
    flip = corrupt_embeddings(emb, selected, "flip_sign_top_k", 2)
    assert flip.tolist() == [[[1.0, 3.0, -2.0], [4.0, 0.5, -1.0]]]
    noisy = corrupt_embeddings(emb, selected, "rand_noise_first_n", 1, noise=torch.tensor([[[5.0], [7.0]]]))
    assert noisy.tolist() == [[[6.0, -3.0, 2.0], [4.0, 0.5, -1.0]]]
    assert emb.tolist() == [[[1.0, -3.0, 2.0], [4.0, 0.5, -1.0]]], "the input was changed in place"


def test_zeroth_order_step_is_a_central_difference_then_descent():
    from unlearn_kb.methods.eco import zo_step

    # f(s) = s^2 at sigma 1, eps 0.5: (2.25 - 0.25) / 1 = 2; 1 - 0.1 * 2 = 0.8
    out = zo_step(lambda s: s * s, sigma=1.0, eps=0.5, lr=0.1, sigma_min=0.5)
    assert out["gradient"] == pytest.approx(2.0) and out["sigma"] == pytest.approx(0.8)
    # the backward point is clamped at 1e-8, and sigma never falls below sigma_min
    out = zo_step(lambda s: s, sigma=0.3, eps=0.5, lr=10.0, sigma_min=0.25)
    assert out["f_backward"] == pytest.approx(1e-8) and out["sigma"] == 0.25


def test_prompt_span_and_token_selection():
    from unlearn_kb.methods.eco import prompt_length, select_tokens

    row = [1, 135, 5, 221, 49, 6, 7, 5, 99, 2]  # <s> Question : Where Name ? Answer : Warsaw </s>
    assert prompt_length(row, [7, 5]) == 8
    assert prompt_length(row[:8], [7, 5]) == 8
    assert prompt_length([3, 4], [7, 5]) == 2  # no marker: all of it is the prompt
    prompt = row[:8]
    assert select_tokens(prompt, [[49]], "names") == [False] * 4 + [True] + [False] * 3
    assert select_tokens(prompt, [[48]], "names") == [True] * 7 + [False]  # nothing tagged: all but the last
    assert select_tokens(prompt, [[49]], "all_but_last") == [True] * 7 + [False]


def test_noise_depends_on_the_prompt_and_seed_only():
    from unlearn_kb.methods.eco import prompt_noise

    a = prompt_noise([1, 2, 3], 3, 2, sigma=10.0, seed=0)
    assert a.shape == (3, 2) and torch.equal(a, prompt_noise([1, 2, 3], 3, 2, sigma=10.0, seed=0))
    assert not torch.equal(a, prompt_noise([1, 2, 4], 3, 2, sigma=10.0, seed=0))
    assert not torch.equal(a, prompt_noise([1, 2, 3], 3, 2, sigma=10.0, seed=1))
    assert torch.allclose(prompt_noise([1, 2, 3], 3, 2, sigma=20.0, seed=0), 2 * a)


def test_classifier_probability_is_a_logistic_of_token_presence():
    from unlearn_kb.methods.eco import PromptClassifier, fit_classifier

    clf = PromptClassifier(torch.tensor([2, 3]), torch.tensor([2.0, -1.0]), torch.tensor(0.5))
    p = clf.probability([[2, 9, 2], [3, 3]])  # token 9 has no weight; presence, not counts
    assert p.tolist() == pytest.approx([1 / (1 + math.exp(-2.5)), 1 / (1 + math.exp(0.5))])
    fitted = fit_classifier([[1, 2], [1, 3], [1, 4], [1, 5]], [1, 0, 0, 0], l2=1e-3)
    q = fitted.probability([[1, 2], [1, 3], [1, 4], [1, 5], [1, 7]])
    assert q[0] > 0.9 and bool((q[1:] < 0.1).all())


# --------------------------------------------------------------------------- the wrapper on a tiny model


def _built(tiny, tiny_data, **changes):
    from unlearn_kb.methods.eco import ECO, Config

    model, tokenizer = tiny
    forget, retain = tiny_data
    settings = {"classifier_threshold": 0.9, "classifier_l2": 1e-4, "classifier_holdout": 0.0,
                "corrupt_method": "rand_noise_first_n", "corrupt_dims": 1, "corrupt_tokens": "all_but_last",
                "strength": 50.0, "zo_steps": 0, "zo_lr": 1.0, "zo_target": 0.0, **changes}
    original = LanguageModel(model=model, tokenizer=tokenizer)
    built = ECO().build(original, Config(**settings), None, forget=forget, retain=retain, seed=0)
    return built, original


def _batch(tokenizer, examples):
    from unlearn_kb.engine.data import collate, encode_all

    return collate(encode_all(tokenizer, examples, 64), tokenizer.pad_token_id)


def test_wrapper_corrupts_flagged_prompts_only_and_the_same_way_in_any_batch(tiny, tiny_data):
    built, original = _built(tiny, tiny_data)
    served, (model, tokenizer) = built.lm, tiny
    forget, retain = tiny_data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert served.flagged([e.question for e in forget]) == [True] * len(forget)
    assert served.flagged([e.question for e in retain]) == [False] * len(retain)
    assert served.intervention == "input" and served.weights_model is model

    batch = _batch(tokenizer, [forget[0], retain[0], forget[1]])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        raw = original.logits(ids, mask)
        logits = served.logits(ids, mask)
        alone = served.logits(*(_batch(tokenizer, [forget[0]])[k] for k in ("input_ids", "attention_mask")))
    n0 = int(mask[0].sum())
    assert torch.allclose(logits[1], raw[1]), "an unflagged retain prompt was changed"
    assert not torch.allclose(logits[0, :n0], raw[0, :n0]), "a flagged prompt was not corrupted"
    assert torch.allclose(logits[0, :n0], alone[0, :n0], atol=1e-5), "the corruption depends on the batch"
    assert not model.get_input_embeddings()._forward_hooks, "the corruption hook was left on the model"
    # generation and the weights an attacker reads: hidden states are the original's
    served.generate_answers([forget[0].question, retain[0].question], max_new_tokens=3)
    questions = [forget[0].question]
    assert torch.equal(served.hidden_states(questions), original.hidden_states(questions))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the weights changed"


def test_generation_sees_the_same_corrupted_prompt_as_scoring(tiny, tiny_data):
    built, _ = _built(tiny, tiny_data)
    served, (_, tokenizer) = built.lm, tiny
    forget, _ = tiny_data
    question = forget[0].question
    answer = served.generate_answers([question], max_new_tokens=1)[0]
    # the greedy first token equals the argmax of the served next-token logits after the prompt
    enc = tokenizer([prompt_text(tokenizer, question)], return_tensors="pt")
    with torch.no_grad():
        first = served.logits(enc["input_ids"], enc["attention_mask"])[0, -1].argmax()
    assert answer == tokenizer.decode([int(first)], skip_special_tokens=True).strip()


def test_saved_state_is_json_and_safetensors(tiny, tiny_data, tmp_path):
    from safetensors.torch import load_file

    built, _ = _built(tiny, tiny_data)
    built.save(tmp_path)
    tensors = load_file(str(tmp_path / "eco_classifier.safetensors"))
    assert set(tensors) == {"feature_ids", "weight", "bias"}
    settings = json.loads((tmp_path / "eco.json").read_text())
    assert settings["strength"] == 50.0 and settings["threshold"] == 0.9
    assert built.state["flagged_forget"] == 1.0 and built.state["flagged_retain"] == 0.0


# --------------------------------------------------------------------------- the toy world


@pytest.mark.slow
def test_eco_forgets_on_the_toy_world_without_touching_weights_or_retain_prompts(toy_world):
    served = run_within_bounds("eco", toy_world, EXPECTED).model
    assert_serves_the_original_weights(served, toy_world, "input")
    assert not any(served.flagged([e.question for e in toy_world.retain[:400]])), "a retain prompt was flagged"
    assert all(served.flagged([e.question for e in toy_world.forget])), "a forget prompt was missed"
    assert served.strength > 10, "the zeroth-order search did not raise sigma"
