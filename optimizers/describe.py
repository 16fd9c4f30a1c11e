"""What an optimizer's config accepts, read from the config class itself: every field with its
type, allowed values, bounds, default and description (``slimgate optimizers show KEY``).

Plugins get it for free: a field documents itself with ``Field(description=...)``.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic.fields import FieldInfo

from optimizers.base import Optimizer, OptimizerConfig

__all__ = ["FieldDoc", "config_fields", "describe"]


@dataclass(frozen=True)
class FieldDoc:
    name: str
    type: str  # "float", "int or none", "one of: minmax, entropy, percentile", ...
    bounds: str  # "> 0, <= 1" or ""
    default: str  # "0.5", "none", "required"
    description: str


def _type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is tuple:
        return f"list of {_type(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type):
        return {"bool": "true/false", "str": "text"}.get(annotation.__name__, annotation.__name__)
    return re.sub(r"\btyping\.", "", str(annotation))


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "at least"),
           ("max_length", "at most"), ("pattern", "matching"))  # fmt: skip


def _bounds(info: FieldInfo) -> str:
    out = []
    for item in info.metadata:
        for attr, sign in _BOUNDS:
            value = getattr(item, attr, None)
            if value is not None:
                shown = f"{value:g}" if isinstance(value, float) else str(value)
                out.append(f"{sign} {shown}" + (" items" if attr.endswith("length") else ""))
    return ", ".join(out)


def _default(info: FieldInfo) -> str:  # noqa: PLR0911 - one return per kind of value
    if info.is_required():
        return "required"
    try:
        value = info.get_default(call_default_factory=True)
    except Exception:  # a default computed from the other fields
        return "computed"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_fields(config_class: type[OptimizerConfig]) -> list[FieldDoc]:
    """Every field of ``config_class``, in declaration order."""
    return [
        FieldDoc(
            name, _type(info.annotation), _bounds(info), _default(info), info.description or ""
        )
        for name, info in config_class.model_fields.items()
    ]


def describe(cls: type[Optimizer[Any]]) -> str:
    """The text of ``slimgate optimizers show``: what the optimizer does, where it applies,
    and every config field."""
    import inspect

    doc = inspect.cleandoc(cls.config_class.__doc__ or "")
    lines = [
        f"{cls.key} (stage {cls.stage.value}, version {cls.version})",
        f"  {cls.description}",
        f"  tasks: {', '.join(sorted(cls.tasks))}",
    ]
    if doc and doc != inspect.cleandoc(OptimizerConfig.__doc__ or ""):
        lines += ["", *("  " + line if line else "" for line in doc.splitlines())]
    fields = config_fields(cls.config_class)
    lines.append("")
    if not fields:
        lines.append("  no config fields")
        return "\n".join(lines)
    example = f"{fields[0].name}: {fields[0].default if fields[0].default != 'required' else '...'}"
    lines.append(f"  config fields (in a recipe: {{{cls.key}: {{{example}}}}}):")
    for f in fields:
        kind = f.type + (f" ({f.bounds})" if f.bounds else "")
        lines.append(f"    {f.name}: {kind}; default {f.default}")
        if f.description:
            lines.append(f"        {f.description}")
    return "\n".join(lines)
