"""Every objective against values computed by hand on small tensors, masking included."""

from __future__ import annotations

import math

import pytest
import torch

from unlearn_kb.engine.method import (
    Step,
    kl_divergence,
    label_logprobs,
    nll,
    sequence_mean,
    token_mean,
)
from unlearn_kb.methods import ce_u, dpo_idk, ga, ga_kl, grad_diff, npo, rmu, satimp, simnpo, undial, wga

IGNORE = -100
log = math.log


def logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def close(tensor: torch.Tensor, value: float, tol: float = 1e-5) -> bool:
    return abs(float(torch.as_tensor(tensor).detach()) - value) < tol


class FixedLogits:
    """A stand-in model: returns fixed logits for each known batch of input ids."""

    def __init__(self, table: dict[str, torch.Tensor]):
        self.table = table
        self.calls = 0

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, stop_at_layer: int | None = None):
        self.calls += 1
        return self.table[_key(input_ids)]


def _key(input_ids: torch.Tensor) -> str:
    return ",".join(str(int(x)) for x in input_ids.flatten())


def batch(labels: list[list[int]], attention: list[list[int]] | None = None, offset: int = 0) -> dict:
    labels_t = torch.tensor(labels)
    ids = torch.arange(labels_t.numel()).reshape(labels_t.shape) + offset
    mask = torch.tensor(attention) if attention is not None else torch.ones_like(labels_t)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels_t,
            "index": torch.arange(labels_t.shape[0])}


# --------------------------------------------------------------------------- reductions


def test_token_mean_and_nll_skip_masked_positions_even_when_they_hold_inf():
    values = torch.tensor([[-1.0, -2.0, float("-inf")], [float("nan"), -5.0, -6.0]])
    mask = torch.tensor([[True, True, False], [False, True, True]])
    assert close(token_mean(values, mask), -3.5)
    assert close(nll(values, mask), 3.5)


def test_sequence_mean_averages_each_answer_then_the_answers_and_skips_empty_rows():
    values = torch.tensor([[1.0, 3.0, 100.0], [10.0, 0.0, 0.0], [7.0, 7.0, 7.0]])
    mask = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])
    assert close(sequence_mean(values, mask), (2.0 + 10.0) / 2)


def test_label_logprobs_reads_the_target_probability_and_zero_for_ignored_labels():
    logits = torch.tensor([[[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]]).log()
    out = label_logprobs(logits, torch.tensor([[2, IGNORE]]))
    assert torch.allclose(out, torch.tensor([[log(0.5), 0.0]]))


def test_kl_divergence_is_kl_of_reference_to_current_and_ignores_padding():
    ref = torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]).log()
    cur = torch.tensor([[[0.25, 0.75], [0.1, 0.9]]]).log()
    mask = torch.tensor([[True, False]])
    expected = 0.5 * log(0.5 / 0.25) + 0.5 * log(0.5 / 0.75)
    assert close(kl_divergence(ref, cur, mask), expected)


# --------------------------------------------------------------------------- through a Step


def step_with(forget_probs, forget_labels, retain_probs=None, retain_labels=None, reference=None,
              forget_attention=None):
    """A Step whose model returns fixed distributions. ``*_probs`` are ``(B, T-1, V)``: the
    predictions for labels[:, 1:]; a last dummy position is appended to fill T."""
    table = {}
    batches = {}
    for name, probs, labels, attention, offset in (
        ("forget", forget_probs, forget_labels, forget_attention, 0),
        ("retain", retain_probs, retain_labels, None, 1000),
    ):
        if probs is None:
            continue
        b = batch(labels, attention, offset)
        p = torch.tensor(probs)
        padded = torch.cat([p, torch.full_like(p[:, :1], 1.0 / p.shape[-1])], dim=1)  # (B, T, V)
        table[_key(b["input_ids"])] = padded.log().requires_grad_(True)
        batches[name] = b
    return Step(FixedLogits(table), batches, reference), table


# forget: one sequence, labels [prompt, y1=0, y2=1]: the model gives p(y1)=0.5, p(y2)=0.25
FORGET_PROBS = [[[0.5, 0.3, 0.2], [0.5, 0.25, 0.25]]]
FORGET_LABELS = [[IGNORE, 0, 1]]
# retain: p(y1) = 0.8 for the one answer token; the prompt token is ignored
RETAIN_PROBS = [[[0.3, 0.3, 0.4], [0.1, 0.8, 0.1]]]
RETAIN_LABELS = [[IGNORE, IGNORE, 1]]
NLL_F = -(log(0.5) + log(0.25)) / 2
NLL_R = -log(0.8)


def test_ga_loss_is_the_negated_forget_nll():
    step, _ = step_with(FORGET_PROBS, FORGET_LABELS)
    terms = ga.GradientAscent().loss(step, ga.Config())
    assert close(terms["loss"], -NLL_F)


