"""The one base of every error the factory raises on purpose, and the exit code it means.

Each error knows how it speaks: `exit_code` (1 a broken environment or a failed run,
2 bad input) and `line()`, what the command line prints: one line naming the file,
field or service, what is wrong and what to do (a recipe with several bad fields: one
line each). `flows/errors.py` maps this base to its
line and code, so a new error class needs no edit there:

    class SeedError(BadInput, ValueError):      # exit 2; still caught as a ValueError
        ...
    raise SeedError("seeds.path: no file data/x.jsonl: write the path of a JSONL file")

A class keeps the built-in base its callers catch it by (ValueError, RuntimeError,
FileNotFoundError) beside this one. Left out: exceptions that never reach a person
(a `Rejected` sample, a backend's retry signal): those are control flow, not errors.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_FAILED = 1  # a failed run or a broken environment
EXIT_BAD_INPUT = 2  # bad input: nothing was written


class SynthError(Exception):
    """An error meant for the person at the command line; exit code 1 unless a subclass says."""

    exit_code: ClassVar[int] = EXIT_FAILED

    def line(self) -> str:
        """What to print: what is wrong, where, and what to do (the message, by default; a
        recipe with several bad fields lists one a line)."""
        return str(self)


class BadInput(SynthError):
    """A recipe, seed file, template, tree file or argument that cannot be used: exit code 2,
    raised before anything is written."""

    exit_code: ClassVar[int] = EXIT_BAD_INPUT
