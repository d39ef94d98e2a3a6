"""The white-box probes on cases with known answers: quantization error, probes, lens, MIA, guardrail."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from unlearn_kb.engine.data import Example  # noqa: E402
from unlearn_kb.engine.lm import LanguageModel  # noqa: E402
from unlearn_kb.evaluation.calibration import OutputGuardrail  # noqa: E402
from unlearn_kb.evaluation.mia import attack_aucs, token_stats  # noqa: E402
from unlearn_kb.evaluation.probes import LogisticRegression, linear_probe, logit_lens  # noqa: E402
from unlearn_kb.evaluation.quantization import quantize_model, rtn_quantize  # noqa: E402

# --------------------------------------------------------------------------- RTN quantization


@pytest.mark.parametrize("bits", [8, 4, 3])
def test_rtn_error_is_at_most_half_a_step_per_output_channel(bits):
    torch.manual_seed(0)
    w = torch.randn(16, 32) * torch.linspace(0.01, 3.0, 16)[:, None]  # rows of very different scales
    q = rtn_quantize(w, bits)
    step = w.abs().amax(1, keepdim=True) / (2 ** (bits - 1) - 1)
    assert ((w - q).abs() <= step / 2 + 1e-6).all()
    levels = torch.round(q / step)
    assert levels.abs().max() <= 2 ** (bits - 1) - 1
    assert all(len(torch.unique(levels[row])) <= 2 ** bits - 1 for row in range(16))


def test_rtn_keeps_values_already_on_the_grid_and_groups_have_their_own_scale():
    w = torch.tensor([[-7.0, -1.0, 0.0, 3.0, 7.0, 2.0, 1.0, -2.0]])
    assert torch.equal(rtn_quantize(w, 4), w)  # 4 bits: levels -7..7 with step 1
    grouped = torch.tensor([[100.0, 1.0, 1.0, 0.5]])
    assert rtn_quantize(grouped, 4)[0, 1] == 0.0  # one scale for the row: 1.0 rounds to zero
    assert rtn_quantize(grouped, 4, group_size=2)[0, 2] == pytest.approx(1.0)  # its own group keeps it


def test_quantize_model_changes_linear_weights_only_and_leaves_the_original_alone():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 8))
    before = [p.clone() for p in model.parameters()]
    quantized = quantize_model(model, 4)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert torch.equal(quantized[0].weight, model[0].weight)
    assert not torch.equal(quantized[1].weight, model[1].weight)


# --------------------------------------------------------------------------- probes


def test_logistic_regression_separates_separable_classes():
    torch.manual_seed(0)
    centres = torch.randn(4, 10) * 5
    y = torch.arange(200) % 4
    x = centres[y] + torch.randn(200, 10) * 0.5
    probe = LogisticRegression().fit(x[:100], y[:100], 4)
    assert (probe.predict(x[100:]) == y[100:]).float().mean() == 1.0


class _FakeHidden:
    """An 'lm' whose layer 1 encodes the answer linearly and whose layer 0 is noise."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers
        self.values = sorted(set(answers.values()))
        self.directions = torch.randn(len(self.values), 16, generator=torch.Generator().manual_seed(1)) * 4

    def hidden_states(self, questions):
        gen = torch.Generator().manual_seed(len(questions))
        noise = torch.randn(2, len(questions), 16, generator=gen)
        signal = torch.stack([self.directions[self.values.index(self.answers[q])] for q in questions])
        noise[1] += signal
        return noise


def test_linear_probe_finds_the_layer_that_encodes_the_attribute():
    values = ["red", "blue", "green"]
    train = [Example(question=f"train {i}", answer=values[i % 3], extras={"attribute": "colour"}) for i in range(60)]
    test = [Example(question=f"test {i}", answer=values[i % 3], extras={"attribute": "colour"}) for i in range(30)]
    fake = _FakeHidden({e.question: e.answer for e in train + test})
    result = linear_probe(fake, train, {"test": test})["test"]  # type: ignore[arg-type]
    assert result.best_layer == 1 and result.best == 1.0
    assert result.per_layer[0] < 0.7  # noise decodes at about chance
    assert result.chance == pytest.approx(10 / 30)


