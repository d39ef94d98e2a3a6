"""Forget / retain / holdout data: reading it, and turning it into masked training batches.

Two kinds of example: a question with its answer (``{"question": ..., "answer": ...}``), whose
loss covers the answer tokens only, and a plain text (``{"text": ...}``), whose loss covers
every token. Questions and answers are tokenized separately and then joined, so that no answer
token can merge with the end of the prompt (a bug class the peer frameworks had: short answers
fused into the prompt's last token and vanished from the labels).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unlearn_kb.errors import UserError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
"""Label value that the loss skips (prompt and padding positions), as in torch's cross-entropy."""

PROMPT_TEMPLATE = "Question: {question}\nAnswer:"
"""Prompt for tokenizers without a chat template (base models and the toy world)."""


class DataError(UserError, ValueError):
    """A data file or example a user gave is unusable; the message says where and why."""


@dataclass(frozen=True)
class Example:
    """One forget, retain or holdout item: a question with its answer, or a plain text.

    ``extras`` carries optional per-example fields that some methods and metrics use:
    ``alternate`` (a refusal or replacement answer, for IdK and DPO-IdK), ``perturbed`` (wrong
    answers, for the truth ratio), ``paraphrased_question``, ``entity`` and ``attribute``.
    """

    question: str | None = None
    answer: str | None = None
    text: str | None = None
    extras: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        is_qa = self.question is not None and self.answer is not None
        if is_qa == (self.text is not None):
            raise DataError("an example has either 'question' and 'answer', or 'text'")

    @property
    def is_qa(self) -> bool:
        return self.text is None

    def with_answer(self, answer: str) -> Example:
        """The same question with another answer (a refusal, a perturbed answer)."""
        return Example(question=self.question, answer=answer, extras=self.extras)


@dataclass(frozen=True)
class Encoded:
    """One tokenized example: ids and labels of equal length, labels masked on the prompt."""

    input_ids: list[int]
    labels: list[int]
    index: int


# --------------------------------------------------------------------------- reading files


def example_from_mapping(row: object, where: str) -> Example:
    """Build an example from one JSON object; ``where`` names it in errors (file:line)."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(row).__name__}")
    if "text" in row and "question" not in row:
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise DataError(f"{where}: 'text' must be a non-empty string")
        return Example(text=row["text"], extras={k: v for k, v in row.items() if k != "text"})
    missing = [key for key in ("question", "answer") if key not in row]
    if missing:
        raise DataError(f"{where}: missing {' and '.join(repr(m) for m in missing)} "
                        "(each line needs 'question' and 'answer', or 'text')")
    question, answer = row["question"], row["answer"]
    if not isinstance(question, str) or not isinstance(answer, str) or not answer.strip():
        raise DataError(f"{where}: 'question' and 'answer' must be strings, and the answer non-empty")
    extras = {k: v for k, v in row.items() if k not in ("question", "answer")}
    return Example(question=question, answer=answer, extras=extras)


def read_examples(path: str | Path) -> list[Example]:
    """Read a forget / retain / holdout set.

    Accepts JSON lines (one object per line), a JSON array (TOFU's layout), or a folder saved by
    ``datasets.Dataset.save_to_disk`` (needs the optional ``datasets`` package). Errors name the
    file and the line.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_saved_dataset(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    stripped = text.lstrip()
    examples: list[Example] = []
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        examples = [example_from_mapping(row, f"{path}: item {i}") for i, row in enumerate(rows)]
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: invalid JSON: {exc.msg}") from None
            examples.append(example_from_mapping(row, f"{path}:{number}"))
    if not examples:
        raise DataError(f"{path}: no examples (the file is empty)")
    return examples


def _read_saved_dataset(path: Path) -> list[Example]:
    try:
        from datasets import load_from_disk
    except ImportError:
        raise DataError(f"{path}: is a folder; reading saved datasets needs 'pip install datasets'") from None
    try:
        dataset = load_from_disk(str(path))
    except Exception as exc:  # datasets raises several unrelated types for a bad folder
        raise DataError(f"{path}: not a dataset saved with save_to_disk ({exc})") from None
    examples = [example_from_mapping(dict(row), f"{path}: row {i}") for i, row in enumerate(dataset)]
    if not examples:
        raise DataError(f"{path}: no examples (the dataset is empty)")
    return examples


def write_jsonl(path: str | Path, examples: Iterable[Example]) -> None:
    lines = []
    for ex in examples:
        row = {"text": ex.text} if not ex.is_qa else {"question": ex.question, "answer": ex.answer}
        lines.append(json.dumps({**row, **ex.extras}, ensure_ascii=False))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- tokenizing


def prompt_text(tokenizer: PreTrainedTokenizerBase, question: str) -> str:
    """The prompt for a question: the tokenizer's chat template when it has one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
    return PROMPT_TEMPLATE.format(question=question)


def _answer_text(tokenizer: PreTrainedTokenizerBase, answer: str) -> str:
    # After a chat template's assistant header the answer starts at once; after "Answer:" it
    # follows a space, which belongs to the answer so that BPE vocabularies see " Paris".
    return answer if getattr(tokenizer, "chat_template", None) else " " + answer


def encode_example(
    tokenizer: PreTrainedTokenizerBase, example: Example, index: int, max_length: int
) -> Encoded:
    """Token ids and labels for one example; the prompt is masked with ``IGNORE_INDEX``.

    A question-answer pair longer than ``max_length`` keeps its whole answer and loses the start
    of its prompt; an answer that alone does not fit is an error, not a silent truncation.
    """
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if not example.is_qa:
        ids = tokenizer(example.text, add_special_tokens=True)["input_ids"] + eos
        ids = ids[:max_length]
        return Encoded(input_ids=ids, labels=list(ids), index=index)
    prompt_ids = tokenizer(prompt_text(tokenizer, example.question), add_special_tokens=True)["input_ids"]
    answer_ids = tokenizer(_answer_text(tokenizer, example.answer), add_special_tokens=False)["input_ids"] + eos
    if len(answer_ids) >= max_length:
        raise DataError(
            f"example {index}: the answer alone is {len(answer_ids)} tokens, more than the "
            f"maximum sequence length {max_length}; shorten it or raise --max-length"
        )
    overflow = len(prompt_ids) + len(answer_ids) - max_length
    if overflow > 0:
        prompt_ids = prompt_ids[overflow:]
    return Encoded(
        input_ids=prompt_ids + answer_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + answer_ids,
        index=index,
    )


def encode_all(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], max_length: int
) -> list[Encoded]:
    return [encode_example(tokenizer, ex, i, max_length) for i, ex in enumerate(examples)]


def collate(encoded: Sequence[Encoded], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding gets attention 0 and label ``IGNORE_INDEX``.

    Returns ``input_ids``, ``attention_mask``, ``labels`` (all ``(B, T)``) and ``index`` ``(B,)``,
    the examples' positions in their set, which keys caches of reference quantities.
    """
    import torch

    width = max(len(e.input_ids) for e in encoded)
    input_ids = torch.full((len(encoded), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, e in enumerate(encoded):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        attention[row, :n] = 1
    index = torch.tensor([e.index for e in encoded], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "index": index}


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give a tokenizer without a pad token one (its eos token), as Llama tokenizers need."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise DataError("the tokenizer has neither a pad token nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