def test_grad_diff_is_minus_gamma_forget_nll_plus_alpha_retain_nll():
    step, _ = step_with(FORGET_PROBS, FORGET_LABELS, RETAIN_PROBS, RETAIN_LABELS)
    terms = grad_diff.GradDiff().loss(step, grad_diff.Config(gamma=2.0, alpha=0.5))
    assert close(terms["forget"], -2.0 * NLL_F)
    assert close(terms["retain"], 0.5 * NLL_R)
    assert close(terms["loss"], -2.0 * NLL_F + 0.5 * NLL_R)


def test_grad_diff_with_alpha_zero_never_reads_the_retain_batch():
    step, _ = step_with(FORGET_PROBS, FORGET_LABELS)  # no retain batch at all
    terms = grad_diff.GradDiff().loss(step, grad_diff.Config(gamma=1.0, alpha=0.0))
    assert set(terms) == {"loss", "forget"}


def test_ga_kl_uses_the_kl_to_the_reference_on_real_retain_positions():
    class Ref:
        def logits(self, name, b):
            return torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]).log()

    step, _ = step_with(FORGET_PROBS, FORGET_LABELS, RETAIN_PROBS, RETAIN_LABELS, reference=Ref())
    terms = ga_kl.GAKL().loss(step, ga_kl.Config(gamma=1.0, alpha=1.0))
    kl_first = 0.5 * log(0.5 / 0.3) + 0.25 * log(0.25 / 0.3) + 0.25 * log(0.25 / 0.4)
    assert close(terms["retain"], (kl_first + 0.0) / 2)  # both positions are real; the second KL is 0
    assert close(terms["forget"], -NLL_F)


def test_npo_loss_matches_the_formula():
    logp, ref = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -2.0])
    expected = -(2 / 0.5) * (logsigmoid(-0.5) + logsigmoid(0.5)) / 2
    assert close(npo.npo_loss(logp, ref, beta=0.5), expected)


def test_npo_gradient_equals_the_papers_weight():
    logp = torch.tensor([-1.5], requires_grad=True)
    ref = torch.tensor([-2.0])
    npo.npo_loss(logp, ref, beta=0.3).backward()
    expected = 2 * (math.exp(-1.5) ** 0.3) / (math.exp(-1.5) ** 0.3 + math.exp(-2.0) ** 0.3)
    assert close(logp.grad, expected)
    assert close(npo.npo_weight(logp.detach(), ref, 0.3), expected)


def test_npo_gradient_weight_vanishes_as_forget_probability_falls():
    ref = torch.tensor([-2.0])
    weights = []
    for value in (0.0, -2.0, -10.0, -50.0, -200.0):
        logp = torch.tensor([value], requires_grad=True)
        npo.npo_loss(logp, ref, beta=0.1).backward()
        weights.append(float(logp.grad))
    assert weights == sorted(weights, reverse=True)
    assert weights[1] == pytest.approx(1.0)  # pi_theta = pi_ref: the weight is 1, as in GA
    assert weights[-1] < 1e-7


def test_npo_reads_sequence_log_likelihoods_and_the_cached_reference():
    class Ref:
        def sequence_logprobs(self, name, b):
            return torch.tensor([-1.0])

    step, _ = step_with(FORGET_PROBS, FORGET_LABELS, RETAIN_PROBS, RETAIN_LABELS, reference=Ref())
    terms = npo.NPO().loss(step, npo.Config(beta=0.1, alpha=2.0, retain_loss="nll"))
    log_ratio = (log(0.5) + log(0.25)) - (-1.0)
    assert close(terms["forget"], -(2 / 0.1) * logsigmoid(-0.1 * log_ratio))
    assert close(terms["retain"], 2.0 * NLL_R)


def test_simnpo_loss_matches_the_paper_and_the_code_convention_rescales_the_margin():
    assert close(simnpo.simnpo_loss(torch.tensor([-2.0]), torch.tensor([4]), beta=2.0, gamma=0.5),
                 -(2 / 2.0) * logsigmoid(-2.0 * (-0.5) - 0.5))
    step, _ = step_with(FORGET_PROBS, FORGET_LABELS)
    method = simnpo.SimNPO()
    paper = method.loss(step, simnpo.Config(beta=3.0, gamma=0.6, alpha=0.0, margin_convention="paper"))
    code = method.loss(step, simnpo.Config(beta=3.0, gamma=0.2, alpha=0.0, margin_convention="code"))
    assert close(paper["forget"], float(code["forget"].detach()))  # code delta 0.2 = paper gamma 3 * 0.2
    length_normalised = (log(0.5) + log(0.25)) / 2
    assert close(paper["forget"], -(2 / 3.0) * logsigmoid(-3.0 * length_normalised - 0.6))


