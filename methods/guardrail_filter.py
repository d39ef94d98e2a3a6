"""Guardrail output filter: serve a refusal whenever the question or the answer names a forget target.

Paper: Thaker, Maurya, Hu, Wu, Smith, "Guardrail Baselines for Unlearning in LLMs", arXiv 2403.03329.

The model pi_theta is never changed; a filter F screens what goes in and what comes out:

    y_hat = refusal                  if F(x) = 1 or F(y) = 1,  y ~ pi_theta(. | x)
    y_hat = y                        otherwise

with F a keyword match here: F(s) = 1 when s contains a blocked term as a whole word (case
ignored). The blocklist is built from the forget set: the entity names (``extras["entity"]``) and /
or the forget answers (``keywords``).

Departures from the paper:

- only the keyword filter is implemented; the paper also trains a classifier head and asks an
  LLM judge (GPT-4), which need models this package does not ship;
- the default blocklist holds entity names only. Blocking the answers too is what "the answer
  mentions a forget target" means literally, but when answers are short values shared with other
  facts (a city, a year) it refuses those facts as well: on the toy world 73% of retain facts share
  an answer with some forget fact. ``keywords=answers`` / ``both`` turn it on;
- the filter acts on generated text only: answer *probabilities* (scoring, perplexity-style
  metrics) are the unfiltered model's, as they would be for a served filter that sees only text.

The weights stay the original's (``weights_model``): an attacker holding them gets everything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from unlearn_kb.engine.data import Example
from unlearn_kb.engine.lm import LanguageModel
from unlearn_kb.engine.method import BuildMethod, Built
from unlearn_kb.errors import ConfigError

REFUSAL = "I'm sorry, I can't answer that."
"""What the filter serves instead of a blocked answer."""


@dataclass(frozen=True)
class Config:
    filter: Literal["keyword"]  # which filter F; the paper's classifier and LLM judge are not implemented
    filter_side: Literal["input", "output", "both"]  # screen the question, the answer, or both
    keywords: Literal["entities", "answers", "both"]  # what the blocklist is built from


def blocklist(forget: Sequence[Example], keywords: str) -> list[str]:
    """The blocked terms, sorted: forget entity names and / or forget answers, each once."""
    terms: set[str] = set()
    for example in forget:
        entity = example.extras.get("entity")
        if keywords in ("entities", "both") and isinstance(entity, str) and entity.strip():
            terms.add(entity.strip())
        if keywords in ("answers", "both") and example.is_qa and example.answer.strip():
            terms.add(example.answer.strip())
    return sorted(terms)


def mentions(text: str, pattern: re.Pattern[str] | None) -> bool:
    """F(text): whether ``text`` contains a blocked term as a whole word."""
    return pattern is not None and pattern.search(text) is not None


def compile_blocklist(terms: Sequence[str]) -> re.Pattern[str] | None:
    if not terms:
        return None
    # Longest first, so "New York City" wins over "New York"; \b keeps "Rome" out of "Romeo".
    alternatives = "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


@dataclass
class FilteredModel(LanguageModel):
    """The original model behind a keyword filter: generated answers that trip it become a refusal."""

    terms: list[str] = field(default_factory=list)
    filter_side: str = "both"
    refusal: str = REFUSAL

    def __post_init__(self) -> None:
        self._pattern = compile_blocklist(self.terms)

    intervention: ClassVar[str] = "output"

    def blocks(self, question: str, answer: str) -> bool:
        return ((self.filter_side in ("input", "both") and mentions(question, self._pattern))
                or (self.filter_side in ("output", "both") and mentions(answer, self._pattern)))

    def filter_answer(self, question: str, answer: str) -> str:
        return self.refusal if self.blocks(question, answer) else answer


class GuardrailFilter(BuildMethod):
    def build(self, original: LanguageModel, config: Config, run: Any, *, forget: Sequence[Example],
              retain: Sequence[Example] | None, seed: int, world: Any = None, log: Any = None,
              progress: Any = None) -> Built:
        terms = blocklist(forget, config.keywords)
        if not terms:
            raise ConfigError(f"guardrail_filter: the forget set gives no blocked terms with keywords="
                              f"'{config.keywords}' (entity names come from each example's 'entity' field); "
                              "try --set keywords=answers")
        served = FilteredModel(model=original.model, tokenizer=original.tokenizer, max_length=original.max_length,
                               batch_size=original.batch_size, terms=terms, filter_side=config.filter_side)

        def save(folder: Path) -> None:
            (folder / "blocklist.json").write_text(json.dumps(terms, indent=1, ensure_ascii=False) + "\n",
                                                   encoding="utf-8")

        return Built(lm=served, state={"blocked_terms": len(terms), "blocklist": "blocklist.json",
                                       "filter_side": config.filter_side, "refusal": REFUSAL}, save=save)
