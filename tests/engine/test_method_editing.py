"""Model-editing deletion (ROME, MEMIT): the closed-form updates by hand, the search terms, and the toy world.

The toy-world runs start from the original model (forget and retain recall 1.00, exact match on
120 questions each) and use the records' toy overrides; bounds sit between the measured values
(in each ``why``) and what a no-op (forget ~1) or a wrecked model (retain ~0) would give.
"""

from __future__ import annotations

import pytest
import torch
from toy_bounds import changed_weights, run_within_bounds

from unlearn_kb.engine.data import Example
from unlearn_kb.methods.rome import (
    clamp_norm,
    deletion_loss,
    kl_term,
    make_requests,
    memit_update,
    norm_penalty,
    regularised,
    rome_update,
    subject_position,
)

# method: (forget_max, retain_min, why)
EXPECTED: dict[str, tuple[float, float, str]] = {
    "rome": (0.4, 0.8, "0.21 / 0.90: 80 sequential rank-one edits of layer 0's down_proj, one per fact; "
                       "later edits of the same subject partly undo earlier ones and the edits add up on "
                       "retain keys"),
    "memit": (0.5, 0.85, "0.33 / 1.00: one least-squares edit of 80 keys over layers 0-1; the keys of one "
                         "subject's facts are near-duplicates, so the edit fits their average"),
}


# --------------------------------------------------------------------------- ROME's rank-one update


def test_rome_update_matches_the_hand_computed_example():
    # W = I, C = diag(1, 4), k = (1, 1), v = (3, 1): C^{-1} k = (1, 1/4), (C^{-1} k)^T k = 5/4,
    # Lambda = (v - W k) / (5/4) = (1.6, 0), change = Lambda (1, 1/4)^T = [[1.6, 0.4], [0, 0]].
    weight, cov = torch.eye(2), torch.diag(torch.tensor([1.0, 4.0]))
    key, value = torch.tensor([1.0, 1.0]), torch.tensor([3.0, 1.0])
    change = rome_update(weight, cov, key, value)
    assert torch.allclose(change, torch.tensor([[1.6, 0.4], [0.0, 0.0]], dtype=torch.float64))
    edited = weight.double() + change
    assert torch.allclose(edited @ key.double(), value.double())  # the constraint W' k = v
    held_out = torch.tensor([1.0, -4.0], dtype=torch.float64)  # (C^{-1} k)^T k_h = 1 - 1 = 0
    assert torch.allclose(edited @ held_out, weight.double() @ held_out)


def test_rome_update_maps_the_key_to_its_value_and_barely_moves_held_out_keys():
    gen = torch.Generator().manual_seed(0)
    d_in, d_out = 128, 32
    mixing = torch.randn(d_in, d_in, generator=gen) / d_in ** 0.5
    scales = torch.logspace(0, -1, d_in)
    old_keys = (torch.randn(4000, d_in, generator=gen) * scales) @ mixing.T  # (n, d_in), anisotropic
    cov = old_keys.T @ old_keys / len(old_keys)
    weight = torch.randn(d_out, d_in, generator=gen)
    key = old_keys[0] * 3
    value = torch.randn(d_out, generator=gen) * 5
    change = rome_update(weight, cov, key, value)
    edited = weight.double() + change
    assert torch.allclose(edited @ key.double(), value.double(), atol=1e-6)
    held_out = ((torch.randn(200, d_in, generator=gen) * scales) @ mixing.T).double()  # fresh keys, same law
    moved = (held_out @ change.T).norm(dim=-1).mean()
    assert moved < 0.2 * (change @ key.double()).norm(), "held-out keys moved as much as the edited key"
    assert torch.linalg.matrix_rank(change) == 1
    # The run passes C^{-1}, computed once per layer, instead of solving with C for every edit.
    from_inverse = rome_update(weight, None, key, value, cov_inverse=torch.linalg.inv(cov.double()))
    assert torch.allclose(from_inverse, change, atol=1e-8)


def test_ridge_is_relative_to_the_mean_diagonal():
    cov = torch.diag(torch.tensor([2.0, 4.0]))
    assert torch.equal(regularised(cov, 0.0), cov)
    assert torch.allclose(regularised(cov, 0.5), torch.diag(torch.tensor([3.5, 5.5])))


# --------------------------------------------------------------------------- MEMIT's least-squares update


