"""LoRA through peft: only the adapter trains, the base weights stay, and merging gives a plain model."""

from __future__ import annotations

import pytest
import torch

from unlearn_kb.engine.lora import LoraSpec, add_adapter, for_saving, parse_lora
from unlearn_kb.engine.trainer import RunConfig, train
from unlearn_kb.errors import ConfigError
from unlearn_kb.methods import npo, rmu


def test_lora_spec_parses_targets_after_their_key():
    spec = parse_lora("r=4,alpha=8,targets=q_proj,v_proj,merge=false")
    assert spec == LoraSpec(r=4, alpha=8.0, targets=("q_proj", "v_proj"), merge=False)


@pytest.mark.parametrize("text", ["r=0", "rank=4", "r=four", "q_proj", "merge=maybe"])
def test_bad_lora_spec_is_a_clear_error(text):
    with pytest.raises(ConfigError, match="--lora"):
        parse_lora(text)


def test_unknown_target_module_names_what_exists(tiny):
    model, _ = tiny
    with pytest.raises(ConfigError, match="not modules of this model"):
        add_adapter(model, LoraSpec(targets=("qkv",)))


@pytest.mark.parametrize(("method", "config"), [
    (npo.NPO(), npo.Config(beta=0.1, alpha=1.0, retain_loss="nll")),
    (rmu.RMU(), None),
])
def test_only_the_adapter_trains_and_the_merged_model_differs_from_the_base(tiny, tiny_data, method, config):
    model, tokenizer = tiny
    if config is None:
        config = rmu.Config(layer=1, update_layers=[0, 1], update_param="down_proj", steering_coeff=20.0,
                            alpha=10.0, reduction="paper")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    wrapped, trainable = add_adapter(model, LoraSpec(r=2, alpha=4.0, targets=("q_proj", "v_proj", "down_proj")))
    assert trainable and all("lora_" in name for name in trainable)
    forget, retain = tiny_data
    result = train(method, config, RunConfig(lr=1e-2, steps=3, batch_size=2, grad_accum=1, max_length=32),
                   model=wrapped, tokenizer=tokenizer, forget=forget, retain=retain, trainable=trainable)
    adapter_size = sum(p.numel() for name, p in wrapped.named_parameters() if name in set(trainable))
    assert result.trained_parameters == adapter_size < sum(t.numel() for t in before.values()) // 10
    base = wrapped.get_base_model()
    for name, p in base.named_parameters():
        if "lora_" not in name:
            original = name.replace(".base_layer", "")
            assert torch.equal(p, before[original]), f"{name} changed"
    # What a sharded run saves (the merge done on the gathered tensors) equals peft's own merge.
    adapted = {name: t.detach().clone() for name, t in wrapped.state_dict().items()}
    base_for_gathered, from_gathered = for_saving(wrapped, LoraSpec(r=2, alpha=4.0), gathered=adapted)
    assert base_for_gathered is base
    merged, weights = for_saving(wrapped, LoraSpec(r=2, alpha=4.0))
    assert weights is None
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    assert any(not torch.equal(p, before[name]) for name, p in merged.named_parameters())
    plain = merged.state_dict()
    assert sorted(from_gathered) == sorted(plain)
    for name, tensor in plain.items():
        assert torch.allclose(from_gathered[name], tensor, rtol=0, atol=1e-6), name