def test_dpo_loss_is_the_papers_and_two_over_beta_is_an_option():
    args = (torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-3.0]), torch.tensor([-1.0]))
    assert close(dpo_idk.dpo_loss(*args, beta=0.1), -logsigmoid(0.1 * 3.0))
    assert close(dpo_idk.dpo_loss(*args, beta=0.1, two_over_beta=True), -20 * logsigmoid(0.3))


def test_wga_weights_each_token_by_its_detached_probability_per_answer():
    logp = torch.tensor([[log(0.5), log(0.25), 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    loss = wga.wga_loss(logp, mask, beta=1.0)
    assert close(loss, (0.5 * log(0.5) + 0.25 * log(0.25)) / 2)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[0.25, 0.125, 0.0]]))  # sg(p^beta) / |y|


def test_wga_with_beta_zero_is_gradient_ascent_per_answer():
    logp = torch.tensor([[-1.0, -2.0], [-3.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    assert close(wga.wga_loss(logp, mask, beta=0.0), ((-1.5) + (-3.0)) / 2)


def test_satimp_weight_is_saturation_times_importance():
    logits = torch.tensor([[[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]]]).log()
    targets = torch.tensor([[0, 1]])
    weight = satimp.satimp_weight(logits, targets, 5.0, 1.0)
    w1, w2 = 0.5**5 * 0.5, 0.25**5 * 0.75
    assert torch.allclose(weight, torch.tensor([[w1, w2]]))
    logp = torch.tensor([[log(0.5), log(0.25)]])
    assert close(satimp.satimp_loss(logp, weight, torch.tensor([[True, True]])),
                 (w1 * log(0.5) + w2 * log(0.25)) / 2, tol=1e-7)


def test_satimp_weight_stays_positive_for_a_memorised_token():
    logits = torch.tensor([[[40.0, 0.0, 0.0]]])  # p = 1 - 8.5e-18: 1 - p rounds to 0 in float32
    weight = satimp.satimp_weight(logits, torch.tensor([[0]]), 5.0, 1.0)
    assert 0 < float(weight) == pytest.approx(2 * math.exp(-40.0), rel=1e-4)


def test_undial_teacher_lowers_the_target_logit_by_beta_and_leaves_ignored_positions():
    ref = torch.zeros(1, 2, 3)
    q = undial.undial_targets(ref, torch.tensor([[0, IGNORE]]), beta=log(2.0))
    assert torch.allclose(q[0, 0], torch.tensor([0.2, 0.4, 0.4]))
    assert torch.allclose(q[0, 1], torch.full((3,), 1 / 3))


def test_undial_loss_is_soft_cross_entropy_on_answer_tokens_only():
    ref = torch.zeros(1, 2, 3)
    student = torch.tensor([[[0.2, 0.4, 0.4], [0.9, 0.05, 0.05]]]).log()
    targets = torch.tensor([[0, IGNORE]])
    entropy = -(0.2 * log(0.2) + 2 * 0.4 * log(0.4))
    assert close(undial.undial_loss(student, ref, targets, targets != IGNORE, beta=log(2.0)), entropy)
    # 'all' positions: the prompt position is plain distillation to the (uniform) teacher
    everywhere = torch.tensor([[True, True]])
    second = -(1 / 3) * (log(0.9) + 2 * log(0.05))
    assert close(undial.undial_loss(student, ref, targets, everywhere, beta=log(2.0), per_answer=False),
                 (entropy + second) / 2)


def test_ce_u_targets_the_renormalised_distribution_without_the_true_token():
    logits = torch.tensor([[[0.0, log(2.0), log(3.0)]]], requires_grad=True)
    targets = torch.tensor([[2]])
    loss = ce_u.ce_u_loss(logits, targets, torch.tensor([[True]]))
    assert close(loss, -((1 / 3) * log(1 / 6) + (2 / 3) * log(2 / 6)))
    loss.backward()
    assert torch.allclose(logits.grad[0, 0], torch.tensor([1 / 6 - 1 / 3, 2 / 6 - 2 / 3, 3 / 6]))


def test_ce_u_skips_the_first_n_answer_tokens_of_each_row():
    mask = torch.tensor([[False, True, True, True], [True, True, False, False]])
    assert ce_u.skip_first(mask, 1).tolist() == [[False, False, True, True], [False, True, False, False]]


def test_rmu_activation_loss_paper_form_and_code_form():
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
    target = torch.tensor([1.0, 1.0])
    real = torch.tensor([[True, True, False]])
    assert close(rmu.activation_loss(hidden, target, real, "paper"), 1.0)  # |(0,-1)|^2, |(-1,0)|^2; padding skipped
    assert close(rmu.activation_loss(hidden, target, real, "code"), (0 + 1 + 1 + 0 + 64 + 64) / 6)


def test_rmu_control_vector_has_the_steering_norm_and_nonnegative_entries():
    c = rmu.control_vector(16, 6.5, torch.Generator().manual_seed(0))
    assert close(c.norm(), 6.5, tol=1e-4)
    assert bool((c >= 0).all())