def test_memit_update_matches_the_hand_computed_example():
    # One key k = (1, 0), C = I, lambda = 1: (I + k k^T)^{-1} k = (1/2, 0), so change = R (1/2, 0):
    # half the residual is inserted, and the key orthogonal to k keeps its output.
    weight, cov = torch.eye(2), torch.eye(2)
    keys, residuals = torch.tensor([[1.0], [0.0]]), torch.tensor([[2.0], [4.0]])
    change = memit_update(weight, cov, keys, residuals, 1.0)
    assert torch.allclose(change, torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(change @ torch.tensor([0.0, 1.0], dtype=torch.float64), torch.zeros(2, dtype=torch.float64))


def test_memit_update_inserts_every_key_when_lambda_is_small_and_spares_held_out_keys():
    gen = torch.Generator().manual_seed(1)
    d_in, d_out, n = 128, 32, 10
    old_keys = torch.randn(4000, d_in, generator=gen)
    cov = old_keys.T @ old_keys / len(old_keys)
    weight = torch.randn(d_out, d_in, generator=gen)
    keys = torch.randn(d_in, n, generator=gen) * 2  # (d_in, n)
    residuals = torch.randn(d_out, n, generator=gen) * 3  # (d_out, n)
    change = memit_update(weight, cov, keys, residuals, 1e-6)
    assert torch.allclose(change @ keys.double(), residuals.double(), atol=1e-4)  # (W + change) K = W K + R
    held_out = torch.randn(200, d_in, generator=gen).double()
    moved = (held_out @ change.T).norm(dim=-1).mean()
    assert moved < 0.5 * (change @ keys.double()).norm(dim=0).mean()
    # a larger lambda trades insertion for preservation: less of R goes in, the held-out keys move less
    strong = memit_update(weight, cov, keys, residuals, 100.0)
    assert (strong @ keys.double() - residuals.double()).norm() > (change @ keys.double() - residuals.double()).norm()
    assert (held_out @ strong.T).norm() < (held_out @ change.T).norm()


# --------------------------------------------------------------------------- the search for delta


def test_deletion_loss_by_hand():
    # two prompts, target log-probs -1 (one token) and (-2, -4) (two tokens): nll_j = 1 and 3, mean 2
    logprobs = torch.tensor([[-1.0, 0.0], [-2.0, -4.0]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert torch.isclose(deletion_loss(logprobs, mask, "alternate"), torch.tensor(2.0))
    assert torch.isclose(deletion_loss(logprobs, mask, "erase"), torch.exp(torch.tensor(-2.0)))


def test_kl_term_is_kl_of_the_current_from_the_initial_distribution():
    initial = torch.log(torch.tensor([[0.5, 0.5]]))
    current = torch.log(torch.tensor([[0.75, 0.25]]))
    expected = 0.75 * torch.log(torch.tensor(1.5)) + 0.25 * torch.log(torch.tensor(0.5))
    assert torch.isclose(kl_term(initial, current), expected)
    assert float(kl_term(initial, initial)) == 0.0


def test_norm_penalty_and_clamp():
    delta, initial = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 2.0])
    assert torch.isclose(norm_penalty(delta, initial), torch.tensor(5.0 / 4.0))
    clamp_norm(delta, initial, 1.5)  # radius 3
    assert torch.isclose(delta.norm(), torch.tensor(3.0)) and torch.allclose(delta, torch.tensor([1.8, 2.4]))


# --------------------------------------------------------------------------- requests and the subject token


def test_requests_group_phrasings_by_fact_or_subject():
    def ex(q, a, subject, fact):
        return Example(question=q, answer=a, extras={"entity": subject, "fact_id": fact, "alternate": "No idea"})

    forget = [ex("Where was Ann born?", "Rome", "Ann", "ann.city"), ex("Ann was born where?", "Rome", "Ann", "ann.city"),
              ex("What does Ann do?", "cook", "Ann", "ann.job"), ex("Where was Bob born?", "Oslo", "Bob", "bob.city")]
    facts = make_requests(forget, "erase")
    assert [(r.fact, r.subject, len(r.questions)) for r in facts] == [
        ("ann.city", "Ann", 2), ("ann.job", "Ann", 1), ("bob.city", "Bob", 1)]
    assert facts[0].targets == ("Rome", "Rome")
    subjects = make_requests(forget, "alternate", "subject")
    assert [(r.subject, len(r.questions)) for r in subjects] == [("Ann", 3), ("Bob", 1)]
    assert set(subjects[0].targets) == {"No idea"}


def test_subject_position_is_the_subjects_last_token(toy_world):
    tokenizer = toy_world.load("original").tokenizer
    prompt = "Question: Where was Fialumeix born?\nAnswer:"
    ids = tokenizer(prompt)["input_ids"]
    position = subject_position(tokenizer, prompt, "Fialumeix")
    assert tokenizer.convert_ids_to_tokens(ids[position]) == "Fialumeix"


# --------------------------------------------------------------------------- the toy world


@pytest.mark.slow
def test_rome_deletes_forget_facts_by_editing_one_down_proj(toy_world, tmp_path):
    result = run_within_bounds("rome", toy_world, EXPECTED, out=tmp_path / "rome")
    assert result.model.intervention == "weights"
    assert changed_weights(result.model.model, toy_world) == {"model.layers.0.mlp.down_proj.weight"}
    assert (tmp_path / "rome" / "model.safetensors").exists()


@pytest.mark.slow
def test_memit_deletes_forget_facts_by_editing_the_down_proj_of_its_layers(toy_world):
    result = run_within_bounds("memit", toy_world, EXPECTED)
    assert changed_weights(result.model.model, toy_world) == {"model.layers.0.mlp.down_proj.weight",
                                                              "model.layers.1.mlp.down_proj.weight"}
