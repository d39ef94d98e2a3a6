"""CLI commands: ``unlearn-kb toyworld build`` and ``unlearn-kb toyworld info``.

Thin over :func:`unlearn_kb.toyworld.load_toyworld`; torch is imported only when a command runs.
"""

from __future__ import annotations

from typing import Any

import typer

from unlearn_kb.cli.common import stderr_console, stdout_console

toyworld_app = typer.Typer(
    name="toyworld",
    help="The toy world: fictitious facts and tiny Llama models (original, reference, assistant), "
    "trained on the CPU and cached.",
    no_args_is_help=True,
)

SEED = typer.Option(0, "--seed", help="Seed of the world: names, facts, splits and initialisation.")
ENTITIES = typer.Option(200, "--entities", help="Number of fictitious entities.")


@toyworld_app.command("build")
def build(
    seed: int = SEED,
    entities: int = ENTITIES,
    assistant: bool = typer.Option(False, "--assistant", help="Also train the small assistant model "
                                   "(for logit-offset methods such as ULD)."),
) -> None:
    """Generate the world and train its models (well under a minute per model on two cores); print its info.

    Does nothing but print when the world is already cached.
    """
    from unlearn_kb.toyworld import WorldConfig, load_toyworld

    console = stderr_console()
    world = load_toyworld(WorldConfig(n_entities=entities, seed=seed), build=True, assistant=assistant,
                          progress=lambda message: console.print(f"[dim]{message}[/dim]", highlight=False))
    print_info(world.info())


@toyworld_app.command("info")
def info(seed: int = SEED, entities: int = ENTITIES) -> None:
    """Print the cached world's sizes, training times and measured recall (it must be built)."""
    from unlearn_kb.toyworld import WorldConfig, load_toyworld

    print_info(load_toyworld(WorldConfig(n_entities=entities, seed=seed), build=False).info())


def print_info(info: dict[str, Any]) -> None:
    """Two tables: the world (where, how big) and its models (cost, what they recall)."""
    from rich.table import Table

    console = stdout_console()
    world = Table(title=f"toy world {info['key']}", show_header=False)
    world.add_column("", style="bold")
    world.add_column("")
    world.add_row("path", info["path"])
    world.add_row("entities", ", ".join(f"{split} {n}" for split, n in info["entities"].items()))
    counts = info["examples"]
    world.add_row("examples", ", ".join(
        [f"{split} {counts[split]} (+{counts[split + '_paraphrased']} paraphrased)"
         for split in ("forget", "retain", "holdout")] + [f"general {counts['general']}"]))
    world.add_row("vocabulary", f"{info['vocab_size']} words")
    world.add_row("build time", f"{info['build_seconds']} s")
    console.print(world)

    models = Table(title="models: exact-match recall, training templates / held-out paraphrases")
    for column in ("model", "parameters", "train s", "cpu s", "forget", "retain", "holdout"):
        models.add_column(column, justify="left" if column == "model" else "right")
    for name, record in info["models"].items():
        recall = record["recall"]
        models.add_row(
            name, f"{record['parameters']:,}", f"{record['seconds']}", f"{record.get('cpu_seconds', '')}",
            *(f"{recall[s]['train_templates']:.1%} / {recall[s]['paraphrases']:.1%}"
              for s in ("forget", "retain", "holdout")),
        )
    console.print(models)
    chance = next(iter(info["models"].values()), {}).get("chance")
    if chance is not None:
        console.print(f"chance level: {chance:.1%} (16 values per attribute); the reference never saw "
                      "the forget entities, and no model saw the holdout entities.", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.add_typer(toyworld_app, name="toyworld")
