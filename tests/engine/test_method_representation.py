"""RepNoise and Circuit Breakers (representation rerouting): objectives by hand, then the toy world.

The toy-world runs use each record's toy overrides, from the original model (forget and retain
recall 1.00, exact match on 120 questions each). Bounds lie between the measured value and what a
no-op (forget ~1) or a wrecked model (retain ~0) gives; the measured values are in each ``why``.
"""

from __future__ import annotations

import math

import pytest
import torch
from toy_bounds import changed_weights, run_within_bounds

from unlearn_kb.engine.method import hidden_at_layer
from unlearn_kb.errors import ConfigError
from unlearn_kb.methods import circuit_breakers, repnoise

# method: (forget_max, retain_min, why)
EXPECTED: dict[str, tuple[float, float, str]] = {
    "repnoise": (0.5, 0.55, "0.34 / 0.68: no retain set (the paper anchors only on the paired refusals), "
                            "so the refusal and the ascent spread to retain questions; 60 steps give 0.00 / 0.07"),
    "circuit_breakers": (0.2, 0.9, "0.05 / 0.97: hidden states 1 and 2 of forget text rerouted, retain "
                                   "states of the cut model (decoder layers 0-2) held to the original's"),
}


def close(value: torch.Tensor | float, expected: float, tol: float = 1e-5) -> bool:
    return abs(float(value) - expected) < tol


# --------------------------------------------------------------------------- circuit breakers: objective


def test_circuit_breaker_schedule_is_the_papers_t_over_2T():
    c_s, c_r = circuit_breakers.schedule(1, 10.0, 300)
    assert close(c_s, 10 * (1 - 1 / 300)) and close(c_r, 10 / 300)
    assert circuit_breakers.schedule(150, 10.0, 300) == (5.0, 5.0)  # the code's last step: p = 150/300


def test_rerouting_loss_is_relu_cosine_averaged_over_real_tokens_and_layers():
    rep = torch.tensor([[[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]]])  # (1 layer, B=1, T=3, H=2)
    orig = torch.tensor([[[[3.0, 0.0], [1.0, 0.0], [-1.0, -1.0]]]])  # cosines 1, 0, -1
    assert close(circuit_breakers.rerouting_loss(rep, orig, torch.tensor([[1, 1, 1]])), 1 / 3)  # ReLU(-1) = 0
    assert close(circuit_breakers.rerouting_loss(rep, orig, torch.tensor([[1, 1, 0]])), 1 / 2)  # padding left out
    second = torch.tensor([[[[3.0, 4.0], [1.0, 0.0], [0.0, 1.0]]]])  # cosines with orig: 0.6, 1, -1/sqrt(2)
    two = circuit_breakers.rerouting_loss(torch.cat([rep, second]), torch.cat([orig, orig]), torch.tensor([[1, 1, 0]]))
    assert close(two, (1 + 0 + 0.6 + 1) / 4)


def test_retain_loss_is_the_unsquared_l2_distance_per_token():
    rep = torch.tensor([[[[3.0, 4.0], [1.0, 1.0]]], [[[0.0, 1.0], [9.0, 9.0]]]])  # (2 layers, 1, 2, 2)
    orig = torch.zeros_like(rep)
    assert close(circuit_breakers.retain_loss(rep, orig, torch.tensor([[1, 0]])), (5 + 1) / 2)
    assert close(circuit_breakers.retain_loss(rep, orig, torch.tensor([[1, 1]])),
                 (5 + math.sqrt(2) + 1 + math.sqrt(162)) / 4)


def test_one_pass_reads_the_same_states_as_output_hidden_states(tiny):
    model, _ = tiny  # 3 decoder layers
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states  # 4 states
        run = lambda top: hidden_at_layer(model, ids, mask, top)  # noqa: E731
        states = circuit_breakers.cut_model_states(model, run, 2)  # the uncut model: layer 2 is the last
        picked = circuit_breakers.layer_outputs(model, run, [1, 2])
    assert len(states) == 4 and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(states, reference, strict=True))
    assert torch.allclose(picked[0], reference[1], atol=1e-5) and torch.allclose(picked[1], reference[2], atol=1e-5)


def test_circuit_breakers_trains_the_linear_layers_up_to_the_top_target_and_checks_layers(tiny):
    model, _ = tiny
    config = circuit_breakers.Config(alpha=10.0, target_layers=[1], schedule_horizon=300)
    names = circuit_breakers.CircuitBreakers().trainable_parameters(model, config)
    assert {n.split(".")[2] for n in names} == {"0", "1"} and len(names) == 2 * 7  # q k v o gate up down
    for bad in ([3], [0], []):  # 3: the last decoder layer cannot be cut after; 0: the embeddings
        with pytest.raises(ConfigError, match="target_layers"):
            circuit_breakers.CircuitBreakers().prepare(model, circuit_breakers.Config(10.0, bad, 300), None)


