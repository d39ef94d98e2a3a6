"""Errors that are the user's to fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


class UserError(Exception):
    """A mistake in what the user asked for or gave (a path, a value, a file); never a bug."""


class ConfigError(UserError):
    """A run setting the method does not have, or a value of the wrong type."""


class ModelLoadError(UserError):
    """A model path that does not exist or holds no model, or weights we refuse to load."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the registry, located as precisely as the input allows."""

    file: str
    message: str
    line: int | None = None
    record: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        parts = [where]
        if self.record:
            parts.append(f"record '{self.record}'")
        if self.field:
            parts.append(f"field '{self.field}'")
        return ": ".join(parts) + f": {self.message}"


class RegistryError(Exception):
    """The registry folder has problems; ``problems`` lists every one of them."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UnknownIdError(LookupError):
    """An id that names no record; the message suggests the closest ids."""

    def __init__(self, kind: str, wanted: str, known: Iterable[str]):
        close = difflib.get_close_matches(wanted, sorted(known), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"no {kind} '{wanted}'{hint}")


class TrainingError(UserError):
    """A run that diverged (a non-finite loss); the message names the step, the term and a remedy."""


class Interrupted(Exception):
    """A run stopped by Ctrl-C or SIGTERM after finishing its current step.

    ``checkpoint`` is where the run's state was saved (``None`` when the run could not save one);
    the CLI prints the message and exits with ``128 + signal`` (130 for Ctrl-C, 143 for SIGTERM).
    """

    def __init__(self, signal_name: str, signal_number: int, step: int, total: int, checkpoint: object | None):
        self.signal_name, self.signal_number = signal_name, signal_number
        self.step, self.total, self.checkpoint = step, total, checkpoint
        where = (f"its state is saved in {checkpoint}; continue with the same command plus "
                 f"--resume {checkpoint}" if checkpoint is not None else "no checkpoint was saved")
        super().__init__(f"interrupted by {signal_name} after step {step} of {total}; {where}")
