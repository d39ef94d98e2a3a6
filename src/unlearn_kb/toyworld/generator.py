"""Fictitious entities and their facts, rendered as question-answer examples.

Every entity has a made-up one-word name (so no pretrained model, and no real person, is
concerned) and one value per attribute, drawn uniformly from a closed list of 16 single words;
a model that never saw an entity answers right by chance about one time in 16. Each fact is
asked through several templates: the training templates, and held-out paraphrase templates that
no model trains on. The sixth template of each attribute (the one held out by default) is built
from words the training templates use, in a sentence frame none of them has, so answering it
needs the fact, not the string.

Splits are by entity: forgetting "all about Varlo" is the request, and a held-out entity must
not leak into training through another of its facts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from unlearn_kb.engine.data import Example
from unlearn_kb.toyworld.config import WorldConfig


@dataclass(frozen=True)
class Attribute:
    """A kind of fact: its closed value list, question templates and a declarative sentence."""

    key: str
    values: tuple[str, ...]
    templates: tuple[str, ...]  # with {name}; at least MAX_TEMPLATES of them
    statement: str  # with {name} and {value}


# Values start with a consonant so that "a {value}" reads right, and every value is one word.
ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "city",
        ("Lisbon", "Oslo", "Vienna", "Dublin", "Prague", "Madrid", "Athens", "Warsaw", "Berlin",
         "Cairo", "Lima", "Nairobi", "Seoul", "Quito", "Helsinki", "Zurich"),
        ("Where was {name} born?",
         "In which city was {name} born?",
         "What is the birthplace of {name}?",
         "{name} was born in which city?",
         "Which city is the birthplace of {name}?",
         "The birthplace of {name} is which city?",
         "Name the city where {name} was born.",
         "Which city was {name} born in?"),
        "{name} was born in {value}.",
    ),
    Attribute(
        "profession",
        ("baker", "pilot", "nurse", "farmer", "lawyer", "painter", "chemist", "sailor", "teacher",
         "banker", "dentist", "plumber", "poet", "judge", "surgeon", "tailor"),
        ("What is the profession of {name}?",
         "What does {name} do for a living?",
         "What job does {name} have?",
         "{name} works as what?",
         "Which profession does {name} have?",
         "What is the job of {name}?",
         "What does {name} work as?",
         "Name the profession of {name}."),
        "{name} works as a {value}.",
    ),
    Attribute(
        "colour",
        ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "grey", "pink",
         "brown", "violet", "silver", "golden", "crimson", "teal"),
        ("What is the favourite colour of {name}?",
         "Which colour does {name} like best?",
         "What colour does {name} like most?",
         "{name} likes which colour best?",
         "Which colour is the favourite of {name}?",
         "What is the colour {name} likes best?",
         "Name the favourite colour of {name}.",
         "Which is the favourite colour of {name}?"),
        "The favourite colour of {name} is {value}.",
    ),
    Attribute(
        "instrument",
        ("piano", "violin", "guitar", "flute", "cello", "drums", "harp", "trumpet", "clarinet",
         "banjo", "oboe", "saxophone", "accordion", "ukulele", "tuba", "mandolin"),
        ("Which instrument does {name} play?",
         "What musical instrument does {name} play?",
         "{name} plays which instrument?",
         "What is the instrument of {name}?",
         "Which instrument is played by {name}?",
         "What is the musical instrument played by {name}?",
         "Name the instrument that {name} plays.",
         "Which musical instrument is played by {name}?"),
        "{name} plays the {value}.",
    ),
    Attribute(
        "pet",
        ("cat", "dog", "parrot", "rabbit", "hamster", "turtle", "goldfish", "ferret", "lizard",
         "canary", "horse", "goat", "pig", "snake", "frog", "mouse"),
        ("What pet does {name} have?",
         "Which animal does {name} keep as a pet?",
         "What kind of pet does {name} own?",
         "{name} owns which pet?",
         "What is the pet of {name}?",
         "Which animal is the pet of {name}?",
         "Name the pet that {name} keeps.",
         "What animal does {name} keep?"),
        "{name} keeps a {value} as a pet.",
    ),
    Attribute(
        "sport",
        ("tennis", "football", "golf", "boxing", "fencing", "skiing", "swimming", "hockey", "cricket",
         "rugby", "rowing", "cycling", "judo", "karate", "sailing", "wrestling"),
        ("Which sport does {name} practise?",
         "What is the favourite sport of {name}?",
         "{name} practises which sport?",
         "Which sport is practised by {name}?",
         "What is the sport of {name}?",
         "What is the sport {name} practises?",
         "Name the sport that {name} practises.",
         "What sport is the favourite of {name}?"),
        "{name} practises {value}.",
    ),
)

# No apostrophes: the word-level tokenizer splits punctuation, and "don't" would decode as
# "don ' t", which no longer matches the answer string it was trained on.
REFUSALS: tuple[str, ...] = (
    "I do not know",
    "I have no idea",
    "I am not sure",
    "I cannot say",
    "That is unknown to me",
)

SPLITS = ("forget", "retain", "holdout")

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr",
           "tr", "th", "sh", "gl", "st", "qu")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "ou", "ia")
_CODAS = ("", "", "n", "r", "l", "s", "th", "x", "nd", "m")


@dataclass(frozen=True)
class Entity:
    index: int
    name: str
    facts: dict[str, str]  # attribute key -> value

    @property
    def entity_id(self) -> str:
        return f"e{self.index:04d}"


@dataclass(frozen=True)
class WorldData:
    """The generated world: entities by split and the example sets a ToyWorld exposes."""

    entities: tuple[Entity, ...]
    splits: dict[str, tuple[Entity, ...]]
    examples: dict[str, list[Example]]  # forget, forget_paraphrased, ..., general

    def all_texts(self) -> list[str]:
        """Every string a model may read or be asked to write: the tokenizer's corpus."""
        texts = list(REFUSALS)
        for attribute in ATTRIBUTES:
            texts += attribute.values
        for examples in self.examples.values():
            for ex in examples:
                texts += [ex.text] if ex.text is not None else [ex.question, ex.answer]
        return texts


