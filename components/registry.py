"""A model registry on the local file system.

Layout::

    <root>/<model>/versions/<n>/model.onnx, card.json, report.html   written once, never changed
    <root>/<model>/aliases/<alias>.json                                {"version": n, "previous": m}
    <root>/<model>/events/<time>-<id>.json                             who moved what, and why

A version is assembled in a private staging folder, its checksums verified, and only then
renamed to ``versions/<n>``: a rename is atomic, and renaming onto an existing version fails,
so readers never see a half-written version and two writers never share a number. The alias
moves last, by compare-and-swap under a lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.errors import RegistryError
from components.layout import write_json

__all__ = ["AliasConflict", "FileRegistry", "Published"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class AliasConflict(RegistryError):
    """The alias moved between reading it and swapping it."""


@dataclass(frozen=True)
class Published:
    version: int
    created: bool  # False when an identical model was already a version


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class FileRegistry:
    """Immutable model versions, alias pointers and an event log under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # --- names ---------------------------------------------------------------------------------

    def _model_dir(self, model: str) -> Path:
        if not _NAME.match(model):
            raise RegistryError(
                f"model name {model!r}: expected lowercase letters, digits, '.', '_' or '-' "
                "(at most 64, starting with a letter or digit)"
            )
        return self.root / model

    def _version_dir(self, model: str, version: int) -> Path:
        if not isinstance(version, int) or version < 1:
            raise RegistryError(f"version {version!r}: expected a positive integer")
        return self._model_dir(model) / "versions" / str(version)

    def _alias_path(self, model: str, alias: str) -> Path:
        if not _ALIAS.match(alias):
            raise RegistryError(f"alias {alias!r}: expected lowercase letters, digits, '_' or '-'")
        return self._model_dir(model) / "aliases" / f"{alias}.json"

    # --- reading -------------------------------------------------------------------------------

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "versions").is_dir())

    def versions(self, model: str) -> list[int]:
        vdir = self._model_dir(model) / "versions"
        if not vdir.is_dir():
            return []
        return sorted(int(p.name) for p in vdir.iterdir() if p.name.isdigit())

    def card(self, model: str, version: int) -> dict[str, Any]:
        path = self._version_dir(model, version) / "card.json"
        if not path.is_file():
            raise RegistryError(f"{model} version {version} not found in {self.root}")
        card: dict[str, Any] = json.loads(path.read_text())
        return card

    def alias(self, model: str, alias: str = "production") -> dict[str, Any] | None:
        path = self._alias_path(model, alias)
        if not path.is_file():
            return None
        pointer: dict[str, Any] = json.loads(path.read_text())
        return pointer

    def events(self, model: str) -> list[dict[str, Any]]:
        edir = self._model_dir(model) / "events"
        if not edir.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(edir.glob("*.json"))]

    def file(self, model: str, version: int, name: str) -> Path:
        """The path of one file of a version (``model.onnx``, ``card.json``, ``report.html``)."""
        if "/" in name or name in ("", ".", ".."):
            raise RegistryError(f"file name {name!r} is not allowed")
        path = self._version_dir(model, version) / name
        if not path.is_file():
            raise RegistryError(f"{model} version {version} has no {name} in {self.root}")
        return path

    def verify(self, model: str, version: int) -> None:
        """Raise unless every file of the version matches the checksum its card recorded."""
        vdir = self._version_dir(model, version)
        for name, digest in self.card(model, version)["files"].items():
            if _sha256(vdir / name) != digest:
                raise RegistryError(
                    f"{model} version {version}: {name} does not match its checksum"
                )

    # --- writing -------------------------------------------------------------------------------

    def publish(self, model: str, files: Mapping[str, Path], card: Mapping[str, Any]) -> Published:
        """Write a new immutable version holding ``files`` (``model.onnx`` among them) and ``card``.

        Idempotent: if a version already holds a ``model.onnx`` with the same bytes, that
        version is returned and nothing is written.
        """
        if "model.onnx" not in files:
            raise RegistryError("a version needs a model.onnx")
        mdir = self._model_dir(model)
        digests = {name: _sha256(path) for name, path in files.items()}
        for v in reversed(self.versions(model)):
            existing = self.card(model, v)
            if existing.get("files", {}).get("model.onnx") == digests["model.onnx"]:
                return Published(v, created=False)

        staging = mdir / ".staging" / uuid.uuid4().hex
        staging.mkdir(parents=True)
        try:
            for name, path in files.items():
                if "/" in name or name in ("card.json", "", ".", ".."):
                    raise RegistryError(f"file name {name!r} is not allowed in a version")
                shutil.copyfile(path, staging / name)
                if _sha256(staging / name) != digests[name]:
                    raise RegistryError(f"{name} changed while it was copied into the registry")
            full_card = {**card, "files": digests}
            (staging / "card.json").write_text(json.dumps(full_card, indent=2, default=str) + "\n")
            for f in staging.iterdir():
                _fsync(f)
            return Published(self._claim(mdir, staging), created=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _claim(self, mdir: Path, staging: Path) -> int:
        vdir = mdir / "versions"
        vdir.mkdir(parents=True, exist_ok=True)
        for _ in range(1000):
            taken = [int(p.name) for p in vdir.iterdir() if p.name.isdigit()]
            number = max(taken, default=0) + 1
            try:
                os.rename(staging, vdir / str(number))  # atomic; fails if the number is taken
            except OSError:
                continue  # another writer claimed it first: take the next number
            _fsync(vdir)
            return number
        raise RegistryError(f"could not claim a version number under {vdir}")

    def move_alias(
        self,
        model: str,
        version: int,
        *,
        alias: str = "production",
        expected: int | None,
        reason: str,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Point ``alias`` at ``version`` if it still points at ``expected`` (None: unset).

        Raises:
            AliasConflict: someone moved the alias since ``expected`` was read.
        """
        self.verify(model, version)
        path = self._alias_path(model, alias)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.parent / ".lock"):
            current = self.alias(model, alias)
            current_version = current["version"] if current else None
            if current_version != expected:
                raise AliasConflict(
                    f"{model}@{alias} points at version {current_version}, expected {expected}"
                )
            pointer = {"version": version, "previous": current_version}
            write_json(path, pointer)
        self._event(model, "move_alias", alias=alias, version=version,
                    previous=current_version, reason=reason, run_id=run_id)  # fmt: skip
        return pointer

    def _event(self, model: str, action: str, **fields: Any) -> None:
        now = datetime.now(UTC)
        event = {
            "time": now.isoformat(),
            "action": action,
            "model": model,
            "user": _user(),
            "host": socket.gethostname(),
            **fields,
        }
        edir = self._model_dir(model) / "events"
        edir.mkdir(parents=True, exist_ok=True)
        name = f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex[:8]}.json"
        with (edir / name).open("x") as f:
            json.dump(event, f, indent=2, default=str)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
