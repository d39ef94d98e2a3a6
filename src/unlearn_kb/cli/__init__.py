"""The ``unlearn-kb`` command line: thin commands over library functions that tests call directly.

Each command module registers its commands on :data:`app`. Modules import only typer, rich and
the registry at import time; torch and transformers are imported inside the commands that train
or evaluate, so the knowledge commands start fast.
"""

from __future__ import annotations

import os
import sys

import typer

from unlearn_kb.cli import docs, evaluate, knowledge, run, toyworld
from unlearn_kb.cli.common import fail, settings
from unlearn_kb.errors import Interrupted

app = typer.Typer(
    name="unlearn-kb",
    help="The LLM-unlearning knowledge base: query methods by intention, run them, and measure "
    "whether they remove knowledge or only suppress it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error."),
) -> None:
    settings.debug = debug


for module in (knowledge, toyworld, run, evaluate, docs):
    module.register(app)


def main() -> None:
    """Console entry point: user mistakes become one line on stderr and exit code 2."""
    try:
        app(prog_name="unlearn-kb")
    except Interrupted as stopped:  # Ctrl-C / SIGTERM during training: a clean stop, not an error
        if os.environ.get("RANK", "0") == "0":  # under torchrun every process stops; one reports it
            print(f"stopped: {stopped}", file=sys.stderr)
        sys.exit(128 + stopped.signal_number)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - every error reaches the user through fail()
        fail(exc)
