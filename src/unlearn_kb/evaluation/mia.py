"""Membership inference on forget versus holdout: does the model still treat the forget set as seen?

Per-example scores (higher = "looks like training data"), computed on the answer tokens as
open-unlearning does for QA data (``src/evals/metrics/mia/``):

* LOSS (Yeom et al., arXiv 1709.01604): ``-mean NLL``;
* zlib (Carlini et al., arXiv 2012.07805): ``-mean NLL / len(zlib(answer))``;
* Min-K% (Shi et al., arXiv 2310.16789): mean of the lowest ``k`` share of token log-probs;
* Min-K%++ (Zhang et al., arXiv 2404.02936): the same over ``z_t = (log p(x_t) - mu_t) / sigma_t``,
  ``mu_t = E_{z~p(.|x<t)} log p(z)``, ``sigma_t^2 = E[(log p(z))^2] - mu_t^2`` over the full
  next-token distribution.

``k = 0.4`` as MUSE and open-unlearning's configs use; ``ceil`` is not used: the count is
``max(1, int(k * n))`` as in open-unlearning.

AUC ranks forget (positive) above holdout (negative), so AUC 1 means the forget set is plainly
recognised and 0.5 means it looks as unseen as fresh data. PrivLeak (MUSE, arXiv 2407.06460) is
``(AUC_model - AUC_ref) / AUC_ref``; we report it as a fraction (MUSE prints x100) and in this
orientation (open-unlearning flips to ``1 - AUC`` first; the sign means the same thing: positive =
the forget set looks more familiar than under the reference, negative = less familiar, which MUSE
also counts as a leak: over-unlearning).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from unlearn_kb.engine.data import IGNORE_INDEX, Example, collate, encode_all
from unlearn_kb.evaluation.stats import mann_whitney_auc

if TYPE_CHECKING:
    import torch

    from unlearn_kb.engine.lm import LanguageModel

MIN_K_FRACTION = 0.4  # MUSE's and open-unlearning's Min-40%
ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")


@dataclass(frozen=True)
class TokenStats:
    """Per answer token: log-prob of the true token, and the mean and std of log p under the
    model's own next-token distribution (Min-K%++'s calibration)."""

    logp: torch.Tensor  # (n,)
    mu: torch.Tensor  # (n,)
    sigma: torch.Tensor  # (n,)


def token_stats(lm: LanguageModel, examples: Sequence[Example]) -> list[TokenStats]:
    """Teacher-forced statistics over each example's answer tokens (served logits of ``lm``)."""
    import torch

    served = [Example(question=lm.prepare_question(e.question), answer=e.answer, extras=e.extras)
              if e.is_qa else e for e in examples]
    encoded = encode_all(lm.tokenizer, served, lm.max_length)
    out: list[TokenStats] = []
    with torch.no_grad():
        for start in range(0, len(encoded), lm.batch_size):
            batch = collate(encoded[start:start + lm.batch_size], lm.tokenizer.pad_token_id)
            batch = {k: v.to(lm.device) for k, v in batch.items()}
            logits = lm.logits(batch["input_ids"], batch["attention_mask"])[:, :-1]  # (B, T-1, V)
            labels = batch["labels"][:, 1:]  # (B, T-1)
            mask = labels != IGNORE_INDEX
            # only the answer positions go through the full-vocabulary statistics: (n, V), n << B*T
            logp_all = torch.log_softmax(logits[mask].float(), dim=-1)
            p_all = logp_all.exp()
            mu = (p_all * logp_all).sum(-1)  # (n,)
            sigma = ((p_all * logp_all.square()).sum(-1) - mu.square()).clamp(min=1e-12).sqrt()
            logp = logp_all.gather(-1, labels[mask].unsqueeze(-1)).squeeze(-1)
            counts = mask.sum(-1).tolist()
            for piece in zip(logp.cpu().split(counts), mu.cpu().split(counts), sigma.cpu().split(counts),
                             strict=True):
                out.append(TokenStats(*piece))
    return out


def _lowest_mean(values: torch.Tensor, fraction: float) -> float:
    count = max(1, int(values.numel() * fraction))
    return float(values.sort().values[:count].mean())


def score(stats: TokenStats, text: str, attack: str, k: float = MIN_K_FRACTION) -> float:
    """One example's membership score under ``attack``; higher means more member-like."""
    nll = -float(stats.logp.mean())
    if attack == "loss":
        return -nll
    if attack == "zlib":
        return -nll / len(zlib.compress(text.encode("utf-8")))
    if attack == "min_k":
        return _lowest_mean(stats.logp, k)
    if attack == "min_k_plus_plus":
        return _lowest_mean((stats.logp - stats.mu) / stats.sigma, k)
    raise ValueError(f"unknown attack {attack!r}; known: {', '.join(ATTACKS)}")


def membership_scores(lm: LanguageModel, examples: Sequence[Example], attack: str) -> list[float]:
    texts = [e.answer if e.is_qa else e.text for e in examples]
    return [score(s, t, attack) for s, t in zip(token_stats(lm, examples), texts, strict=True)]


def attack_aucs(lm: LanguageModel, forget: Sequence[Example], holdout: Sequence[Example],
                attacks: Sequence[str] = ATTACKS) -> dict[str, float]:
    """Forget-vs-holdout AUC for each attack, from one pass over each set."""
    f_stats, h_stats = token_stats(lm, forget), token_stats(lm, holdout)
    f_texts = [e.answer if e.is_qa else e.text for e in forget]
    h_texts = [e.answer if e.is_qa else e.text for e in holdout]
    return {
        attack: mann_whitney_auc(
            [score(s, t, attack) for s, t in zip(f_stats, f_texts, strict=True)],
            [score(s, t, attack) for s, t in zip(h_stats, h_texts, strict=True)],
        )
        for attack in attacks
    }


def privleak(auc_model: float, auc_reference: float) -> float:
    """MUSE's PrivLeak as a fraction: ``(AUC_model - AUC_ref) / AUC_ref`` (arXiv 2407.06460)."""
    return (auc_model - auc_reference) / auc_reference
