"""``python -m unlearn_kb`` (and ``accelerate launch -m unlearn_kb``) runs the CLI."""

from unlearn_kb.cli import main

main()