def test_circuit_breakers_horizon_0_is_twice_the_runs_steps(tiny, tiny_data, monkeypatch):
    from unlearn_kb.engine.trainer import RunConfig, train

    model, tokenizer = tiny
    forget, retain = tiny_data
    horizons = []
    real = circuit_breakers.schedule
    monkeypatch.setattr(circuit_breakers, "schedule",
                        lambda step, alpha, horizon: (horizons.append((step, horizon)), real(step, alpha, horizon))[1])
    config = circuit_breakers.Config(alpha=10.0, target_layers=[1], schedule_horizon=0)
    train(circuit_breakers.CircuitBreakers(), config, RunConfig(lr=1e-3, steps=3, batch_size=2, grad_accum=1),
          model=model, tokenizer=tokenizer, forget=forget, retain=retain)
    assert horizons == [(1, 6), (2, 6), (3, 6)]  # t / 2T, Algorithm 1
    assert real(3, 10.0, 6) == (5.0, 5.0)  # half-way through 2T both terms weigh alpha / 2


# --------------------------------------------------------------------------- repnoise: objective


def test_mmd_by_hand_on_two_points():
    # pooled {0, 1}: mean off-diagonal squared distance 1, / 2^(5//2) -> bandwidths 0.25 * 2^k
    k01 = sum(math.exp(-1 / (0.25 * 2**k)) for k in range(5))
    assert close(repnoise.mmd(torch.tensor([[0.0]]), torch.tensor([[1.0]])), (5 + 5 - 2 * k01) / 1)
    x = torch.randn(4, 6)
    assert close(repnoise.mmd(x, x.clone()), 0.0)


def test_mmd_matches_the_codes_explicit_pairwise_form():
    source, target = torch.randn(3, 5), torch.randn(3, 5) * 2 + 1
    total = torch.cat([source, target])
    d2 = ((total.unsqueeze(0) - total.unsqueeze(1)) ** 2).sum(2)  # the code's (N, N, d) expansion
    bandwidth = d2.sum() / (6**2 - 6) / 2 ** (5 // 2)
    k = sum(torch.exp(-d2 / (bandwidth * 2**i)) for i in range(5))
    expected = torch.mean(k[:3, :3] + k[3:, 3:] - k[:3, 3:] - k[3:, :3])
    assert close(repnoise.mmd(source, target), float(expected), tol=1e-4)


def test_noise_loss_masks_to_response_tokens_flattens_sequences_and_averages_layers():
    act = torch.tensor([[[1.0], [5.0]], [[2.0], [7.0]]])  # (B=2, T=2, H=1)
    noise = torch.tensor([[[0.0], [9.0]], [[1.0], [9.0]]])
    mask = torch.tensor([[True, False], [True, False]])  # position 1 is not a response token
    by_hand = repnoise.mmd(torch.tensor([[1.0, 0.0], [2.0, 0.0]]), torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    assert close(repnoise.noise_loss([act], mask, [noise]), float(by_hand))
    assert close(repnoise.noise_loss([act, act * 0], mask, [noise, noise * 0]), float(by_hand) / 2)


def test_harmful_ascent_is_the_codes_log_of_the_averaged_losses_plus_one():
    ascent = repnoise.harmful_ascent(torch.tensor(2.0), [torch.tensor(1.0), torch.tensor(3.0)], alpha=0.5)
    assert close(ascent, -0.5 * math.log((2 + 1 + 3) / 2 + 1))


# --------------------------------------------------------------------------- toy world


@pytest.mark.slow
def test_repnoise_forgets_on_the_toy_world_without_a_reference_model(toy_world):
    result = run_within_bounds("repnoise", toy_world, EXPECTED)
    assert result.reference == "none"
    terms = result.records[-1]
    assert terms["ascent"] < -1.0 and terms["noise"] > 0, terms  # the harmful loss rose: log(. + 1) > 1


@pytest.mark.slow
def test_circuit_breakers_reroutes_on_the_toy_world_and_leaves_the_layers_above_alone(toy_world):
    result = run_within_bounds("circuit_breakers", toy_world, EXPECTED)
    assert result.reference == "live"
    changed = changed_weights(result.model, toy_world)  # a gradient method returns the trained model
    trainable = ("model.layers.0.", "model.layers.1.", "model.layers.2.")
    assert all(k.startswith(trainable) and "layernorm" not in k for k in changed), \
        f"only layers 0-2's linear weights train: {sorted(changed)}"
    assert "model.layers.2.mlp.down_proj.weight" in changed