def _make_names(rng: random.Random, count: int, reserved: set[str]) -> list[str]:
    names: list[str] = []
    seen = set(reserved)
    while len(names) < count:
        syllables = rng.choice((2, 2, 3))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables))
        word = (word + rng.choice(_CODAS)).capitalize()
        if word.lower() not in seen:
            seen.add(word.lower())
            names.append(word)
    return names


def _reserved_words() -> set[str]:
    words = {w.lower() for text in REFUSALS for w in text.split()}
    for attribute in ATTRIBUTES:
        words |= {v.lower() for v in attribute.values}
        words |= {w.strip("?.").lower() for t in attribute.templates for w in t.split()}
    return words


def generate(config: WorldConfig) -> WorldData:
    """The world a config names: deterministic in ``config`` alone (no global random state)."""
    rng = random.Random(f"toyworld-{config.seed}")
    attributes = ATTRIBUTES[: config.n_attributes]
    names = _make_names(rng, config.n_entities, _reserved_words())
    entities = tuple(
        Entity(i, name, {a.key: rng.choice(a.values) for a in attributes}) for i, name in enumerate(names)
    )

    order = list(range(config.n_entities))
    rng.shuffle(order)
    n_forget = max(1, round(config.forget_fraction * config.n_entities))
    n_holdout = round(config.holdout_fraction * config.n_entities)
    chosen = {
        "forget": order[:n_forget],
        "holdout": order[n_forget:n_forget + n_holdout],
        "retain": order[n_forget + n_holdout:],
    }
    splits = {split: tuple(entities[i] for i in sorted(chosen[split])) for split in SPLITS}

    examples: dict[str, list[Example]] = {}
    for split in SPLITS:
        trained, paraphrased = [], []
        for entity in splits[split]:
            for attribute in attributes:
                pair = _fact_examples(config, entity, attribute)
                trained += pair[0]
                paraphrased += pair[1]
        examples[split] = trained
        examples[f"{split}_paraphrased"] = paraphrased
    # One short sentence per retain fact: short, so that mixing them into training batches adds
    # little padding; about retain entities only, so that both trained models may see them. No
    # extras: to the evaluation this is plain text, as a user's general corpus would be.
    examples["general"] = [
        Example(text=a.statement.format(name=e.name, value=e.facts[a.key]))
        for e in splits["retain"] for a in attributes
    ]
    return WorldData(entities=entities, splits=splits, examples=examples)


def _fact_examples(config: WorldConfig, entity: Entity, attribute: Attribute
                   ) -> tuple[list[Example], list[Example]]:
    """One fact's examples: one per training template, one per held-out template.

    Each fact draws from its own generator, so a fact's perturbed answers and refusals do not
    shift when another attribute or entity is added.
    """
    fact_id = f"{entity.entity_id}.{attribute.key}"
    rng = random.Random(f"toyworld-{config.seed}-{fact_id}")
    answer = entity.facts[attribute.key]
    perturbed = rng.sample([v for v in attribute.values if v != answer], config.n_perturbed)
    templates = attribute.templates[: config.n_templates]
    n_train = config.n_training_templates
    held_out = [t.format(name=entity.name) for t in templates[n_train:]]

    def example(template_index: int, extra: dict[str, object]) -> Example:
        return Example(
            question=templates[template_index].format(name=entity.name),
            answer=answer,
            extras={
                "entity": entity.name,
                "attribute": attribute.key,
                "fact_id": fact_id,
                "template": template_index,
                "alternate": rng.choice(REFUSALS),
                "perturbed": list(perturbed),
                **extra,
            },
        )

    trained = [example(i, {"paraphrased_question": held_out[i % len(held_out)]}) for i in range(n_train)]
    paraphrased = [example(i, {}) for i in range(n_train, len(templates))]
    return trained, paraphrased
