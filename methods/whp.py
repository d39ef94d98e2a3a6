"""Who's Harry Potter (WHP): fine-tune the model on generic predictions that a reinforced copy and anchored-term swaps reveal.

Paper: Eldan, Russinovich, "Who's Harry Potter? Approximate Unlearning in LLMs", arXiv 2310.02238.

    theta_reinf = argmin_theta E_{x in D_f}[ -log pi_theta(x) ]            (reinforced model)
    x~          = x with every anchored term replaced by its generic translation (dictionary)
    v_generic_t = v_base(x~)_t - alpha * ReLU( v_reinf(x)_t - v_base(x~)_t )
    y~_t        = argmax v_generic_t                                       (generic label)
    theta_u     = argmin_theta E_{x in D_f} sum_t -log pi_theta(y~_t | x_{<t})   (from theta_base)

The paper's pipeline: (1) reinforce the baseline on the target text; (2) translate the text with
a dictionary of idiosyncratic "anchored" terms -> generic counterparts (about 1,500 entries built
with GPT-4) and read the baseline's predictions on the translation; (3) combine both by the formula
above and take the token of maximal logit as the label; (4) fine-tune the baseline on the
*original* text with these labels. The loss is the ordinary cross-entropy to the hard (argmax)
generic label at each position.

Departures, and why:

- **anchored terms (toy substitute).** No LLM builds the dictionary here. ``anchors`` chooses it:
  ``holdout`` (toy world only) maps each forget entity's name to the name of a *holdout* entity,
  one no model was trained on: the faithful analogue of "Harry" -> "Jon", a name the model has no
  specific knowledge of, so the baseline's prediction on the translation is its generic guess;
  ``retain`` maps each forget entity to a retain entity's name (entity names from
  ``extras["entity"]``; any data set that has them); ``none`` skips the anchored-term step (the
  reinforcement bootstrapping alone); any other value is a JSON file ``{"term": "generic", ...}``.
- the dictionary is applied to the question only: answers stay as they are, so the label
  positions of the original and the translated sequences align from the end (the paper tracks the
  token mapping through the translated text; toy answers are generic attribute values);
- QA data: the generic labels cover the answer tokens (the engine's loss mask), not the prompt;
- both fine-tunes are the engine's training loop; the reinforcing one uses ``reinforce_lr`` and
  ``reinforce_steps`` (0: the run's epochs), the final one the run settings;
- the defaults: ``alpha`` = 1.0 is MUSE's WHP default (muse_bench baselines/whos_harry_potter.py);
  the WHP paper's own alpha and learning rates were not found in the stored paper text, so they
  were not used. The reinforcement learning rate is MUSE's fine-tuning default (1e-5).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unlearn_kb.engine.data import IGNORE_INDEX, Encoded, Example, collate, encode_example
from unlearn_kb.engine.lm import LanguageModel
from unlearn_kb.engine.method import BuildMethod, Built, GradientMethod, Step, label_logprobs, token_mean
from unlearn_kb.errors import ConfigError
from unlearn_kb.methods.whp_logit import generic_logits, reinforce


@dataclass(frozen=True)
class Config:
    alpha: float  # strength of the subtraction of the reinforced model's boost
    anchors: str  # anchored-term dictionary: holdout | retain | none | a JSON file {"term": "generic"}
    reinforce_lr: float  # learning rate of the reinforcing fine-tune
    reinforce_steps: int  # optimizer steps of the reinforcing fine-tune; 0 derives them from the run's epochs


# --------------------------------------------------------------------------- the objective


def generic_labels(base_logits: torch.Tensor, reinforced_logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """``argmax_v (v_base - alpha * relu(v_reinf - v_base))``: ``(N, V)`` logits in, ``(N,)`` token ids out."""
    return generic_logits(base_logits.float(), reinforced_logits.float(), alpha).argmax(-1)


def generic_label_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the generic labels, token-mean over ``mask``.

    ``logits``: ``(B, T, V)``; ``targets``: ``(B, T)`` generic token ids (anything where ``mask`` is
    False); ``mask``: ``(B, T)`` bool.
    """
    safe = torch.where(mask, targets, torch.full_like(targets, IGNORE_INDEX))
    return -token_mean(label_logprobs(logits, safe), mask)


