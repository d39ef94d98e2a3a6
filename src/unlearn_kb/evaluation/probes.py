"""White-box knowledge probes on hidden states: a linear probe per layer and the logit lens.

Both read the residual stream at the last prompt token (the position that predicts the answer's
first token) of ``lm.weights_model``: for a frozen-weight wrapper that is the original model,
which is what an attacker holding the weights would read.

* Linear probe (Alain & Bengio, arXiv 1610.01644; used on unlearned models by Lynch et al.,
  arXiv 2402.16835): multinomial logistic regression from a layer's state to the attribute value,
  trained on retain entities and tested on forget entities. Knowledge that is merely hidden from
  the output stays linearly decodable; knowledge that was removed falls to the reference model's
  level (which never saw the facts, so its probe can only use priors).
* Logit lens (nostalgebraist 2020, "interpreting GPT: the logit lens"; Belrose et al.,
  arXiv 2303.08112): ``rank of y under lm_head(norm(h_l))`` at each layer ``l``, summarised as the
  mean reciprocal rank (MRR) of the true answer's first token.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from unlearn_kb.engine.data import Example, _answer_text

if TYPE_CHECKING:
    import torch
    from torch import nn

    from unlearn_kb.engine.lm import LanguageModel

PROBE_L2 = 1e-2  # ridge penalty on standardised features: enough to converge on separable data
PROBE_MAX_ITER = 200  # L-BFGS iterations; the toy probes converge in well under 100
MIN_PROBE_TRAIN = 8  # below this many training examples per group a probe says nothing


# --------------------------------------------------------------------------- logistic regression


@dataclass
class LogisticRegression:
    """Multinomial logistic regression on standardised features, fitted by full-batch L-BFGS.

    Minimises ``mean CE(W z + b, y) + l2 * ||W||^2`` with ``z = (x - m) / s`` (training mean and
    std). Deterministic: no sampling, float64 on the CPU.
    """

    l2: float = PROBE_L2
    max_iter: int = PROBE_MAX_ITER
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    mean_: torch.Tensor | None = None
    scale_: torch.Tensor | None = None

    def fit(self, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> LogisticRegression:
        import torch

        x = x.double()
        self.mean_ = x.mean(0)
        self.scale_ = x.std(0, unbiased=False).clamp(min=1e-6)
        z = (x - self.mean_) / self.scale_  # (N, H)
        weight = torch.zeros(z.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=self.max_iter, line_search_fn="strong_wolfe",
                                      tolerance_grad=1e-9, tolerance_change=1e-12)

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(z @ weight + bias, y) + self.l2 * weight.square().sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(closure)
        self.weight, self.bias = weight.detach(), bias.detach()
        return self

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            raise RuntimeError("fit the probe before predicting")
        z = (x.double() - self.mean_) / self.scale_
        return (z @ self.weight + self.bias).argmax(-1)


# --------------------------------------------------------------------------- linear probe


@dataclass(frozen=True)
class ProbeResult:
    """Probe accuracy on the test examples at each layer (index 0 = embeddings)."""

    per_layer: list[float]
    n_test: int
    chance: float  # accuracy of always answering the most common training label

    @property
    def best_layer(self) -> int:
        return max(range(len(self.per_layer)), key=lambda i: self.per_layer[i])

    @property
    def best(self) -> float:
        return self.per_layer[self.best_layer]


def _group_key(example: Example) -> str:
    return str(example.extras.get("attribute", "answer"))


def linear_probe(lm: LanguageModel, train: Sequence[Example],
                 tests: dict[str, Sequence[Example]]) -> dict[str, ProbeResult]:
    """Train per-attribute probes on ``train`` and score them on each test set, layer by layer.

    Labels are the answer strings; examples are grouped by ``extras["attribute"]`` (one group if
    absent). Test examples whose answer never occurs in training cannot be predicted and are
    dropped. One probe per (group, layer) serves every test set. A test set with nothing to score
    is absent from the result.
    """
    import torch

    groups_train: dict[str, list[Example]] = defaultdict(list)
    for e in train:
        groups_train[_group_key(e)].append(e)
    correct: dict[str, torch.Tensor] = {}
    n_test: dict[str, int] = defaultdict(int)
    n_majority: dict[str, float] = defaultdict(float)
    for key, tr in groups_train.items():
        classes = sorted({e.answer for e in tr})
        if len(tr) < MIN_PROBE_TRAIN or len(classes) < 2:
            continue
        index = {c: i for i, c in enumerate(classes)}
        scored = {name: [e for e in examples if _group_key(e) == key and e.answer in index]
                  for name, examples in tests.items()}
        scored = {name: examples for name, examples in scored.items() if examples}
        if not scored:
            continue
        h_train = lm.hidden_states([e.question for e in tr])  # (L+1, N, H)
        h_test = {name: lm.hidden_states([e.question for e in examples]) for name, examples in scored.items()}
        y_train = torch.tensor([index[e.answer] for e in tr])
        y_test = {name: torch.tensor([index[e.answer] for e in examples]) for name, examples in scored.items()}
        majority = torch.bincount(y_train, minlength=len(classes)).argmax()
        hits = {name: torch.zeros(h_train.shape[0], dtype=torch.float64) for name in scored}
        for layer in range(h_train.shape[0]):
            probe = LogisticRegression().fit(h_train[layer], y_train, len(classes))
            for name in scored:
                hits[name][layer] = (probe.predict(h_test[name][layer]) == y_test[name]).double().sum()
        for name in scored:
            correct[name] = hits[name] if name not in correct else correct[name] + hits[name]
            n_test[name] += len(scored[name])
            n_majority[name] += float((y_test[name] == majority).sum())
    return {name: ProbeResult(per_layer=(correct[name] / n_test[name]).tolist(), n_test=n_test[name],
                              chance=n_majority[name] / n_test[name])
            for name in correct}


# --------------------------------------------------------------------------- logit lens


def final_norm(model: nn.Module) -> nn.Module | None:
    """The norm applied before the unembedding, for the common decoder layouts."""
    for path in ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.decoder.final_layer_norm"):
        module: object = model
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if module is not None:
            return module  # type: ignore[return-value]
    return None


def first_answer_token(lm: LanguageModel, answer: str) -> int:
    """The answer's first token as ``engine.data`` tokenizes it after the prompt."""
    return lm.tokenizer(_answer_text(lm.tokenizer, answer), add_special_tokens=False)["input_ids"][0]


