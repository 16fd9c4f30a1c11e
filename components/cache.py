"""A content-addressed cache of finished work: trained baselines, built candidates, measurements.

An entry is named by the sha256 of everything that determines its files, so a re-run with
unchanged inputs finds it, and any change (data, recipe, optimizer version, library versions,
benchmark settings, hardware) misses it. Three kinds:

- ``baseline``: the trained and exported baseline. Key: model source (and the bytes of any file
  it names), training settings, data fingerprint, library versions.
- ``candidate``: a recipe's output model. Key: the parent model's bytes, each step's key,
  version and config, data fingerprint, seed, target, library versions.
- ``measurements``: accuracy, predictions, benchmark and comparison of one model. Key: the
  model's bytes, the baseline it was compared with, data fingerprint, target, benchmark
  settings, and the CPU and ONNX Runtime that measured it.

The cache lives in a local folder (``<runs dir>/.cache`` by default) or under an S3 prefix,
through the same object stores as the registry. An entry is written as files under a fresh
prefix and then ``entry.json``, create-only, which lists every file's sha256: readers see a
whole entry or none, and concurrent writers of one key cannot mix their files. Restored files
are checked against their sha256. The cache only saves time: a store that cannot be reached
or an entry that fails its check is logged and the work is done again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from components.errors import SlimgateError
from components.stores import ObjectStore, open_store, sha256_file

if TYPE_CHECKING:
    from components.spec import Candidate, Spec

__all__ = [
    "CACHE_FORMAT",
    "ArtifactCache",
    "CacheHit",
    "baseline_inputs",
    "candidate_inputs",
    "digest",
    "library_versions",
    "measurement_inputs",
    "open_cache",
    "reuse_or_make",
]

_logger = logging.getLogger(__name__)

# Bumped whenever slimgate's own code would turn the same inputs into different files.
# 2: measurements record the load they were taken under (older ones were never checked).
CACHE_FORMAT = 2

Kind = Literal["baseline", "candidate", "measurements"]


def digest(inputs: dict[str, Any]) -> str:
    """The key: sha256 of the inputs as canonical JSON."""
    text = json.dumps({"format": CACHE_FORMAT, **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def library_versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


@dataclass(frozen=True)
class CacheHit:
    """Where a restored entry came from."""

    kind: str
    key: str
    store: str
    run_id: str | None
    created: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"hit": True, "kind": self.kind, "key": self.key, "store": self.store,
                "from_run": self.run_id, "created": self.created}  # fmt: skip


class ArtifactCache:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @classmethod
    def open(cls, uri: str) -> ArtifactCache:
        return cls(open_store(uri))

    def describe(self) -> str:
        return self.store.describe()

    @staticmethod
    def _root(kind: Kind, key: str) -> str:
        return f"{kind}/{key[:2]}/{key}"

    def restore(self, kind: Kind, key: str, dest: Path) -> CacheHit | None:
        """Copy the entry's files into ``dest``; None (and ``dest`` untouched) on a miss."""
        root = self._root(kind, key)
        try:
            found = self.store.read(f"{root}/entry.json")
            if found is None:
                return None
            entry = json.loads(found[0])
            dest.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=dest, prefix=".restore-") as tmp:
                for name, sha in entry["files"].items():
                    local = Path(tmp) / name
                    self.store.fetch(f"{root}/{entry['prefix']}/{name}", local)
                    if sha256_file(local) != sha:
                        _logger.warning("cache entry %s/%s: %s fails its sha256; ignored",
                                        self.describe(), root, name)  # fmt: skip
                        return None
                for name in entry["files"]:
                    (Path(tmp) / name).replace(dest / name)
        except (SlimgateError, OSError, ValueError, KeyError) as exc:
            _logger.warning("cache %s unusable, doing the work instead: %s", self.describe(), exc)
            return None
        _logger.info("reused %s %s from %s", kind, key[:12], self.describe())
        return CacheHit(kind, key, self.describe(), entry.get("run_id"), entry.get("created"))

    def save(
        self,
        kind: Kind,
        key: str,
        src: Path,
        names: list[str],
        *,
        run_id: str,
        inputs: dict[str, Any],
    ) -> bool:
        """Store ``names`` from ``src`` under ``key``; False if the entry exists or the store failed."""
        root = self._root(kind, key)
        prefix = secrets.token_hex(8)
        try:
            files = {}
            for name in names:
                path = src / name
                files[name] = sha256_file(path)
                self.store.create(f"{root}/{prefix}/{name}", path)
            entry = {"kind": kind, "key": key, "prefix": prefix, "files": files, "run_id": run_id,
                     "created": datetime.now(UTC).isoformat(timespec="seconds"), "inputs": inputs}  # fmt: skip
            created = self.store.create(
                f"{root}/entry.json", json.dumps(entry, indent=2, default=str).encode()
            )
        except (SlimgateError, OSError) as exc:
            _logger.warning(
                "cache %s: could not store %s %s: %s", self.describe(), kind, key[:12], exc
            )
            return False
        if not created:  # another run finished the same work first; its entry stands
            for name in names:
                self.store.delete(f"{root}/{prefix}/{name}")
        return created

    def entries(self) -> list[dict[str, Any]]:
        """Every complete entry: kind, key, run, created, files, bytes (from entry.json)."""
        out = []
        for key in self.store.keys(""):
            if not key.endswith("/entry.json"):
                continue
            found = self.store.read(key)
            if found is None:
                continue
            entry = json.loads(found[0])
            entry.pop("inputs", None)
            out.append(entry)
        return sorted(out, key=lambda e: (e.get("created") or "", e["key"]))

    def prune(self, older_than: timedelta) -> list[dict[str, Any]]:
        """Remove entries created more than ``older_than`` ago; returns them.

        ``entry.json`` goes first, so a reader sees a miss, never an entry without its files.
        A run restoring the entry at that moment fails its sha256 check and does the work.
        """
        cutoff = datetime.now(UTC) - older_than
        removed = []
        for entry in self.entries():
            if datetime.fromisoformat(entry["created"]) >= cutoff:
                continue
            root = self._root(entry["kind"], entry["key"])
            self.store.delete(f"{root}/entry.json")
            for key in self.store.keys(f"{root}/"):
                self.store.delete(key)
            removed.append(entry)
        return removed


