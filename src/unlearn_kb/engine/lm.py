"""One interface for every model the evaluation sees: trained checkpoints and frozen-weight wrappers.

Gradient methods and editors return a changed transformers model; input- and output-level
methods (a guardrail prompt, an output filter, a logit offset) keep the weights frozen and wrap
them. Evaluation treats both alike through :class:`LanguageModel`: generate answers, score
answers, read hidden states. A wrapper says honestly what an attacker holding the weights would
get (``weights_model``): the original, unchanged weights, which the knowledge probes then attack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from unlearn_kb.engine.data import IGNORE_INDEX, Example, collate, encode_all, prompt_text

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class LanguageModel:
    """A causal language model and its tokenizer, with batched generation and scoring.

    Subclasses that intervene at the input or output override :meth:`prepare_question` and / or
    :meth:`adjust_logits` (and :meth:`filter_answer`); everything else follows from those.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    max_length: int = 256
    batch_size: int = 64

    intervention: ClassVar[str] = "weights"
    """'weights' if the weights themselves were changed, else where a wrapper acts ('input',
    'output'). A wrapper keeps ``model`` = the original, so ``weights_model`` needs no override."""

    # ------------------------------------------------------------ honest disclosure

    @property
    def weights_model(self) -> PreTrainedModel:
        """The weights an attacker with white-box access gets. For a wrapper: the originals."""
        return self.model

    @property
    def white_box(self) -> bool:
        """Whether an attacker can read ``weights_model`` at all; the knowledge probes need it.

        False for a model served only through an API: evaluation then skips the white-box probes
        and says so, instead of attacking weights it could not have.
        """
        return True


    # ------------------------------------------------------------ hooks for wrappers

    def prepare_question(self, question: str) -> str:
        """The question as the model sees it (input-level methods add a prompt here)."""
        return question

    def adjust_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      logits: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(B, T, V)`` as served (output-level methods change them here)."""
        return logits

    def filter_answer(self, question: str, answer: str) -> str:
        """The answer as served (an output filter replaces it here)."""
        return answer

    # ------------------------------------------------------------ derived behaviour

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Served logits ``(B, T, V)`` for a batch, after any output-level adjustment."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return self.adjust_logits(input_ids, attention_mask, out.logits)

    def answer_logprobs(self, examples: Sequence[Example]) -> list[torch.Tensor]:
        """Per-token log-probabilities of each example's answer (or text) tokens, as served."""
        import torch

        served = [Example(question=self.prepare_question(e.question), answer=e.answer, extras=e.extras)
                  if e.is_qa else e for e in examples]
        encoded = encode_all(self.tokenizer, served, self.max_length)
        results: list[torch.Tensor] = []
        with torch.no_grad():
            for start in range(0, len(encoded), self.batch_size):
                batch = collate(encoded[start:start + self.batch_size], self.tokenizer.pad_token_id)
                batch = {k: v.to(self.device) for k, v in batch.items()}
                logits = self.logits(batch["input_ids"], batch["attention_mask"]).float()
                logp = torch.log_softmax(logits[:, :-1], dim=-1)  # (B, T-1, V)
                labels = batch["labels"][:, 1:]  # (B, T-1)
                mask = labels != IGNORE_INDEX
                picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
                for row in range(labels.shape[0]):
                    results.append(picked[row][mask[row]].cpu())
        return results

    def generate_answers(self, questions: Sequence[str], max_new_tokens: int = 12) -> list[str]:
        """Greedy answers, batched with left padding and a KV cache, as served."""

        prompts = [prompt_text(self.tokenizer, self.prepare_question(q)) for q in questions]
        answers: list[str] = []
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start:start + self.batch_size]
                enc = self.tokenizer(chunk, return_tensors="pt", padding=True).to(self.device)
                ids = self._greedy(enc["input_ids"], enc["attention_mask"], max_new_tokens)
                texts = self.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                answers += [t.strip() for t in texts]
        finally:
            self.tokenizer.padding_side = side
        return [self.filter_answer(q, a) for q, a in zip(questions, answers, strict=True)]

    def _greedy(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        import torch

        eos = self.tokenizer.eos_token_id
        positions = left_padded_positions(attention_mask)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        past = None
        cache_name = _cache_argument(self.model)
        step_ids, step_pos = input_ids, positions
        sequence, mask = input_ids, attention_mask
        with torch.no_grad():
            for _ in range(max_new_tokens):
                out = self.model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos,
                                 use_cache=True, **{cache_name: past})
                past = _cache_of(out)
                logits = self.adjust_logits(sequence, mask, out.logits)[:, -1]  # (B, V)
                nxt = logits.argmax(-1)
                if eos is not None:
                    nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
                    done |= nxt == eos
                sequence = torch.cat([sequence, nxt[:, None]], dim=1)
                mask = torch.cat([mask, torch.ones_like(nxt[:, None])], dim=1)
                step_ids, step_pos = nxt[:, None], step_pos[:, -1:] + 1
                if bool(done.all()):
                    break
        return sequence

    def hidden_states(self, questions: Sequence[str]) -> torch.Tensor:
        """Residual-stream states at the last prompt token, ``(L + 1, N, H)``, of the weights."""
        import torch

        prompts = [prompt_text(self.tokenizer, q) for q in questions]
        chunks = []
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            with torch.no_grad():
                for start in range(0, len(prompts), self.batch_size):
                    enc = self.tokenizer(prompts[start:start + self.batch_size], return_tensors="pt",
                                         padding=True).to(self.device)
                    out = self.weights_model(**enc, output_hidden_states=True)
                    chunks.append(torch.stack([h[:, -1].float().cpu() for h in out.hidden_states]))
        finally:
            self.tokenizer.padding_side = side
        return torch.cat(chunks, dim=1)


def left_padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding, ``(B, T)``: what the served model gets while generating."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def side_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                last: int) -> torch.Tensor:
    """Another model's logits (an assistant, a reinforced copy) for the last ``last`` positions,
    ``(B, last, V)``, without gradients.

    An output-level wrapper combines them with the served model's logits in
    :meth:`LanguageModel.adjust_logits`. Generation gives the served model a KV cache, so it
    returns only the newest positions; the side model has no cache and reruns the whole sequence.
    """
    import torch

    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask,
                       position_ids=left_padded_positions(attention_mask), use_cache=False).logits
    return logits[:, -last:]


def _cache_argument(model: PreTrainedModel) -> str:
    """The KV cache argument's name: ``cache`` in recent transformers 5, else ``past_key_values``."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper passes it on
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def _cache_of(output: object) -> object:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)

