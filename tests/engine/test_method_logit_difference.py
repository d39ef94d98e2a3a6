"""Who's Harry Potter (fine-tuned and inference-time) and ULD: logit formulas by hand, then the toy world.

WHP builds generic labels from v_base - alpha * ReLU(v_reinf - v_base) and fine-tunes on them;
its MUSE variant serves that combination directly; ULD subtracts an assistant's logits inside a
relative-top filter. The toy-world runs use each record's toy overrides, from the original model
(forget and retain recall 1.00 on 120 questions each).
"""

from __future__ import annotations

import math

import pytest
import torch
from toy_bounds import assert_serves_the_original_weights, run_within_bounds

from unlearn_kb.engine.data import IGNORE_INDEX, Example
from unlearn_kb.engine.method import Step
from unlearn_kb.errors import ConfigError

# method: (forget_max, retain_min, why)
EXPECTED: dict[str, tuple[float, float, str]] = {
    "whp": (0.6, 0.8, "0.43 / 0.90: generic labels from retain-name anchors and the reinforced copy; "
                      "no retain term, so more steps cost retain quickly (30 steps: 0.30 / 0.69)"),
    "whp_logit": (0.88, 0.9, "0.74 / 0.97: at MUSE's alpha 1 the reinforced boost outweighs the "
                             "original's margin on only a quarter of the forget answers"),
    "uld": (0.3, 0.9, "0.04 / 1.00: the toy assistant remembers the forget answers and is flat "
                      "on retain inputs, so subtracting it removes the forget answers only"),
}


def _batch(ids: list[list[int]], labels: list[list[int]], index: list[int] | None = None) -> dict[str, torch.Tensor]:
    input_ids = torch.tensor(ids)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": torch.tensor(labels),
            "index": torch.tensor(index if index is not None else list(range(len(ids))))}


# --------------------------------------------------------------------------- WHP formulas


def test_generic_logits_subtract_only_the_reinforced_boost():
    from unlearn_kb.methods.whp_logit import generic_logits

    base = torch.tensor([1.0, 2.0, 3.0])
    reinforced = torch.tensor([2.0, 1.0, 5.0])  # boosts: +1, -1 (ignored by the ReLU), +2
    assert torch.allclose(generic_logits(base, reinforced, 1.0), torch.tensor([0.0, 2.0, 1.0]))
    assert torch.allclose(generic_logits(base, reinforced, 2.0), torch.tensor([-1.0, 2.0, -1.0]))


def test_generic_label_is_the_argmax_of_the_generic_logits():
    from unlearn_kb.methods.whp import generic_labels

    base = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    reinforced = torch.tensor([[2.0, 1.0, 5.0], [0.0, 0.0, 1.0]])
    assert generic_labels(base, reinforced, 1.0).tolist() == [1, 2]  # row 0: [0, 2, 1]; row 1 unchanged


def test_generic_label_fine_tune_is_cross_entropy_to_the_labels():
    from unlearn_kb.methods.whp import GenericConfig, GenericLabelFineTune

    # Sequence of 3 tokens; the answer is the last token (label position 2, predicted at position 1).
    logits = torch.log(torch.tensor([[[0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4], [0.25] * 4]]))
    batch = _batch([[1, 2, 3]], [[IGNORE_INDEX, IGNORE_INDEX, 3]], index=[7])
    method = GenericLabelFineTune({7: [IGNORE_INDEX, IGNORE_INDEX, 1]})  # the generic label replaces 3 by 1
    step = Step(lambda ids, mask: logits, {"forget": batch})
    terms = method.loss(step, GenericConfig())
    assert terms["loss"].item() == pytest.approx(-math.log(0.2), rel=1e-5)


def test_translate_replaces_whole_words_only():
    from unlearn_kb.methods.whp import translate

    assert translate("Where was Rome born? Romeo knows.", {"Rome": "Oslo"}) == "Where was Oslo born? Romeo knows."
    assert translate("unchanged", {}) == "unchanged"


def test_anchor_dictionary_maps_forget_entities_to_other_names():
    from unlearn_kb.methods.whp import anchor_dictionary

    forget = [Example(question=f"Where was {n} born?", answer="Oslo", extras={"entity": n}) for n in ("Ab", "Cd")]
    retain = [Example(question=f"Where was {n} born?", answer="Rome", extras={"entity": n}) for n in ("Ef", "Ab", "Gh")]
    assert anchor_dictionary("retain", forget, retain, None) == {"Ab": "Ef", "Cd": "Gh"}
    assert anchor_dictionary("none", forget, retain, None) == {}
    with pytest.raises(ConfigError):
        anchor_dictionary("holdout", forget, retain, None)  # needs the toy world
    with pytest.raises(ConfigError):
        anchor_dictionary("no-such-file.json", forget, retain, None)


# --------------------------------------------------------------------------- ULD formulas


def test_uniform_kl_by_hand():
    from unlearn_kb.methods.uld import uniform_kl

    mask = torch.tensor([[True]])
    assert uniform_kl(torch.zeros(1, 1, 5), mask).item() == pytest.approx(0.0, abs=1e-6)
    # p = (1/4, 3/4): KL(U || p) = 0.5 log(0.5 / 0.25) + 0.5 log(0.5 / 0.75)
    logits = torch.log(torch.tensor([[[0.25, 0.75]]]))
    expected = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    assert uniform_kl(logits, mask).item() == pytest.approx(expected, rel=1e-5)


