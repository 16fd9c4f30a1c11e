"""Errors that end a run, and the exit codes the CLI turns them into.

Exit codes of ``slimgate run``/``demo``:

- 0: a candidate met every goal and was promoted;
- 1: an unexpected error (a bug, a crash in a library, a full disk);
- 2: bad input: the spec, the data, a model file, or the command line;
- 3: rejected: no candidate met the goals; nothing was written to the registry, the report was kept.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "EXIT_ERROR",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_REJECTED",
    "AliasRefused",
    "DataError",
    "InputError",
    "ModelError",
    "PromotionRefused",
    "RegistryError",
    "RegistryInputError",
    "Rejected",
    "SlimgateError",
    "SpecError",
    "first_line",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INVALID = 2
EXIT_REJECTED = 3


class SlimgateError(Exception):
    """Base of the errors slimgate reports in one or a few lines, without a traceback."""

    exit_code: ClassVar[int] = EXIT_ERROR


class InputError(SlimgateError):
    """Something the user gave is wrong; the message says what, where, and what would be right."""

    exit_code: ClassVar[int] = EXIT_INVALID


class SpecError(InputError):
    """The spec file is malformed; one line per problem, each with its field path."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


class DataError(InputError):
    """The dataset is missing, unreadable, or fails a check."""


class ModelError(InputError):
    """A model file or factory cannot be loaded or does not fit the data."""


class RegistryError(SlimgateError):
    """The registry is unreachable, inconsistent, or refused a write."""


class RegistryInputError(InputError, RegistryError):
    """A registry request names something invalid or absent: a model name, a version, an alias."""


class PromotionRefused(SlimgateError):
    """Promotion was asked for a candidate without a passing verdict."""

    exit_code: ClassVar[int] = EXIT_REJECTED


class Rejected(PromotionRefused):
    """No candidate met every goal: nothing was promoted, the report was kept (exit code 3)."""


class AliasRefused(PromotionRefused):
    """The alias policy refused a move: the version was published and kept, production did not move."""


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (a library's often runs on for many), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
