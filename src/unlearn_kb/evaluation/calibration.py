"""Calibration subjects whose verdict is known in advance, to test the evaluation itself.

* the reference model (never saw the forget set): removal-like by construction;
* the original model (saw everything, nothing removed): ineffective;
* :class:`OutputGuardrail` over the original: the weights are untouched and only the output is
  blocked, the baseline Thaker et al. show matches fine-tuning methods on behavioural benchmarks
  (arXiv 2403.03329, "Guardrail Baselines for Unlearning in LLMs"). Its behaviour is gone, but
  every white-box probe reads the original weights, so it must come out suppression-like.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from unlearn_kb.engine.lm import LanguageModel

if TYPE_CHECKING:
    import torch

REFUSAL = "I do not know"


@dataclass
class OutputGuardrail(LanguageModel):
    """Refuses any question that names a blocked entity; the weights are the original's.

    Output-level only: generated answers are replaced (:meth:`filter_answer`) and, for scoring,
    the served next-token distribution on a blocked input is flat (:meth:`adjust_logits`), so
    answer probabilities carry no information either.
    """

    blocked: frozenset[str] = field(default_factory=frozenset)
    refusal: str = REFUSAL

    @classmethod
    def over(cls, lm: LanguageModel, entities: Iterable[str], refusal: str = REFUSAL) -> OutputGuardrail:
        return cls(model=lm.model, tokenizer=lm.tokenizer, max_length=lm.max_length, batch_size=lm.batch_size,
                   blocked=frozenset(entities), refusal=refusal)

    intervention: ClassVar[str] = "output"

    def _names_blocked(self, text: str) -> bool:
        words = set(text.replace("?", " ").replace(".", " ").split())
        return not words.isdisjoint(self.blocked)

    def filter_answer(self, question: str, answer: str) -> str:
        return self.refusal if self._names_blocked(question) else answer

    def adjust_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      logits: torch.Tensor) -> torch.Tensor:
        import torch

        texts = self.tokenizer.batch_decode(input_ids, skip_special_tokens=True)
        rows = torch.tensor([self._names_blocked(t) for t in texts], device=logits.device)
        return torch.where(rows[:, None, None], torch.zeros_like(logits), logits)
