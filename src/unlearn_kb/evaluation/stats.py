"""Small statistics the metrics share: the Mann-Whitney AUC, the KS test, a harmonic mean."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mann_whitney_auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """Area under the ROC curve that ranks ``positives`` above ``negatives``.

    Equal to the Mann-Whitney statistic ``U / (n_pos * n_neg)`` (Hanley & McNeil 1982): the
    probability that a random positive scores higher than a random negative, ties counting one
    half. Computed from average ranks in O(n log n); it matches ``sklearn.metrics.roc_auc_score``.
    """
    pos = np.asarray(positives, dtype=np.float64)
    neg = np.asarray(negatives, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("the AUC needs at least one positive and one negative score")
    if np.isnan(pos).any() or np.isnan(neg).any():
        raise ValueError("the AUC got a NaN score")
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size, dtype=np.float64)
    sorted_scores = scores[order]
    start = 0
    while start < scores.size:  # average ranks (1-based) over runs of equal scores
        end = start
        while end + 1 < scores.size and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def ks_pvalue(sample: Sequence[float], other: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov p-value (``scipy.stats.ks_2samp``, two-sided, exact mode
    chosen by scipy): TOFU's forget quality when the samples are truth ratios (arXiv 2401.06121)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(np.asarray(sample, dtype=np.float64), np.asarray(other, dtype=np.float64)).pvalue)


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean, 0 if any value is 0 (TOFU's model utility aggregates with ``scipy.stats.hmean``)."""
    if not values:
        raise ValueError("harmonic mean of nothing")
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; NaN for an empty sequence so that a missing figure never reads as zero."""
    return float(sum(values) / len(values)) if values else math.nan