@dataclass(frozen=True)
class LensResult:
    """Mean reciprocal rank and median rank of the true first answer token, per layer."""

    mrr: list[float]
    median_rank: list[float]

    @property
    def best_layer(self) -> int:
        return max(range(len(self.mrr)), key=lambda i: self.mrr[i])

    @property
    def best(self) -> float:
        return self.mrr[self.best_layer]


def logit_lens(lm: LanguageModel, examples: Sequence[Example]) -> LensResult | None:
    """Rank of the true answer's first token when each layer's state is unembedded directly.

    Transformers returns the last hidden state already normalised (``hidden_states[-1] =
    last_hidden_state``), so the final norm is applied to every layer but the last.
    """
    import torch

    model = lm.weights_model
    norm, head = final_norm(model), model.get_output_embeddings()
    if norm is None or head is None or not examples:
        return None
    hidden = lm.hidden_states([e.question for e in examples])  # (L+1, N, H)
    target = torch.tensor([first_answer_token(lm, e.answer) for e in examples])
    param = next(head.parameters())
    mrr, median = [], []
    with torch.no_grad():
        for layer in range(hidden.shape[0]):
            h = hidden[layer].to(param.device, param.dtype)
            if layer < hidden.shape[0] - 1:
                h = norm(h)
            logits = head(h).float().cpu()  # (N, V)
            true = logits.gather(-1, target[:, None])
            ranks = (logits > true).sum(-1).double() + 1.0
            mrr.append(float((1.0 / ranks).mean()))
            median.append(float(ranks.median()))
    return LensResult(mrr=mrr, median_rank=median)


def chance_mrr(n_candidates: int) -> float:
    """MRR of a uniformly random rank among ``n_candidates`` (a yardstick for the report)."""
    return sum(1.0 / r for r in range(1, n_candidates + 1)) / n_candidates if n_candidates else math.nan