# --------------------------------------------------------------------------- a tiny memorising model


@pytest.fixture(scope="module")
def memoriser() -> tuple[LanguageModel, list[Example], list[Example]]:
    """A 2-layer Llama that memorised the 'member' facts and never saw the 'unseen' ones."""
    from unlearn_kb.engine.data import collate, encode_all
    from unlearn_kb.toyworld.config import WorldConfig
    from unlearn_kb.toyworld.generator import generate
    from unlearn_kb.toyworld.tokenizer import build_tokenizer
    from unlearn_kb.toyworld.training import ModelShape, cpu_threads, new_model

    config = WorldConfig(n_entities=16, n_attributes=2, n_templates=2, n_paraphrase_templates=1,
                         forget_fraction=0.5, holdout_fraction=0.25)
    world = generate(config)
    tokenizer = build_tokenizer(world.all_texts())
    members, unseen = world.examples["forget"], world.examples["holdout"]
    batch = collate(encode_all(tokenizer, members, 48), tokenizer.pad_token_id)
    with cpu_threads(1):  # a tiny model: one thread is fastest, and immune to a busy machine
        model = new_model(ModelShape(64, 2, 2, 128), tokenizer, 48, seed=0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(100):  # full batch until the 16 answers are memorised
            loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    lm = LanguageModel(model=model, tokenizer=tokenizer, max_length=48)
    assert lm.generate_answers([e.question for e in members]) == [e.answer for e in members]
    return lm, members, unseen


def test_every_membership_attack_ranks_memorised_answers_above_unseen_ones(memoriser):
    lm, members, unseen = memoriser
    aucs = attack_aucs(lm, members, unseen)
    assert set(aucs) == {"loss", "zlib", "min_k", "min_k_plus_plus"}
    assert all(auc > 0.9 for auc in aucs.values()), aucs


def test_min_k_plus_plus_statistics_are_the_mean_and_std_of_log_p_under_the_model(memoriser):
    lm, members, _ = memoriser
    stats = token_stats(lm, members[:1])[0]
    # recompute by hand for the first answer token
    from unlearn_kb.engine.data import collate, encode_all

    enc = encode_all(lm.tokenizer, members[:1], lm.max_length)
    batch = collate(enc, lm.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = lm.model(input_ids=batch["input_ids"]).logits[0].float()
    position = enc[0].labels.index(next(t for t in enc[0].labels if t != -100)) - 1
    logp = torch.log_softmax(logits[position], -1)
    mu = (logp.exp() * logp).sum()
    sigma = ((logp.exp() * logp.square()).sum() - mu**2).sqrt()
    assert stats.mu[0] == pytest.approx(float(mu), abs=1e-4)
    assert stats.sigma[0] == pytest.approx(float(sigma), abs=1e-4)
    assert stats.logp[0] == pytest.approx(float(logp[enc[0].input_ids[position + 1]]), abs=1e-4)


def test_logit_lens_at_the_last_layer_is_the_models_own_answer_rank(memoriser):
    lm, members, unseen = memoriser
    lens = logit_lens(lm, members)
    assert lens is not None and len(lens.mrr) == 3  # embeddings + 2 layers
    assert lens.mrr[-1] > 0.9  # memorised: the true answer is the top token at the output
    assert logit_lens(lm, unseen).mrr[-1] < lens.mrr[-1]


def test_guardrail_blocks_served_answers_but_keeps_the_weights(memoriser):
    lm, members, unseen = memoriser
    names = {e.extras["entity"] for e in members}
    guard = OutputGuardrail.over(lm, names)
    assert set(guard.generate_answers([e.question for e in members[:4]])) == {"I do not know"}
    served = guard.answer_logprobs(members[:2])
    vocab = len(lm.tokenizer)
    assert all(torch.allclose(lp, torch.full_like(lp, -torch.log(torch.tensor(float(vocab))))) for lp in served)
    assert guard.weights_model is lm.model and guard.intervention == "output"
    unblocked = unseen[:3]
    assert guard.generate_answers([e.question for e in unblocked]) == lm.generate_answers([e.question for e in unblocked])