def reuse_or_make(
    cache: ArtifactCache | None,
    kind: Kind,
    inputs: dict[str, Any],
    dest: Path,
    make: Callable[[], list[str]],
    *,
    run_id: str,
    unfit: Callable[[], str | None] = lambda: None,
) -> dict[str, Any]:
    """Restore the entry for ``inputs`` into ``dest``, or call ``make`` (which writes the files
    it names into ``dest``) and store them, unless ``unfit()`` gives a reason not to (a
    measurement taken under competing load). Returns the record kept in the run's cache.json."""
    if cache is None:
        make()
        return {"hit": False, "kind": kind, "cache": "off"}
    key = digest(inputs)
    hit = cache.restore(kind, key, dest)
    if hit is not None:
        return hit.to_dict()
    names = make()
    record = {"hit": False, "kind": kind, "key": key, "store": cache.describe()}
    reason = unfit()
    if reason is not None:
        _logger.warning("not caching %s %s: %s", kind, key[:12], reason)
        return {**record, "stored": False, "not_stored": reason}
    stored = cache.save(kind, key, dest, names, run_id=run_id, inputs=inputs)
    return {**record, "stored": stored}


def open_cache(spec: Spec, run_dir: Path) -> ArtifactCache | None:
    """The spec's cache, or None when caching is off."""
    uri = spec.cache_uri(run_dir)
    return None if uri is None else ArtifactCache.open(uri)


# --- what determines each kind of entry ------------------------------------------------------


def baseline_inputs(spec: Spec, fingerprint: str) -> dict[str, Any]:
    from components.spec import BuiltinModel, FactoryModel, HuggingFaceModel, OnnxModel

    source = spec.model
    inputs: dict[str, Any] = {
        "kind": "baseline",
        "source": source.model_dump(),
        "data": fingerprint,
    }
    if isinstance(source, OnnxModel):
        path = spec.resolve(source.onnx)
        inputs["source_sha256"] = sha256_file(path) if path.is_file() else None
        if path.is_file():
            from optimizers.onnx_utils import external_files

            if external := external_files(path):
                inputs["external_sha256"] = {
                    str(f.relative_to(path.parent)): sha256_file(f) if f.is_file() else None
                    for f in external
                }
        return inputs
    if isinstance(source, HuggingFaceModel):
        folder = spec.resolve(source.huggingface)
        inputs["source_sha256"] = {str(f.relative_to(folder)): sha256_file(f)
                                   for f in sorted(folder.rglob("*")) if f.is_file()}  # fmt: skip
        inputs["libraries"] = library_versions("torch", "onnx", "numpy", "transformers")
        return inputs
    if isinstance(source, FactoryModel) and source.weights:
        path = spec.resolve(source.weights)
        inputs["weights_sha256"] = sha256_file(path) if path.is_file() else None
    if isinstance(source, BuiltinModel | FactoryModel):
        inputs["training"] = spec.training.model_dump()
        inputs["libraries"] = library_versions("torch", "onnx", "numpy")
    return inputs


def _scoring(spec: Spec) -> dict[str, Any]:
    """What turns a model's outputs into what is judged: the task, the scored output, pooling."""
    return {"task": spec.task, "output": spec.scored_output, "pooling": spec.embedding.pooling}


def candidate_inputs(
    spec: Spec, fingerprint: str, parent: dict[str, str], cand: Candidate
) -> dict[str, Any]:
    """``parent``: sha256 of the baseline files the recipe reads (model.onnx, model.pt)."""
    return {
        "kind": "candidate",
        "parent": parent,
        "recipe": [json.loads(step.build().config_json()) for step in cand.steps],
        "data": fingerprint,
        "seed": spec.training.seed,
        "scoring": _scoring(spec),  # fine-tuning's loss depends on the task
        "target": {"device": spec.target.device, "provider": spec.target.provider},
        "libraries": library_versions("torch", "torch-pruning", "onnx", "onnxruntime", "numpy"),
    }


def measurement_inputs(
    spec: Spec, fingerprint: str, model_sha: str, baseline_sha: str | None
) -> dict[str, Any]:
    from components.hardware import cpu_info

    cpu = cpu_info()
    return {
        "kind": "measurements",
        "model": model_sha,
        "baseline": baseline_sha,
        "data": fingerprint,
        "target": spec.target.model_dump(),
        # the load limit and the wait for quiet decide whether and when, not what, it measures
        "benchmark": spec.benchmark.model_dump(exclude={"max_competing_cores", "settle_seconds"}),
        "speed_batch": spec.speed_batch(),
        "scoring": _scoring(spec),
        "hardware": {"cpu": cpu.model, "logical_cores": cpu.logical_cores},
        "libraries": library_versions("onnxruntime", "numpy"),
    }