@dataclass(frozen=True)
class GenericConfig:
    """The generic-label fine-tune has no settings besides the run's."""


class GenericLabelFineTune(GradientMethod):
    """Fine-tuning on the forget questions towards precomputed generic labels.

    ``targets[i]`` holds, for forget example ``i``, one label per token of its encoding
    (``IGNORE_INDEX`` off the answer), aligned with the trainer's right-padded batch.
    """

    def __init__(self, targets: Mapping[int, list[int]]):
        self.targets = targets

    def loss(self, step: Step, config: GenericConfig) -> dict[str, torch.Tensor]:
        batch = step.batch("forget")
        width = batch["input_ids"].shape[1]
        full = torch.full((len(batch["index"]), width), IGNORE_INDEX, dtype=torch.long)
        for row, i in enumerate(batch["index"].tolist()):
            labels = self.targets[i][:width]
            full[row, :len(labels)] = torch.tensor(labels, dtype=torch.long)
        targets = full[:, 1:].to(batch["input_ids"].device)  # (B, T-1), shifted like step.targets
        mask = step.mask("forget") & (targets != IGNORE_INDEX)
        loss = generic_label_loss(step.logits("forget"), targets, mask)
        return {"loss": loss, "generic": loss}


# --------------------------------------------------------------------------- anchored terms


def _entities(examples: Sequence[Example], what: str) -> list[str]:
    names: list[str] = []
    for e in examples:
        name = e.extras.get("entity")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"anchors: every {what} example needs extras['entity'] to build the dictionary; "
                              "give a JSON dictionary instead (--set anchors=PATH) or --set anchors=none")
        if name not in names:
            names.append(name)
    return names


def anchor_dictionary(anchors: str, forget: Sequence[Example], retain: Sequence[Example] | None,
                      world: Any) -> dict[str, str]:
    """The anchored-term dictionary ``{idiosyncratic term: generic translation}``."""
    if anchors == "none":
        return {}
    if anchors in ("holdout", "retain"):
        pool_examples = (world.holdout if world is not None else None) if anchors == "holdout" else retain
        if not pool_examples:
            raise ConfigError(f"anchors={anchors} needs the {'toy world' if anchors == 'holdout' else 'retain set'}"
                              "; with your own model give a JSON dictionary (--set anchors=PATH) or anchors=none")
        targets = _entities(forget, "forget")
        pool = [n for n in _entities(pool_examples, anchors) if n not in targets]
        return {name: pool[k % len(pool)] for k, name in enumerate(targets)}
    path = Path(anchors)
    if not path.is_file():
        raise ConfigError(f"anchors must be holdout, retain, none or a JSON dictionary file; {anchors!r} is none")
    mapping = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise ConfigError(f"{anchors}: expected a JSON object of strings {{\"term\": \"generic\"}}")
    return mapping


def translate(text: str, dictionary: Mapping[str, str]) -> str:
    """``text`` with every whole-word occurrence of a dictionary term replaced (longest terms first)."""
    if not dictionary:
        return text
    terms = sorted(dictionary, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(t) for t in terms) + r")\b")
    return pattern.sub(lambda m: dictionary[m.group(0)], text)


# --------------------------------------------------------------------------- label generation


def _label_positions(encoded: Encoded) -> list[int]:
    return [p for p, label in enumerate(encoded.labels) if label != IGNORE_INDEX and p > 0]


