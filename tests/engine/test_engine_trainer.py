"""The Step, the reference cache and the training loop, on a tiny random Llama."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from unlearn_kb.engine import trainer
from unlearn_kb.engine.data import collate, encode_all
from unlearn_kb.engine.lm import LanguageModel
from unlearn_kb.engine.method import GradientMethod, LMForward, Reference, Step, hidden_at_layer
from unlearn_kb.engine.trainer import RunConfig, train
from unlearn_kb.errors import ConfigError, TrainingError
from unlearn_kb.methods import dpo_idk, ga, ga_kl, grad_diff, npo, rmu, satimp, undial

FAST = RunConfig(lr=1e-3, steps=3, batch_size=2, grad_accum=1, max_length=64, clip=1.0)


def forget_nll(model, tokenizer, examples) -> float:
    lm = LanguageModel(model, tokenizer)
    per_example = lm.answer_logprobs(examples)
    return -float(torch.cat(per_example).mean())


class CountingForward(LMForward):
    def __init__(self, lm):
        super().__init__(lm)
        self.calls = 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return super().forward(*args, **kwargs)


# --------------------------------------------------------------------------- Step and Reference


def test_step_memoises_so_each_quantity_costs_one_forward(tiny, tiny_data):
    model, tokenizer = tiny
    forget, _ = tiny_data
    b = collate(encode_all(tokenizer, forget, 64), tokenizer.pad_token_id)
    counting = CountingForward(model)
    step = Step(counting, {"forget": b})
    step.logits("forget"), step.token_logprobs("forget"), step.sequence_logprobs("forget")
    step.token_logprobs("forget")
    assert counting.calls == 1


def test_hidden_state_forward_stops_at_the_layer_and_matches_a_full_pass(tiny, tiny_data):
    model, tokenizer = tiny
    forget, _ = tiny_data
    b = collate(encode_all(tokenizer, forget, 64), tokenizer.pad_token_id)
    ran = []
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
             for i, layer in enumerate(model.model.layers)]
    hooks.append(model.lm_head.register_forward_hook(lambda m, a, o: ran.append(tuple(a[0].shape[:2]))))
    with torch.no_grad():
        h = hidden_at_layer(model, b["input_ids"], b["attention_mask"], 1)
    assert ran == [0, 1, (len(forget), 1)]  # layer 2 never ran; the LM head saw one position per row
    assert len(model.model.layers) == 3, "the decoder got all its layers back"
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        full = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
    assert torch.allclose(h, full.hidden_states[2], atol=1e-5)


def test_reference_log_probs_are_computed_once_per_example(tiny, tiny_data):
    model, tokenizer = tiny
    forget, _ = tiny_data
    encoded = encode_all(tokenizer, forget, 64)
    counting = CountingForward(model)
    reference = Reference(counting)
    first = collate(encoded[:2], tokenizer.pad_token_id)
    both = collate(encoded, tokenizer.pad_token_id)
    a = reference.sequence_logprobs("forget", first)
    b = reference.sequence_logprobs("forget", both)  # only examples 2 and 3 are new
    reference.sequence_logprobs("forget", both)
    assert counting.calls == 2
    assert dict(reference.forwards) == {("forget", i): 1 for i in range(4)}
    assert torch.allclose(a, b[:2], atol=1e-5)
    direct = Step(LMForward(model), {"forget": both}).sequence_logprobs("forget")
    assert torch.allclose(direct.detach(), b, atol=1e-4)


@pytest.mark.parametrize("budget, calls", [(1 << 30, 1), (0, 3)], ids=["cached", "no-budget"])
def test_reference_logits_are_cached_per_example_within_the_budget(tiny, tiny_data, budget, calls):
    model, tokenizer = tiny
    forget, _ = tiny_data
    encoded = encode_all(tokenizer, forget, 64)
    counting = CountingForward(model)
    reference = Reference(counting, cache_bytes=budget)
    batch = collate(encoded, tokenizer.pad_token_id)
    reshuffled = collate([encoded[2], encoded[0], encoded[3], encoded[1]], tokenizer.pad_token_id)
    first = reference.logits("forget", batch)
    again = reference.logits("forget", batch)
    other = reference.logits("forget", reshuffled)  # the same examples in another order and padding
    assert counting.calls == calls
    assert torch.equal(first, again)
    real = batch["attention_mask"][:, 1:].bool()
    with torch.no_grad():
        live = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    assert torch.allclose(first[real], live[real], atol=1e-5)
    for row, source in enumerate([2, 0, 3, 1]):
        n = int(real[source].sum())
        assert torch.allclose(other[row, :n], first[source, :n], atol=1e-5)


def test_npo_training_computes_reference_log_probs_once_and_keeps_no_model_copy(tiny, tiny_data, monkeypatch):
    model, tokenizer = tiny
    forget, retain = tiny_data
    monkeypatch.setattr(trainer, "frozen_copy", lambda *a, **k: pytest.fail("NPO+GD must not copy the model"))
    run = RunConfig(lr=1e-3, steps=6, batch_size=2, grad_accum=2, max_length=64)  # six passes over 4 examples
    result = train(npo.NPO(), npo.Config(beta=0.1, alpha=1.0, retain_loss="nll"), run,
                   model=model, tokenizer=tokenizer, forget=forget, retain=retain)
    assert result.reference == "cached"
    assert result.reference_forwards == {("forget", i): 1 for i in range(len(forget))}


def test_dpo_caches_both_answers_reference_log_probs(tiny, tiny_data):
    model, tokenizer = tiny
    forget, retain = tiny_data
    result = train(dpo_idk.DPOIdk(), dpo_idk.Config(beta=0.1, alpha=1.0, two_over_beta=False), FAST,
                   model=model, tokenizer=tokenizer, forget=forget, retain=retain)
    assert result.reference == "cached"
    assert set(result.reference_forwards) == {(n, i) for n in ("forget", "alternate") for i in range(4)}
    assert set(result.reference_forwards.values()) == {1}


@pytest.mark.parametrize("method, config", [
    (ga.GradientAscent(), ga.Config()),
    (grad_diff.GradDiff(), grad_diff.Config(gamma=1.0, alpha=1.0)),
    (satimp.SatImp(), satimp.Config(beta1=5.0, beta2=1.0, alpha=0.1)),
    (ga_kl.GAKL(), ga_kl.Config(gamma=1.0, alpha=0.0)),  # no retain term: no KL, no reference
])
def test_no_reference_model_is_built_for_objectives_that_do_not_read_one(tiny, tiny_data, monkeypatch, method, config):
    model, tokenizer = tiny
    forget, retain = tiny_data
    monkeypatch.setattr(trainer, "frozen_copy", lambda *a, **k: pytest.fail("no reference copy expected"))
    result = train(method, config, FAST, model=model, tokenizer=tokenizer, forget=forget, retain=retain)
    assert result.reference == "none"


@pytest.mark.parametrize("method, config", [
    (ga_kl.GAKL(), ga_kl.Config(gamma=1.0, alpha=1.0)),
    (undial.UNDIAL(), undial.Config(beta=3.0, alpha=0.0, positions="answer")),
    (npo.NPO(), npo.Config(beta=0.1, alpha=1.0, retain_loss="kl")),
])
def test_objectives_reading_reference_logits_get_a_frozen_copy(tiny, tiny_data, method, config):
    model, tokenizer = tiny
    forget, retain = tiny_data
    result = train(method, config, FAST, model=model, tokenizer=tokenizer, forget=forget, retain=retain)
    assert result.reference == "live"


# --------------------------------------------------------------------------- the loop


def test_gradient_ascent_raises_the_forget_nll(tiny, tiny_data):
    model, tokenizer = tiny
    forget, retain = tiny_data
    before = forget_nll(model, tokenizer, forget)
    train(ga.GradientAscent(), ga.Config(), RunConfig(lr=1e-3, steps=5, batch_size=4, grad_accum=1, max_length=64),
          model=model, tokenizer=tokenizer, forget=forget)
    assert forget_nll(model, tokenizer, forget) > before + 0.2


def test_rmu_trains_only_the_chosen_down_projections(tiny, tiny_data):
    model, tokenizer = tiny
    forget, retain = tiny_data
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = rmu.Config(layer=1, update_layers=[0, 1], steering_coeff=20.0, alpha=10.0,
                        update_param="mlp.down_proj.weight", reduction="paper")
    result = train(rmu.RMU(), config, FAST, model=model, tokenizer=tokenizer, forget=forget, retain=retain)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, start[n])}
    assert changed == {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}
    assert result.trained_parameters == 2 * 32 * 64


def test_only_trained_parameters_receive_gradients():
    """The trainer turns requires_grad off for the rest, so autograd never computes their grads."""
    from unlearn_kb.engine.trainer import _freeze

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    params = _freeze(net, ["1.weight"])
    net(torch.ones(1, 2)).sum().backward()
    assert [p is net[1].weight for p in params] == [True]
    assert net[0].weight.grad is None and net[1].bias.grad is None and net[1].weight.grad is not None


def test_rmu_rejects_layers_the_model_does_not_have(tiny, tiny_data):
    model, tokenizer = tiny
    forget, retain = tiny_data
    config = rmu.Config(layer=7, update_layers=[5, 6, 7], steering_coeff=20.0, alpha=100.0,
                        update_param="mlp.down_proj.weight", reduction="paper")
    with pytest.raises(ConfigError, match="decoder layers"):
        train(rmu.RMU(), config, FAST, model=model, tokenizer=tokenizer, forget=forget, retain=retain)


@dataclass(frozen=True)
class _NoConfig:
    pass


class _Diverges(GradientMethod):
    def loss(self, step, config):
        value = step.token_logprobs("forget").sum()
        bad = value * float("nan") if step.number == 2 else value * 0
        return {"loss": value + bad, "forget": value, "blowup": bad}


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_the_term(tiny, tiny_data):
    model, tokenizer = tiny
    forget, _ = tiny_data
    with pytest.raises(TrainingError, match=r"step 2: loss term '(loss|blowup)' is nan"):
        train(_Diverges(), _NoConfig(), FAST, model=model, tokenizer=tokenizer, forget=forget)


def test_same_seed_same_run(tiny_model_dir, tiny_data):
    from unlearn_kb.engine.models import load_model

    forget, retain = tiny_data
    losses = []
    for _ in range(2):
        model, tokenizer = load_model(tiny_model_dir)
        result = train(grad_diff.GradDiff(), grad_diff.Config(gamma=1.0, alpha=1.0), FAST, model=model,
                       tokenizer=tokenizer, forget=forget, retain=retain, seed=3)
        losses.append([r["loss"] for r in result.records])
    assert losses[0] == losses[1]


def test_records_and_progress_report_every_step(tiny, tiny_data):
    model, tokenizer = tiny
    forget, retain = tiny_data
    seen = []
    run = RunConfig(lr=1e-3, steps=4, batch_size=2, grad_accum=2, max_length=64, warmup=0.5, schedule="cosine")
    result = train(grad_diff.GradDiff(), grad_diff.Config(gamma=1.0, alpha=1.0), run, model=model,
                   tokenizer=tokenizer, forget=forget, retain=retain, progress=seen.append)
    assert [r["step"] for r in seen] == [1, 2, 3, 4] and seen == result.records
    assert {"loss", "forget", "retain", "lr", "grad_norm", "tokens_per_s"} <= set(seen[0])
    assert seen[0]["lr"] < seen[1]["lr"] and seen[3]["lr"] < seen[1]["lr"]  # warm-up, then cosine decay


def test_a_method_with_a_retain_term_and_no_retain_data_is_refused(tiny, tiny_data):
    from unlearn_kb.engine.data import DataError

    model, tokenizer = tiny
    forget, _ = tiny_data
    with pytest.raises(DataError, match="retain"):
        train(grad_diff.GradDiff(), grad_diff.Config(gamma=1.0, alpha=1.0), FAST, model=model,
              tokenizer=tokenizer, forget=forget, retain=None)


def test_alternate_answers_are_required_for_refusal_methods(tiny, tiny_data):
    from unlearn_kb.engine.data import DataError, Example

    model, tokenizer = tiny
    _, retain = tiny_data
    plain = [Example(question="Where was Alva born?", answer="Oslo")]
    with pytest.raises(DataError, match="alternate"):
        train(dpo_idk.DPOIdk(), dpo_idk.Config(beta=0.1, alpha=1.0, two_over_beta=False), FAST,
              model=model, tokenizer=tokenizer, forget=plain, retain=retain)


def test_forget_eos_false_leaves_the_end_of_sequence_token_out_of_the_forget_loss(tiny, tiny_data):
    from unlearn_kb.engine.trainer import _without_final_eos

    _, tokenizer = tiny
    forget, _ = tiny_data
    encoded = encode_all(tokenizer, forget, 64)
    stripped = _without_final_eos(encoded, tokenizer.eos_token_id)
    for before, after in zip(encoded, stripped, strict=True):
        assert before.labels[-1] == tokenizer.eos_token_id and after.labels[-1] == -100
        assert after.labels[:-1] == before.labels[:-1] and after.input_ids == before.input_ids


@pytest.mark.parametrize("method, config", [
    (npo.NPO(), npo.Config(beta=0.1, alpha=1.0, retain_loss="nll")),
    (rmu.RMU(), rmu.Config(layer=1, update_layers=[0, 1], steering_coeff=20.0, alpha=10.0,
                           update_param="mlp.down_proj.weight", reduction="paper")),
], ids=["npo", "rmu"])
def test_gradient_checkpointing_takes_the_same_steps(tiny_model_dir, tiny_data, method, config, monkeypatch):
    from dataclasses import replace

    from unlearn_kb.engine.models import load_model

    forget, retain = tiny_data
    enabled = []
    runs = []
    for checkpointing in (False, True):
        model, tokenizer = load_model(tiny_model_dir)
        name = next(n for n in ("activation_checkpointing_enable", "gradient_checkpointing_enable")
                    if hasattr(model, n))
        real = getattr(model, name)
        monkeypatch.setattr(model, name, lambda real=real, **kw: (enabled.append(kw), real(**kw))[1])
        result = train(method, config, replace(FAST, gradient_checkpointing=checkpointing), model=model,
                       tokenizer=tokenizer, forget=forget, retain=retain, seed=1)
        runs.append(([r["loss"] for r in result.records], dict(model.named_parameters())))
        assert not any(getattr(m, "gradient_checkpointing", False) for m in model.modules()), "switched off after"
    assert len(enabled) == 1 and {"use_reentrant": False} in enabled[0].values()
    (plain_losses, plain), (ckpt_losses, ckpt) = runs
    assert plain_losses == pytest.approx(ckpt_losses, rel=1e-5)
    assert all(torch.allclose(plain[n], ckpt[n], atol=1e-6) for n in plain)