def test_relative_top_mask_follows_uld():
    from unlearn_kb.methods.uld import relative_top_mask

    # V = 10, relative_top 0.1: k = 1, so the threshold is 0.1 * p_max = 0.05.
    probs = torch.tensor([0.5, 0.2] + [0.04] * 7 + [0.02])
    assert relative_top_mask(probs.log(), 0.1).tolist() == [False, False] + [True] * 8
    # V = 4: k = int(0.4) = 0 picks the smallest log-prob as the bar, so nothing is filtered (ULD's quirk).
    assert not relative_top_mask(torch.tensor([0.9, 0.05, 0.03, 0.02]).log(), 0.1).any()


def test_uld_logits_subtract_the_assistant_inside_the_filter():
    from unlearn_kb.methods.uld import uld_logits

    target = torch.tensor([0.0, 3.0, 1.0])
    assistant = torch.tensor([1.0, 2.0, -1.0])
    combined, mask = uld_logits(target, assistant, -1.0, 0.0)
    assert torch.allclose(combined, torch.tensor([-1.0, 1.0, 2.0])) and not mask.any()
    probs = torch.tensor([0.5, 0.2] + [0.04] * 7 + [0.02])
    target, assistant = probs.log(), torch.arange(10.0)
    combined, mask = uld_logits(target, assistant, -1.0, 0.1)
    assert torch.allclose(combined[:2], target[:2] - assistant[:2])  # kept: assistant subtracted
    assert torch.allclose(combined[2:], target[2:]) and mask[2:].all()  # filtered: target unchanged


def test_uld_served_excludes_filtered_tokens_only_while_generating():
    from unlearn_kb.methods.uld import FILTERED, ULDServed

    class Flat(torch.nn.Module):
        def forward(self, input_ids, attention_mask, position_ids=None, use_cache=False):
            class Out:
                logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], 10)
            return Out()

    served = ULDServed(model=None, tokenizer=None, assistant=Flat(), weight=-1.0, top_logit_filter=0.1)
    logits = torch.tensor([0.5, 0.2] + [0.04] * 7 + [0.02]).log().view(1, 1, 10)
    ids, mask = torch.tensor([[1, 2]]), torch.ones(1, 2, dtype=torch.long)
    assert torch.allclose(served.adjust_logits(ids, mask, logits), logits)  # scoring: as ULD's forward
    served.generating = True
    out = served.adjust_logits(ids, mask, logits)
    assert (out[0, 0, 2:] == FILTERED).all() and torch.allclose(out[0, 0, :2], logits[0, 0, :2])


def test_remember_uniform_loss_by_hand():
    from unlearn_kb.methods.uld import AssistantConfig, RememberUniform

    # Forget rows are token 1, retain rows token 2; the fake model's logits depend on which.
    p_retain = torch.tensor([0.25, 0.75])

    def model(ids, mask):
        rows = torch.where((ids == 2).all(-1, keepdim=True).unsqueeze(-1), p_retain.log(), torch.zeros(2))
        return rows.expand(ids.shape[0], ids.shape[1], 2)

    batches = {"forget": _batch([[1, 1, 1]], [[IGNORE_INDEX, IGNORE_INDEX, 1]]),
               "retain": _batch([[2, 2, 2]], [[IGNORE_INDEX, IGNORE_INDEX, 1]])}
    terms = RememberUniform().loss(Step(model, batches), AssistantConfig(retain_weight=5.0))
    kl = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)  # at every retain position, prompt included
    assert terms["remember"].item() == pytest.approx(math.log(2.0), rel=1e-5)
    assert terms["uniform"].item() == pytest.approx(5.0 * kl, rel=1e-5)
    assert terms["loss"].item() == pytest.approx(math.log(2.0) + 5.0 * kl, rel=1e-5)


def test_first_layers_keeps_the_start_of_the_target(tiny):
    from unlearn_kb.methods.uld import first_layers

    model, _ = tiny
    small = first_layers(model, 1)
    assert len(small.model.layers) == 1 and small.config.num_hidden_layers == 1
    assert len(model.model.layers) > 1  # the target is untouched
    assert torch.equal(small.model.layers[0].self_attn.q_proj.weight, model.model.layers[0].self_attn.q_proj.weight)
    ids = torch.tensor([[1, 2, 3]])
    assert small(input_ids=ids).logits.shape == model(input_ids=ids).logits.shape


def test_uld_refuses_an_assistant_with_another_vocabulary(tiny, tiny_model_dir, toy_world):
    from unlearn_kb.methods.uld import Config, load_assistant

    config = Config(weight=-1.0, top_logit_filter=0.1, retain_weight=5.0, num_layer=8, lora_r=16,
                    assistant=str(tiny_model_dir))
    with pytest.raises(ConfigError, match="share one tokenizer"):
        load_assistant(config, toy_world.load("original"), None)


# --------------------------------------------------------------------------- toy world


@pytest.mark.slow
def test_whp_fine_tunes_on_generic_labels(toy_world):
    result = run_within_bounds("whp", toy_world, EXPECTED)
    assert result.model.intervention == "weights"


@pytest.mark.slow
def test_whp_logit_combines_the_frozen_model_with_a_reinforced_copy(toy_world):
    assert_serves_the_original_weights(run_within_bounds("whp_logit", toy_world, EXPECTED).model, toy_world, "output")


@pytest.mark.slow
def test_uld_subtracts_a_trained_assistant_from_the_frozen_model(toy_world):
    assert_serves_the_original_weights(run_within_bounds("uld", toy_world, EXPECTED).model, toy_world, "output")
