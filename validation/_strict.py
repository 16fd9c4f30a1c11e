"""The base of every user-facing config model: frozen, and unknown keys name what is allowed."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = set(cls.model_fields) | {
                f.alias for f in cls.model_fields.values() if f.alias is not None
            }
            unknown = [str(k) for k in data if k not in allowed]
            if unknown:
                raise ValueError(
                    f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                    f"allowed: {', '.join(sorted(allowed))}"
                )
        return data