@torch.no_grad()
def _logits_at(model: torch.nn.Module, encoded: Sequence[Encoded], pad_id: int, device: torch.device,
               chunk: int = 64) -> list[torch.Tensor]:
    """Per example: the logits predicting each label token, ``(n_labels, V)``."""
    out: list[torch.Tensor] = []
    for start in range(0, len(encoded), chunk):
        part = list(encoded[start:start + chunk])
        batch = {k: v.to(device) for k, v in collate(part, pad_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        for row, e in enumerate(part):
            out.append(logits[row, [p - 1 for p in _label_positions(e)]].cpu())
    return out


def generic_targets(base: torch.nn.Module, reinforced: torch.nn.Module, tokenizer: Any, forget: Sequence[Example],
                    dictionary: Mapping[str, str], alpha: float, max_length: int) -> dict[int, list[int]]:
    """Generic labels for every forget example, laid out like the trainer's encoding."""
    original = [encode_example(tokenizer, e, i, max_length) for i, e in enumerate(forget)]
    translated = [encode_example(tokenizer, Example(question=translate(e.question, dictionary), answer=e.answer,
                                                    extras=e.extras) if e.is_qa else
                                 Example(text=translate(e.text or "", dictionary), extras=e.extras), i, max_length)
                  for i, e in enumerate(forget)]
    device = next(base.parameters()).device
    v_base = _logits_at(base, translated, tokenizer.pad_token_id, device)  # baseline on the translation
    v_reinf = _logits_at(reinforced, original, tokenizer.pad_token_id, device)  # reinforced on the original
    targets: dict[int, list[int]] = {}
    for i, (enc, b, r) in enumerate(zip(original, v_base, v_reinf, strict=True)):
        if b.shape != r.shape:
            raise ConfigError(f"forget example {i}: the anchored-term translation changed the number of label "
                              "tokens; translate prompts only, or keep a text's token count")
        labels = [IGNORE_INDEX] * len(enc.input_ids)
        for p, token in zip(_label_positions(enc), generic_labels(b, r, alpha).tolist(), strict=True):
            labels[p] = int(token)
        targets[i] = labels
    return targets


class WHP(BuildMethod):
    uses_reference = True  # the baseline's predictions (on the translated text) make the labels

    def build(self, original: LanguageModel, config: Config, run: Any, *, forget: Sequence[Example],
              retain: Sequence[Example] | None, seed: int, world: Any = None, log: Any = None,
              progress: Any = None) -> Built:
        from unlearn_kb.engine.trainer import train

        dictionary = anchor_dictionary(config.anchors, forget, retain, world)

        def tagged(phase: str) -> Any:
            return None if log is None else (lambda record: log({"phase": phase, **record}))

        reinforce_run = dataclasses.replace(run, lr=config.reinforce_lr, steps=config.reinforce_steps)
        reinforced, reinforced_result = reinforce(original, reinforce_run, forget, seed, log=tagged("reinforce"),
                                                  progress=progress)
        original.model.eval()
        targets = generic_targets(original.model, reinforced, original.tokenizer, forget, dictionary,
                                  config.alpha, run.max_length)
        del reinforced
        gold = {i: encode_example(original.tokenizer, e, i, run.max_length).labels for i, e in enumerate(forget)}
        changed = sum(1 for i in targets if targets[i] != gold[i])  # examples whose labels the method changed
        result = train(GenericLabelFineTune(targets), GenericConfig(), run, model=original.model,
                       tokenizer=original.tokenizer, forget=forget, seed=seed, progress=progress, log=tagged("generic"))
        original.model.eval()
        return Built(lm=original, train=result, state={
            "alpha": config.alpha, "anchors": config.anchors, "dictionary_size": len(dictionary),
            "dictionary_sample": dict(list(dictionary.items())[:5]),
            "reinforce_steps": reinforced_result.steps,
            "reinforce_final_loss": reinforced_result.records[-1].get("loss") if reinforced_result.records else None,
            "answers_relabelled": changed, "forget_examples": len(forget)})
