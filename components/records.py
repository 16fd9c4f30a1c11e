"""The typed records a run writes for the steps after it: what ran, the verdict, the promotion.

Each is a strict model (an unknown or mistyped field fails on read, rather than being taken
for missing evidence) written as JSON to the path :class:`components.layout.RunLayout` names
for it, and read back with ``Record.read(path)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict

from components.layout import read_json, write_json

__all__ = [
    "GoalRecord",
    "Promotion",
    "Record",
    "StepError",
    "StepRecord",
    "Verdict",
    "VerdictEntry",
]


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def read(cls, path: Path) -> Self:
        return cls.model_validate(read_json(path))

    def write(self, path: Path) -> None:
        """Atomically; fields never set are left out (a rejection has no version)."""
        write_json(path, self.model_dump(mode="json", exclude_unset=True))


class StepRecord(Record):
    """How one execution of a step ended: ``steps/<step>[.<item>].json``."""

    step: str
    item: str | None = None
    status: Literal["done", "skipped", "failed"]
    started: str
    seconds: float
    reason: str | None = None  # why it was skipped, or the error of a recorded failure
    value: Any = None  # what it hands on to later steps


class StepError(Record):
    """A failure the pipeline continued past (a candidate's or the search's ``error.json``)."""

    error: str
    type: str
    traceback: str | None = None


class GoalRecord(Record):
    """One goal decided for one candidate (:class:`validation.goals.GoalResult`, as written)."""

    goal: str
    metric: str
    comparison: Literal["<=", ">="]
    threshold: float
    value: float | None
    outcome: Literal["pass", "fail", "inconclusive"]
    reason: str
    bound: float | None = None
    confidence: float | None = None


class VerdictEntry(Record):
    """The gate's verdict on one candidate."""

    name: str
    recipe: str
    sha256: str | None
    outcome: Literal["pass", "fail", "inconclusive"]
    passed: bool
    goals: list[GoalRecord]
    size_bytes: int | None
    accuracy: float | None
    latency_p50_ms: float | None
    speedup: float | None
    error: str | None = None


class Verdict(Record):
    """``verdict.json``: every candidate on every goal, and the one selected (or none)."""

    policy: str
    selected: str | None
    reason: str
    goals: dict[str, Any]  # the spec's goals the verdict was reached on
    champion: int | None  # the production version candidates were compared with
    candidates: list[VerdictEntry]

    def entry(self, name: str) -> VerdictEntry | None:
        return next((c for c in self.candidates if c.name == name), None)


class Promotion(Record):
    """``promotion.json``: what the promote step did."""

    # refused: by the gate's record or the alias policy; failed: the registry could not be
    # written or read (damaged, unreachable, an alias that kept moving)
    status: Literal["promoted", "rejected", "refused", "failed"]
    reason: str | None = None  # why not, for a rejection, a refusal or a failure
    model: str | None = None
    version: int | None = None
    created: bool | None = None  # False: the same bytes were already a version
    alias: str | None = None
    previous: int | None = None
    registry: str | None = None
    candidate: str | None = None
