"""A tiny random Llama and a few examples: fast stand-ins for the toy world in engine tests."""

from __future__ import annotations

import os
from pathlib import Path

from unlearn_kb.engine.data import Example

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

NAMES = ["Alva", "Bruno", "Cora", "Dirk", "Edda", "Fenn", "Gita", "Hugo"]
CITIES = ["Oslo", "Lima", "Cairo", "Seoul", "Quito", "Vienna", "Dublin", "Athens"]
JOBS = ["baker", "pilot", "nurse", "poet", "judge", "tailor", "sailor", "farmer"]


def examples() -> tuple[list[Example], list[Example]]:
    """Forget (first two people) and retain (the rest) question-answer pairs, with refusals."""
    rows = []
    for name, city, job in zip(NAMES, CITIES, JOBS, strict=True):
        rows.append(Example(question=f"Where was {name} born?", answer=city,
                            extras={"alternate": "I don't know."}))
        rows.append(Example(question=f"What does {name} do?", answer=job,
                            extras={"alternate": ["I don't know.", "No idea."]}))
    return rows[:4], rows[4:]


def build_tiny_model(folder: Path, layers: int = 3, seed: int = 0) -> Path:
    """Save a random Llama (hidden 32) with a byte-level BPE tokenizer trained on the examples."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    forget, retain = examples()
    corpus = [f"Question: {e.question}\nAnswer: {e.answer}" for e in forget + retain]
    corpus += ["I don't know.", "No idea."]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=300, min_frequency=1, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    cfg = LlamaConfig(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id,
                      pad_token_id=hf_tok.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder
