"""Preflight: open what a run will need before any work, and refuse bad input up front.

``slimgate validate`` and the start of ``slimgate run`` call it, after the spec has loaded:

- the model file: an ONNX file must load in ONNX Runtime, a ``weights`` file must read as a
  ``state_dict`` of tensors (never unpickling anything else); errors name the user's path;
- the registry: reachable, its bucket present and writable (a create-only probe object that is
  removed again), or a local path that is, or can become, a folder;
- the cache location, the same way;
- an MLflow registry or tracking server: it answers its API (one try, 10 s), with the
  credentials in MLflow's environment.

Every problem is one line; registry and cache problems are bad input (exit 2), found before any
data is prepared or any model trained. The data itself is checked by the prepare step, first.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from components.errors import InputError, SlimgateError, first_line
from components.registry import MLFLOW_SCHEMES
from components.spec import FactoryModel, OnnxModel, Spec
from components.stores import FileStore, ObjectStore, S3Store, open_store

__all__ = ["PreflightError", "preflight", "probe_registry", "probe_store"]


class PreflightError(InputError):
    """One or more of the run's inputs cannot be used; one line per problem."""


def preflight(spec: Spec, runs_dir: Path) -> None:
    """Raise ``PreflightError`` naming every input the run could not use (after
    ``spec.missing_files()`` found every named file present)."""
    problems = _model(spec)
    problems += [f"registry: {p}" for p in probe_registry(spec.registry_uri())]
    if spec.tracking is not None:
        from components.mlflow_registry import probe

        problems += [
            f"tracking.mlflow: {p}" for p in probe(spec.tracking.mlflow, "experiments/search")
        ]
    cache = spec.cache_uri(runs_dir / "run")
    if cache is not None:
        problems += [f"cache.uri: {p}" for p in probe_store(open_store(cache))]
    if problems:
        raise PreflightError("\n".join(problems))


def _model(spec: Spec) -> list[str]:
    from components.models import load_state_dict
    from optimizers.onnx_utils import session

    source = spec.model  # (that the files exist, spec.missing_files() has said already)
    try:
        if isinstance(source, OnnxModel):
            session(spec.resolve(source.onnx), 1)
        elif isinstance(source, FactoryModel) and source.weights:
            load_state_dict(spec.resolve(source.weights))
    except SlimgateError as exc:
        first = first_line(exc)
        return [first if first.startswith("model.") else f"model.onnx: {first}"]
    return []


def probe_registry(uri: str) -> list[str]:
    """Why the registry at ``uri`` cannot be used: an object store must take a create-only
    write; an MLflow server must answer its registry API (a read: a token that may read but not
    write is found at the promote step)."""
    if uri.startswith(MLFLOW_SCHEMES):
        from components.mlflow_registry import probe

        return probe(uri)
    return probe_store(open_store(uri))


def probe_store(store: ObjectStore) -> list[str]:
    """Why the store cannot be written (empty: it can)."""
    if isinstance(store, FileStore):
        return _probe_folder(store.root)
    if isinstance(store, S3Store):
        key = f".slimgate-probe-{uuid.uuid4().hex}"
        try:
            if not store.create(key, b"probe"):
                return [f"{store.describe()}: a create-only probe write was refused"]
        except Exception as exc:  # (botocore raises more kinds than the store maps)
            first = first_line(exc)
            return [first if isinstance(exc, SlimgateError) else f"{store.describe()}: {first}"]
        with contextlib.suppress(Exception):  # a write-once bucket may deny deletes: fine
            store.delete(key)
        return []
    return []


def _probe_folder(root: Path) -> list[str]:
    if root.exists() and not root.is_dir():
        return [f"{root} is a file; give a folder (it is created if missing)"]
    existing = root
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return [f"{existing} is a file, so {root} cannot be created"]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"{existing} is not writable, so {root} cannot be written"]
    if root.is_dir():
        probe = root / f".slimgate-probe-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"probe")
        except OSError as exc:
            return [f"{root}: cannot write into it ({exc.strerror})"]
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
    return []
