"""Answer matching: exact match and ROUGE-L recall on normalised word tokens.

ROUGE-L (Lin 2004, "ROUGE: A Package for Automatic Evaluation of Summaries", ACL workshop W04-1013)
scores a candidate by the longest common subsequence (LCS) with the reference:
``recall = LCS(ref, cand) / |ref|``. TOFU (arXiv 2401.06121) reports the recall on greedy answers,
and open-unlearning computes it with ``rouge_score``'s ``rougeL`` recall; tokenisation here follows
``rouge_score``'s default (lowercase, runs of ``[a-z0-9]``, no stemming), so the figures agree with
that package on plain text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_TOKEN = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lowercased alphanumeric runs, as ``rouge_score``'s default tokenizer makes them."""
    return _TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, by the textbook O(|a||b|) dynamic programme."""
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l_recall(reference: str, candidate: str) -> float:
    """ROUGE-L recall: the share of the reference's words that the candidate says in order."""
    ref = words(reference)
    if not ref:
        return 0.0
    return lcs_length(ref, words(candidate)) / len(ref)


def exact_match(reference: str, candidate: str) -> float:
    """1.0 when the normalised word sequences are equal (SQuAD's EM, arXiv 1606.05250), else 0.0."""
    return float(words(reference) == words(candidate))