def test_merged_weights_adds_the_scaled_low_rank_product_by_hand():
    """W + (alpha / r) B A on a 2 x 2 layer with r = 1, alpha = 2: scale 2."""
    from unlearn_kb.engine.lora import merged_weights

    prefix = "base_model.model.layer.q_proj"
    state = {f"{prefix}.base_layer.weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
             f"{prefix}.lora_A.default.weight": torch.tensor([[1.0, 2.0]]),    # (r, in)
             f"{prefix}.lora_B.default.weight": torch.tensor([[0.5], [-1.0]]),  # (out, r)
             "base_model.model.norm.weight": torch.tensor([3.0, 4.0])}
    merged = merged_weights(state, LoraSpec(r=1, alpha=2.0))
    # B A = [[0.5, 1], [-1, -2]]; times 2 = [[1, 2], [-2, -4]]; plus the identity.
    assert torch.equal(merged["layer.q_proj.weight"], torch.tensor([[2.0, 2.0], [-2.0, -3.0]]))
    assert torch.equal(merged["norm.weight"], torch.tensor([3.0, 4.0]))
    assert sorted(merged) == ["layer.q_proj.weight", "norm.weight"]


@pytest.mark.slow
def test_run_with_lora_saves_a_merged_plain_checkpoint(toy_world, tmp_path):
    from safetensors import safe_open

    from unlearn_kb.engine.run import run_method

    result = run_method("npo", world=toy_world, lora="r=8,alpha=16", out=tmp_path / "run", eval_limit=40)
    assert result.after["forget"] < result.before["forget"]
    with safe_open(str(tmp_path / "run" / "model.safetensors"), "pt") as weights:
        assert not any("lora" in key for key in weights.keys())  # noqa: SIM118 - safe_open is no dict
    assert result.trained_parameters < 200_000  # the adapter, not the 1.1 M weights


def test_a_lora_run_reads_its_reference_with_the_adapter_off_and_keeps_no_copy(tiny, tiny_data, monkeypatch):
    from unlearn_kb.engine import trainer as engine_trainer
    from unlearn_kb.engine.data import collate, encode_all
    from unlearn_kb.methods import ga_kl

    model, tokenizer = tiny
    forget, retain = tiny_data
    batch = collate(encode_all(tokenizer, retain, 32), tokenizer.pad_token_id)
    with torch.no_grad():
        starting = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    monkeypatch.setattr(engine_trainer, "frozen_copy", lambda m: pytest.fail("a LoRA run copied the model"))
    seen = []
    real = engine_trainer.Reference.logits
    monkeypatch.setattr(engine_trainer.Reference, "logits",
                        lambda self, name, b: seen.append(self.model) or real(self, name, b))
    wrapped, trainable = add_adapter(model, LoraSpec(r=2, alpha=4.0, targets=("q_proj", "v_proj")))
    result = train(ga_kl.GAKL(), ga_kl.Config(gamma=1.0, alpha=1.0),
                   RunConfig(lr=1e-2, steps=3, batch_size=2, grad_accum=1, max_length=32, reference_cache_mb=0),
                   model=wrapped, tokenizer=tokenizer, forget=forget, retain=retain, trainable=trainable)
    assert result.reference == "live" and seen
    reference = seen[0]
    assert isinstance(reference, engine_trainer.AdapterOffForward)
    with torch.no_grad():
        trained = wrapped(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert not torch.allclose(trained, starting, atol=1e-4), "the adapter did not train"
    off = reference(batch["input_ids"], batch["attention_mask"])
    real_tokens = batch["attention_mask"].bool()
    assert torch.allclose(off[real_tokens], starting[real_tokens], atol=1e-5), "adapter off is not the start"
    wrapped.train()
    reference(batch["input_ids"], batch["attention_mask"])
    assert wrapped.training, "the reference runs in eval mode and gives train mode back"


def test_the_adapter_is_drawn_from_the_seed(tiny):
    """Reproducible runs, and every process of a sharded run starts from the same adapter."""
    import copy

    model, _ = tiny
    draws = [add_adapter(copy.deepcopy(model), LoraSpec(r=2, targets=("q_proj",)), seed=seed)[0]
             for seed in (0, 0, 1)]
    a = [{n: p for n, p in m.named_parameters() if "lora_A" in n} for m in draws]
    assert a[0] and all(torch.equal(a[0][n], a[1][n]) for n in a[0])
    assert not all(torch.equal(a[0][n], a[2][n]) for n in a[0])
