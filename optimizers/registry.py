"""The one place where a recipe's string key becomes an optimizer class.

Built-in optimizers register with :func:`register`; out-of-tree optimizers arrive through the
``slimgate.optimizers`` entry-point group, whose entry names are the keys::

    [project.entry-points."slimgate.optimizers"]
    "myteam.prune_heads" = "myteam_slimgate.heads:PruneHeads"

A duplicate key raises, an unknown key raises with the list of known keys, and a plugin that
fails to import raises: nothing is skipped with only a log line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any, TypeVar

from optimizers.base import Optimizer, Stage

__all__ = [
    "ENTRY_POINT_GROUP",
    "OptimizerRegistryError",
    "available",
    "build",
    "check_order",
    "get",
    "register",
    "unregister",
]

ENTRY_POINT_GROUP = "slimgate.optimizers"
_KEY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")

_registry: dict[str, type[Optimizer[Any]]] = {}
_loaded = False

T = TypeVar("T", bound=type[Optimizer[Any]])


class OptimizerRegistryError(LookupError):
    """A key that is unknown, taken twice, malformed, or a plugin that cannot be loaded."""


def register(cls: T) -> T:
    """Class decorator that registers an optimizer under its ``key``.

    Raises:
        OptimizerRegistryError: the key is malformed or already registered.
    """
    key = getattr(cls, "key", None)
    if not isinstance(key, str) or not _KEY.match(key):
        raise OptimizerRegistryError(
            f"{cls.__qualname__}.key = {key!r}: expected a namespaced lowercase key "
            "such as 'quantization.dynamic_int8'"
        )
    existing = _registry.get(key)
    if existing is not None and existing is not cls:
        raise OptimizerRegistryError(
            f"optimizer key {key!r} is already registered by "
            f"{existing.__module__}.{existing.__qualname__}; "
            f"{cls.__module__}.{cls.__qualname__} cannot take it too"
        )
    for attr in ("config_class", "description"):
        if not hasattr(cls, attr):
            raise OptimizerRegistryError(f"{cls.__qualname__} does not set {attr!r}")
    _registry[key] = cls
    return cls


def unregister(key: str) -> None:
    """Remove a key (for tests that register a throwaway optimizer)."""
    _registry.pop(key, None)


def _ensure_loaded() -> None:
    global _loaded  # noqa: PLW0603 - one-time discovery, guarded by the flag
    if _loaded:
        return
    _loaded = True
    # The built-in techniques register on import; their heavy libraries load lazily.
    import optimizers.distillation
    import optimizers.features
    import optimizers.graph
    import optimizers.low_rank
    import optimizers.pruning
    import optimizers.quantization  # noqa: F401

    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = entry.load()
        except Exception as exc:
            raise OptimizerRegistryError(
                f"optimizer plugin {entry.name!r} ({entry.value}) failed to import: {exc}"
            ) from exc
        if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
            raise OptimizerRegistryError(
                f"optimizer plugin {entry.name!r} ({entry.value}) is not an Optimizer subclass"
            )
        if getattr(cls, "key", None) != entry.name:
            raise OptimizerRegistryError(
                f"optimizer plugin {entry.name!r} ({entry.value}) declares "
                f"key {getattr(cls, 'key', None)!r}; the entry-point name must equal the key"
            )
        register(cls)


def available() -> dict[str, type[Optimizer[Any]]]:
    """Every registered optimizer, built-in and plugin, by key."""
    _ensure_loaded()
    return dict(sorted(_registry.items()))


def get(key: str) -> type[Optimizer[Any]]:
    """The optimizer class registered under ``key``."""
    _ensure_loaded()
    try:
        return _registry[key]
    except KeyError:
        known = ", ".join(sorted(_registry)) or "(none)"
        raise OptimizerRegistryError(
            f"unknown optimizer {key!r}; known optimizers: {known}"
        ) from None


def build(key: str, config: Mapping[str, Any] | None = None) -> Optimizer[Any]:
    """Instantiate the optimizer ``key`` with a config given as a plain mapping."""
    return get(key)(config or {})


def check_order(steps: Sequence[Optimizer[Any]]) -> None:
    """Raise ValueError unless every torch-level step comes before every ONNX-level step."""
    seen_onnx: str | None = None
    for step in steps:
        if step.stage is Stage.ONNX:
            seen_onnx = seen_onnx or step.key
        elif seen_onnx is not None:
            raise ValueError(
                f"{step.key!r} works on the PyTorch model but comes after {seen_onnx!r}, "
                "which works on the exported ONNX file; put torch-level steps first"
            )
