"""The model registry: immutable versions, alias pointers and an event log, on any object store.

Layout (below ``file://PATH`` or ``s3://bucket/prefix``)::

    <model>/versions/<n>/claim.json, model.onnx, report.html, card.json   written once
    <model>/aliases/<alias>.json                                          {"version": n, "previous": m}
    <model>/events/<time>-<id>.json                                       who did what, and why

Publishing a version:

1. if a complete version already holds the same model bytes, return it (idempotent);
2. claim the next number with a create-only ``claim.json`` (a lost race takes the next one);
3. upload every file create-only, then read each back and check its sha256;
4. write ``card.json`` (with those checksums) last: its presence makes the version complete.

Readers list only complete versions, so they never see a half-written one, and a number once
claimed is never reused, even if its writer was killed. The alias then moves by compare-and-swap:
a lost race is reported (and retried by the promote step), never overwritten.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.errors import RegistryError
from components.stores import FileStore, ObjectStore, open_store, sha256_file

__all__ = ["AliasConflict", "FileRegistry", "Published", "Registry", "open_registry"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_RESERVED = ("card.json", "claim.json")


class AliasConflict(RegistryError):
    """The alias moved between reading it and swapping it."""


@dataclass(frozen=True)
class Published:
    version: int
    created: bool  # False when an identical model was already a version


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Registry:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def describe(self) -> str:
        return self.store.describe()

    # --- names ---------------------------------------------------------------------------------

    @staticmethod
    def _model(model: str) -> str:
        if not isinstance(model, str) or not _NAME.match(model):
            raise RegistryError(
                f"model name {model!r}: expected lowercase letters, digits, '.', '_' or '-' "
                "(at most 64, starting with a letter or digit)"
            )
        return model

    def _version_key(self, model: str, version: int, name: str = "") -> str:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise RegistryError(f"version {version!r}: expected a positive integer")
        return f"{self._model(model)}/versions/{version}/{name}"

    def _alias_key(self, model: str, alias: str) -> str:
        if not _ALIAS.match(alias):
            raise RegistryError(f"alias {alias!r}: expected lowercase letters, digits, '_' or '-'")
        return f"{self._model(model)}/aliases/{alias}.json"

    # --- reading -------------------------------------------------------------------------------

    def models(self) -> list[str]:
        found = set()
        for key in self.store.keys(""):
            parts = key.split("/")
            if len(parts) == 4 and parts[1] == "versions" and parts[3] == "card.json":
                found.add(parts[0])
        return sorted(found)

    def _numbers(self, model: str, *, complete: bool) -> list[int]:
        marker = "card.json" if complete else "claim.json"
        out = set()
        for key in self.store.keys(f"{self._model(model)}/versions/"):
            parts = key.split("/")
            if len(parts) == 4 and parts[2].isdigit() and parts[3] == marker:
                out.add(int(parts[2]))
        return sorted(out)

    def versions(self, model: str) -> list[int]:
        """Complete versions only: a version without its card is still being written (or dead)."""
        return self._numbers(model, complete=True)

    def card(self, model: str, version: int) -> dict[str, Any]:
        found = self.store.read(self._version_key(model, version, "card.json"))
        if found is None:
            raise RegistryError(f"{model} version {version} not found in {self.describe()}")
        card: dict[str, Any] = json.loads(found[0])
        return card

    def alias(self, model: str, alias: str = "production") -> dict[str, Any] | None:
        found = self.store.read(self._alias_key(model, alias))
        return None if found is None else dict(json.loads(found[0]))

    def events(self, model: str) -> list[dict[str, Any]]:
        out = []
        for key in self.store.keys(f"{self._model(model)}/events/"):
            found = self.store.read(key)
            if found is not None:
                out.append(json.loads(found[0]))
        return out

    def verify(self, model: str, version: int) -> None:
        """Raise unless every file of the version matches the checksum its card recorded."""
        for name, digest in self.card(model, version)["files"].items():
            if self.store.digest(self._version_key(model, version, name)) != digest:
                raise RegistryError(
                    f"{model} version {version}: {name} does not match its checksum"
                )

    def download(self, model: str, version: int, dest: Path) -> list[Path]:
        """Copy a version's files into ``dest``, checking each checksum; nothing is kept on a mismatch."""
        card = self.card(model, version)
        dest.mkdir(parents=True, exist_ok=True)
        written = []
        try:
            for name, digest in card["files"].items():
                path = dest / name
                self.store.fetch(self._version_key(model, version, name), path)
                written.append(path)
                if sha256_file(path) != digest:
                    raise RegistryError(
                        f"{model} version {version}: downloaded {name} does not match its checksum"
                    )
            (dest / "card.json").write_bytes(_json(card))
            written.append(dest / "card.json")
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return written

    def diff(self, model: str, a: int, b: int) -> dict[str, Any]:
        """What changed from version ``a`` to version ``b``: metrics, lineage, files."""
        ca, cb = self.card(model, a), self.card(model, b)
        metrics = {}
        for key in sorted(set(ca.get("metrics", {})) | set(cb.get("metrics", {}))):
            va, vb = ca.get("metrics", {}).get(key), cb.get("metrics", {}).get(key)
            if va != vb and not isinstance(va, dict | list):
                metrics[key] = {"from": va, "to": vb}
        lineage = {
            key: {"from": ca.get("lineage", {}).get(key), "to": cb.get("lineage", {}).get(key)}
            for key in sorted(set(ca.get("lineage", {})) | set(cb.get("lineage", {})))
            if key != "data_profile"
            and ca.get("lineage", {}).get(key) != cb.get("lineage", {}).get(key)
        }
        files = {
            name: {"from": ca["files"].get(name), "to": cb["files"].get(name)}
            for name in sorted(set(ca["files"]) | set(cb["files"]))
            if ca["files"].get(name) != cb["files"].get(name)
        }
        return {
            "model": model,
            "from": a,
            "to": b,
            "metrics": metrics,
            "lineage": lineage,
            "files": files,
        }

    # --- writing -------------------------------------------------------------------------------

    def publish(
        self,
        model: str,
        files: Mapping[str, Path],
        card: Mapping[str, Any],
        *,
        run_id: str | None = None,
    ) -> Published:
        """Write a new immutable version holding ``files`` (``model.onnx`` among them) and ``card``."""
        self._model(model)
        if "model.onnx" not in files:
            raise RegistryError("a version needs a model.onnx")
        for name in files:
            if name in _RESERVED or not _FILE.match(name):
                raise RegistryError(f"file name {name!r} is not allowed in a version")
        digests = {name: sha256_file(path) for name, path in files.items()}
        for v in reversed(self.versions(model)):
            if self.card(model, v).get("files", {}).get("model.onnx") == digests["model.onnx"]:
                self._event(model, "publish", version=v, created=False, run_id=run_id,
                            reason="identical model bytes are already this version")  # fmt: skip
                return Published(v, created=False)

        number = self._claim(model, run_id)
        try:
            for name, path in files.items():
                key = self._version_key(model, number, name)
                if not self.store.create(key, path):
                    raise RegistryError(f"{self.describe()}/{key} already exists")
                if self.store.digest(key) != digests[name]:
                    raise RegistryError(f"{name} changed on its way into {self.describe()}")
            complete = {**card, "files": digests}
            if not self.store.create(
                self._version_key(model, number, "card.json"), _json(complete)
            ):
                raise RegistryError(f"{model} version {number} was completed by someone else")
        except BaseException:
            self._abandon(model, number, list(files))
            raise
        self._event(model, "publish", version=number, created=True, run_id=run_id)
        return Published(number, created=True)

    def _claim(self, model: str, run_id: str | None) -> int:
        claim = _json({"owner": uuid.uuid4().hex, "run_id": run_id, "user": _user(),
                       "time": datetime.now(UTC).isoformat()})  # fmt: skip
        number = max(self._numbers(model, complete=False), default=0) + 1
        for _ in range(1000):
            if self.store.create(self._version_key(model, number, "claim.json"), claim):
                return number
            number += 1  # another writer claimed it first
        raise RegistryError(f"could not claim a version number of {model} in {self.describe()}")

    def _abandon(self, model: str, number: int, names: list[str]) -> None:
        """Best effort: remove the files of a version that will never be complete.

        The claim stays, so the number is never reused; readers ignore a version without a card.
        """
        for name in names:
            with contextlib.suppress(Exception):  # cleanup must not hide the original error
                self.store.delete(self._version_key(model, number, name))

    def move_alias(
        self,
        model: str,
        version: int,
        *,
        alias: str = "production",
        expected: int | None,
        reason: str,
        run_id: str | None = None,
        action: str = "move_alias",
    ) -> dict[str, Any]:
        """Point ``alias`` at ``version`` if it still points at ``expected`` (None: unset).

        Raises:
            AliasConflict: someone moved the alias since ``expected`` was read.
        """
        self.verify(model, version)
        key = self._alias_key(model, alias)
        found = self.store.read(key)
        current = json.loads(found[0]) if found else None
        current_version = current["version"] if current else None
        if current_version != expected:
            raise AliasConflict(
                f"{model}@{alias} points at version {current_version}, expected {expected}"
            )
        pointer = {"version": version, "previous": current_version}
        if not self.store.swap(key, _json(pointer), found[1] if found else None):
            self._event(
                model,
                "alias_conflict",
                alias=alias,
                version=version,
                expected=expected,
                run_id=run_id,
            )
            raise AliasConflict(f"{model}@{alias} moved while version {version} was being aliased")
        self._event(model, action, alias=alias, version=version, previous=current_version,
                    reason=reason, run_id=run_id)  # fmt: skip
        return pointer

    def rollback(self, model: str, *, alias: str = "production", reason: str) -> dict[str, Any]:
        """Move ``alias`` back to the version it pointed at before, recording who and why."""
        pointer = self.alias(model, alias)
        if pointer is None:
            raise RegistryError(f"{model} has no {alias!r} alias to roll back")
        previous = pointer.get("previous")
        if previous is None:
            raise RegistryError(
                f"{model}@{alias} is at version {pointer['version']}, its first; nothing to roll back to"
            )
        return self.move_alias(model, previous, alias=alias, expected=pointer["version"],
                               reason=reason, action="rollback")  # fmt: skip

    def _event(self, model: str, action: str, **fields: Any) -> None:
        now = datetime.now(UTC)
        event = {"time": now.isoformat(), "action": action, "model": model, "user": _user(),
                 "host": socket.gethostname(), **fields}  # fmt: skip
        name = f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex[:8]}.json"
        self.store.create(f"{self._model(model)}/events/{name}", _json(event))


class FileRegistry(Registry):
    """A registry in a local folder."""

    def __init__(self, root: Path) -> None:
        super().__init__(FileStore(root))
        self.root = root

    def file(self, model: str, version: int, name: str) -> Path:
        """The local path of one file of a version."""
        if not _FILE.match(name):
            raise RegistryError(f"file name {name!r} is not allowed")
        path = self.root / self._version_key(model, version, name)
        if not path.is_file():
            raise RegistryError(f"{model} version {version} has no {name} in {self.root}")
        return path


def open_registry(uri: str) -> Registry:
    """The registry at ``s3://bucket/prefix``, ``file://PATH`` or a plain path."""
    store = open_store(uri)
    if isinstance(store, FileStore):
        return FileRegistry(store.root)
    return Registry(store)
