"""A word-level tokenizer for the toy world, built locally (no hub) and saved like any other.

One token per word or punctuation mark: the world's vocabulary is a few hundred words, every
answer is one token plus ``</s>``, and a fact is one name token mapped to one value token, which
keeps the tiny models fast and their knowledge easy to probe. Decoding joins tokens with single
spaces and nothing else (no cleanup rules, which would turn " do not" into " don't"), so a
decoded answer equals the answer string it was trained on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from unlearn_kb.engine.data import PROMPT_TEMPLATE

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0..3, in this order


def _bare_tokenizer(vocab: dict[str, int]) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    tokenizer = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    # Whitespace first, then every punctuation character on its own: "born?" -> "born", "?".
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    # Prompts start with <s>, as Llama's do; engine.data adds </s> after answers itself.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return tokenizer


def build_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A tokenizer whose vocabulary is every word and punctuation mark in ``texts``, plus the
    prompt template's, in sorted order after the four special tokens (deterministic ids)."""
    from transformers import PreTrainedTokenizerFast

    splitter = _bare_tokenizer({t: i for i, t in enumerate(SPECIAL_TOKENS)}).pre_tokenizer
    words: set[str] = set()
    for text in [*texts, PROMPT_TEMPLATE.format(question="")]:
        words.update(piece for piece, _ in splitter.pre_tokenize_str(text))
    words.difference_update(SPECIAL_TOKENS)
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *sorted(words)])}
    return PreTrainedTokenizerFast(
        tokenizer_object=_bare_tokenizer(vocab),
        bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        padding_side="right",
        model_max_length=512,
    )
