"""The model registry: immutable versions, alias pointers and an event log, on any object store.

Layout (below ``file://PATH`` or ``s3://bucket/prefix``)::

    <model>/versions/<n>/claim.json, model.onnx, report.html, card.json   written once
    <model>/versions/<n>/abandoned.json                                   a claim gc removed
    <model>/aliases/<alias>.json                                          the pointer (below)
    <model>/events/<time>-<id>.json                                       who did what, and why

Publishing a version:

1. if an intact version already holds the same model bytes, return it (idempotent);
2. claim the next number with a create-only ``claim.json`` (a lost race takes the next one);
3. upload every file create-only, then read each back and check its sha256;
4. write ``card.json`` (with those checksums and its publish event) last: its presence makes
   the version complete; then write the event.

A create that finds its own bytes already there (the retry of a write whose reply was lost) is a
success, and nothing a complete version needs is ever deleted. Readers list only complete
versions, and a number once claimed is never reused, even if its writer was killed.

The alias moves by compare-and-swap under a policy (see ``move_alias``): forward only, to a
version newer than the one it replaces, unless the move is a rollback; a lost race is re-read and
re-decided with jittered backoff up to a deadline, and a refusal or a give-up is an event.

The event log is complete by construction: each card and each alias pointer carries the event
that made it, written right after it. A writer killed in between leaves an event owed, which the
next write (or ``check``) writes, byte for byte the one that was meant.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import random
import re
import shutil
import socket
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from components.errors import AliasRefused, RegistryError, RegistryInputError
from components.stores import FileStore, KeyMissing, ObjectStore, open_store, sha256_file

__all__ = [
    "AliasConflict",
    "Check",
    "FileRegistry",
    "ModelRegistry",
    "Pointer",
    "Published",
    "Registry",
    "VersionState",
    "open_registry",
    "store_registry",
]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_RESERVED = ("card.json", "claim.json", "abandoned.json")

#: Registry URIs that name an MLflow Model Registry (the tracking server's).
MLFLOW_SCHEMES = ("mlflow://", "mlflow+https://")
#: How long a move of the alias waits out contention before it gives up (seconds).
DEADLINE_S = 120.0
#: gc never collects a claim younger than this: its writer may still be uploading.
MIN_GC_AGE = timedelta(hours=1)


class AliasConflict(RegistryError):
    """The alias kept moving until the deadline: the version was published, not aliased."""


class _Unreadable(RegistryError):
    """A card or pointer is there but is not JSON of the expected shape."""


@dataclass(frozen=True)
class Published:
    version: int
    created: bool  # False when an intact version already held the same model bytes


@dataclass(frozen=True)
class Pointer:
    """What an alias points at, and the history the policy is decided on.

    ``history`` lists the versions the alias held, oldest first, rolled-back ones removed;
    ``withdrawn`` the versions a rollback moved away from (never aliased by a promotion again);
    ``serial`` counts the pointer's writes and ``rollback_serial`` is the serial of the last
    rollback (0: none), so a promotion can tell whether production was rolled back after it
    looked. ``event`` is the event that made this pointer.
    """

    version: int
    previous: int | None = None
    serial: int = 0
    mode: str = "promote"
    history: tuple[int, ...] = ()
    withdrawn: tuple[int, ...] = ()
    rollback_serial: int = 0
    event: dict[str, Any] | None = None

    @classmethod
    def parse(cls, data: bytes, where: str) -> Pointer:
        try:
            raw = json.loads(data)
            version = int(raw["version"])
            previous = raw.get("previous")
            history = tuple(int(v) for v in raw.get("history", ()))
            withdrawn = tuple(int(v) for v in raw.get("withdrawn", ()))
            mode = str(raw.get("mode", "promote"))
            if not history:  # a pointer written before the history was kept
                if previous is not None and int(previous) > version:  # an old rollback
                    history, withdrawn, mode = (version,), (int(previous),), "rollback"
                else:
                    history = tuple(int(v) for v in (previous, version) if v is not None)
            return cls(
                version=version,
                previous=None if previous is None else int(previous),
                serial=int(raw.get("serial", 0)),
                mode=mode,
                history=history,
                withdrawn=withdrawn,
                rollback_serial=int(raw.get("rollback_serial", 0)),
                event=raw.get("event"),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise _Unreadable(f"{where} is not an alias pointer: {exc}") from None

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "previous": self.previous,
            "serial": self.serial,
            "mode": self.mode,
            "history": list(self.history),
            "withdrawn": list(self.withdrawn),
            "rollback_serial": self.rollback_serial,
            "event": self.event,
        }


@dataclass(frozen=True)
class VersionState:
    """One claimed version number as ``list`` and ``check`` see it."""

    version: int
    state: str  # "ok", "damaged", "incomplete" (claimed, no card) or "abandoned" (gc'd)
    problems: tuple[str, ...] = ()
    card: dict[str, Any] | None = None
    claim: dict[str, Any] | None = None
    aliases: tuple[str, ...] = ()
    rehashed: bool = False


@dataclass
class Check:
    """What ``Registry.check`` found for one model."""

    model: str
    states: list[VersionState] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # events written that were owed

    @property
    def damaged(self) -> list[VersionState]:
        return [v for v in self.states if v.state == "damaged"]


# --- the alias policy, shared by every registry ------------------------------------------------


def promotion_refusal(current: Pointer, version: int, alias: str, seen_serial: int) -> str | None:
    """Why the policy refuses to move ``alias`` from ``current`` to ``version`` (None: it moves).

    The alias moves only to a version newer than the one it points at; never to a version a
    rollback withdrew; and not at all if it was rolled back after ``seen_serial``.
    """
    if version in current.withdrawn:
        return f"version {version} was withdrawn by a rollback of {alias}"
    if current.rollback_serial > seen_serial:
        return (f"{alias} was rolled back (pointer serial {current.rollback_serial}) after this "
                f"run looked at it (serial {seen_serial}); the candidate was not judged against "
                f"the rolled-back champion: re-run the pipeline")  # fmt: skip
    if version < current.version:
        return (f"{alias} is at version {current.version}, newer than {version}; the alias only "
                f"moves forward (a rollback moves it back)")  # fmt: skip
    return None


def promoted(current: Pointer | None, version: int) -> Pointer:
    """The pointer a promotion of ``version`` writes over ``current``."""
    if current is None:
        return Pointer(version, None, 1, "promote", (version,))
    return Pointer(version, current.version, current.serial + 1, "promote",
                   (*current.history, version), current.withdrawn, current.rollback_serial)  # fmt: skip


def rollback_target(
    current: Pointer | None, model: str, alias: str, origin: int, to: int | None
) -> int:
    """The version a rollback from ``origin`` moves ``alias`` to (``to``, or the one before)."""
    if current is None:
        raise RegistryError(f"{model}@{alias} was removed while rolling back")
    if origin in current.withdrawn:  # (our own landed write was recognised already)
        raise RegistryError(f"{model}@{alias}: version {origin} was rolled back by someone else "
                            f"meanwhile; it is at version {current.version} now, and this "
                            f"rollback changed nothing")  # fmt: skip
    history = list(current.history)
    if origin not in history:
        raise RegistryError(f"{model}@{alias}: version {origin} is no longer in its history "
                            f"{history}; nothing was changed")  # fmt: skip
    earlier = history[: history.index(origin)]
    if not earlier:
        raise RegistryInputError(f"{model}@{alias} is at version {origin}, the first it held; "
                                 "nothing to roll back to")  # fmt: skip
    target = earlier[-1] if to is None else to
    if target not in earlier:
        raise RegistryInputError(f"--to {target}: {model}@{alias} held only versions {earlier} "
                                 f"before version {origin}")  # fmt: skip
    return target


def rolled_back(current: Pointer, target: int) -> Pointer:
    """The pointer a rollback to ``target`` writes over ``current``: every version after
    ``target`` in the history is withdrawn."""
    history = list(current.history)
    keep = history[: history.index(target) + 1]
    withdrawn = tuple(v for v in history if v not in keep)
    serial = current.serial + 1
    return Pointer(target, current.version, serial, "rollback", tuple(keep),
                   (*current.withdrawn, *withdrawn), serial)  # fmt: skip


def damaged_target(model: str, alias: str, version: int, problems: list[str]) -> RegistryError:
    return RegistryError(
        f"{model}@{alias} points at version {version}, which is damaged "
        f"({'; '.join(problems)}); nothing moves over a damaged registry: run "
        f"`slimgate registry verify {model}` and roll back to an intact version"
    )


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _load(data: bytes) -> dict[str, Any] | None:
    try:
        found = json.loads(data)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


class ModelRegistry(ABC):
    """What the pipeline and the CLI ask of a registry: :class:`Registry` on an object store,
    ``MlflowRegistry`` on MLflow's Model Registry."""

    @abstractmethod
    def describe(self) -> str:
        """The registry as a URI, for messages and records."""

    @abstractmethod
    def models(self) -> list[str]: ...

    @abstractmethod
    def versions(self, model: str) -> list[int]:
        """Complete versions, oldest first."""

    @abstractmethod
    def card(self, model: str, version: int) -> dict[str, Any]: ...

    @abstractmethod
    def pointer(self, model: str, alias: str = "production") -> Pointer | None: ...

    @abstractmethod
    def aliases(self, model: str) -> dict[str, Pointer]: ...

    @abstractmethod
    def problems(self, model: str, version: int, card: dict[str, Any] | None = None) -> list[str]:
        """What is wrong with a version, re-hashing every file its card lists (empty: intact)."""

    @abstractmethod
    def states(self, model: str, *, rehash: Iterable[int] = ()) -> list[VersionState]: ...

    @abstractmethod
    def check(self, model: str, versions: Iterable[int] | None = None) -> Check: ...

    @abstractmethod
    def download(self, model: str, version: int, dest: Path) -> list[Path]: ...

    @abstractmethod
    def publish(
        self,
        model: str,
        files: Mapping[str, Path],
        card: Mapping[str, Any],
        *,
        run_id: str | None = None,
    ) -> Published: ...

    @abstractmethod
    def move_alias(
        self,
        model: str,
        version: int,
        *,
        alias: str = "production",
        seen_serial: int = 0,
        reason: str,
        run_id: str | None = None,
        deadline_s: float = DEADLINE_S,
    ) -> Pointer: ...

    @abstractmethod
    def rollback(
        self,
        model: str,
        *,
        alias: str = "production",
        reason: str,
        to: int | None = None,
        run_id: str | None = None,
        deadline_s: float = DEADLINE_S,
    ) -> Pointer: ...

    @abstractmethod
    def gc(
        self, model: str, older_than: timedelta, *, now: datetime | None = None
    ) -> Sequence[int | str]:
        """Remove what writers that never finished left behind, older than ``older_than``: the
        version numbers (or the names of other leftovers) it removed."""

    def alias(self, model: str, alias: str = "production") -> dict[str, Any] | None:
        pointer = self.pointer(model, alias)
        return None if pointer is None else pointer.as_json()

    def verify(self, model: str, version: int) -> None:
        """Raise unless every file of the version matches the checksum its card recorded."""
        problems = self.problems(model, version)
        if problems:
            raise RegistryError(f"{model} version {version} is damaged: {'; '.join(problems)}")

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


class Registry(ModelRegistry):
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def describe(self) -> str:
        return self.store.describe()

    # --- names ---------------------------------------------------------------------------------

    @staticmethod
    def _model(model: str) -> str:
        if not isinstance(model, str) or not _NAME.match(model):
            raise RegistryInputError(
                f"model name {model!r}: expected lowercase letters, digits, '.', '_' or '-' "
                "(at most 64, starting with a letter or digit)"
            )
        return model

    def _version_key(self, model: str, version: int, name: str = "") -> str:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise RegistryInputError(f"version {version!r}: expected a positive integer")
        return f"{self._model(model)}/versions/{version}/{name}"

    def _alias_key(self, model: str, alias: str) -> str:
        if not isinstance(alias, str) or not _ALIAS.match(alias):
            raise RegistryInputError(
                f"alias {alias!r}: expected lowercase letters, digits, '_' or '-' "
                "(at most 32, starting with a letter)"
            )
        return f"{self._model(model)}/aliases/{alias}.json"

    # --- reading -------------------------------------------------------------------------------

    def models(self) -> list[str]:
        found = set()
        for key in self.store.keys(""):
            parts = key.split("/")
            if len(parts) == 4 and parts[1] == "versions" and parts[3] in _RESERVED:
                found.add(parts[0])
        return sorted(found)

    def _listing(self, model: str) -> dict[int, set[str]]:
        """Every claimed number and the names stored under it, from one listing."""
        out: dict[int, set[str]] = {}
        for key in self.store.keys(f"{self._model(model)}/versions/"):
            parts = key.split("/")
            if len(parts) == 4 and parts[2].isdigit():
                out.setdefault(int(parts[2]), set()).add(parts[3])
        return out

    def versions(self, model: str) -> list[int]:
        """Complete versions only: a version without its card is still being written (or dead)."""
        return sorted(v for v, names in self._listing(model).items() if "card.json" in names)

    def card(self, model: str, version: int) -> dict[str, Any]:
        key = self._version_key(model, version, "card.json")
        found = self.store.read(key)
        if found is None:
            raise RegistryInputError(f"{model} version {version} not found in {self.describe()}")
        card = _load(found[0])
        if card is None or not isinstance(card.get("files"), dict):
            raise _Unreadable(f"{self.describe()}/{key} is not a readable card")
        return card

    def pointer(self, model: str, alias: str = "production") -> Pointer | None:
        key = self._alias_key(model, alias)
        found = self.store.read(key)
        return None if found is None else Pointer.parse(found[0], f"{self.describe()}/{key}")

    def aliases(self, model: str) -> dict[str, Pointer]:
        out = {}
        for key in self.store.keys(f"{self._model(model)}/aliases/"):
            name = key.rsplit("/", 1)[-1].removesuffix(".json")
            if _ALIAS.match(name) and (pointer := self.pointer(model, name)) is not None:
                out[name] = pointer
        return out

    def events(self, model: str) -> list[dict[str, Any]]:
        out = []
        for key in self.store.keys(f"{self._model(model)}/events/"):
            found = self.store.read(key)
            if found is not None and (event := _load(found[0])) is not None:
                out.append(event)
        return out

    def problems(self, model: str, version: int, card: dict[str, Any] | None = None) -> list[str]:
        """What is wrong with a version, re-hashing every file its card lists (empty: intact)."""
        if card is None:  # (a store that cannot be reached raises: that is not damage)
            try:
                card = self.card(model, version)
            except RegistryInputError:
                return ["card.json is missing"]
            except _Unreadable as exc:
                return [str(exc)]
        out = []
        for name, digest in sorted(card["files"].items()):
            try:
                seen = self.store.digest(self._version_key(model, version, name))
            except KeyMissing:
                out.append(f"{name} is missing")
                continue
            if seen != digest:
                out.append(f"{name} does not match its checksum (sha256 {seen[:12]}..., "
                           f"card says {str(digest)[:12]}...)")  # fmt: skip
        return out

    def states(self, model: str, *, rehash: Iterable[int] = ()) -> list[VersionState]:
        """Every claimed number of ``model``: complete and intact, damaged, incomplete or
        abandoned. Presence is checked for all from one listing; ``rehash`` (and every alias
        target) is re-hashed too."""
        listing = self._listing(model)
        aliased: dict[int, list[str]] = {}
        for name, pointer in self.aliases(model).items():
            aliased.setdefault(pointer.version, []).append(name)
            listing.setdefault(pointer.version, set())
        published: set[int] | None = None  # read only if some number has no card
        full = set(rehash) | set(aliased)
        out = []
        for v in sorted(listing):
            names = listing[v]
            on = tuple(sorted(aliased.get(v, ())))
            claim = None
            if (
                "claim.json" in names
                and "card.json" not in names
                and (found := self.store.read(self._version_key(model, v, "claim.json")))
            ):
                claim = _load(found[0])  # fmt: skip
            if "abandoned.json" in names and "card.json" not in names:
                out.append(VersionState(v, "abandoned", aliases=on))
                continue
            if "card.json" not in names:
                if published is None:
                    published = {e["version"] for e in self.events(model)
                                 if e.get("action") == "publish" and e.get("created")}  # fmt: skip
                if on or v in published:  # it was complete once: its card is gone
                    why = f"card.json is missing ({'the ' + ', '.join(on) + ' alias points at it' if on else 'its publish event exists'})"  # fmt: skip
                    out.append(VersionState(v, "damaged", (why,), claim=claim, aliases=on))
                else:
                    out.append(VersionState(v, "incomplete", claim=claim, aliases=on))
                continue
            try:
                card = self.card(model, v)
            except _Unreadable as exc:
                out.append(VersionState(v, "damaged", (str(exc),), claim=claim, aliases=on))
                continue
            if v in full:
                problems = self.problems(model, v, card)
            else:
                problems = [f"{n} is missing" for n in sorted(card["files"]) if n not in names]
            state = "damaged" if problems else "ok"
            out.append(VersionState(v, state, tuple(problems), card, claim, on, v in full))
        return out

    def check(self, model: str, versions: Iterable[int] | None = None) -> Check:
        """Re-hash every alias target and ``versions`` (None: every version), report every
        claimed number's state, and write the events a killed writer left owed."""
        rehash = self.versions(model) if versions is None else list(versions)
        claimed = self._listing(model)
        for v in rehash:
            if self._version_key(model, v) and v not in claimed:
                raise RegistryInputError(f"{model} has no version {v} in {self.describe()}")
        repaired = self._repair(model)
        return Check(model, self.states(model, rehash=rehash), repaired)

    def download(self, model: str, version: int, dest: Path) -> list[Path]:
        """Copy a version's files into ``dest``; they are moved into place only after every
        checksum matched, so a failed download leaves ``dest`` as it was."""
        card = self.card(model, version)
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".slimgate-download-", dir=dest))
        try:
            for name, digest in card["files"].items():
                local = staging / name
                self.store.fetch(self._version_key(model, version, name), local)
                if sha256_file(local) != digest:
                    raise RegistryError(
                        f"{model} version {version}: downloaded {name} does not match its "
                        f"checksum; nothing in {dest} was changed"
                    )
            (staging / "card.json").write_bytes(_json(card))
            names = [*card["files"], "card.json"]
            for name in names:
                (staging / name).replace(dest / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return [dest / name for name in names]

    # --- publishing ------------------------------------------------------------------------------

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
            raise RegistryInputError("a version needs a model.onnx")
        for name in files:
            if name in _RESERVED or not _FILE.match(name):
                raise RegistryInputError(f"file name {name!r} is not allowed in a version")
        digests = {name: sha256_file(path) for name, path in files.items()}
        damaged: list[str] = []
        same = self._same_bytes(model, digests["model.onnx"], damaged)
        if same is not None:
            self._write_event(self._new_event(
                model, "publish", version=same, created=False, run_id=run_id,
                reason="identical model bytes are already this version"))  # fmt: skip
            return Published(same, created=False)

        number, claim = self._claim(model, run_id)
        event = self._new_event(model, "publish", version=number, created=True, run_id=run_id,
                                **({"skipped_damaged": damaged} if damaged else {}))  # fmt: skip
        complete = _json({**card, "files": digests, "event": event})
        card_key = self._version_key(model, number, "card.json")
        try:
            for name, path in files.items():
                key = self._version_key(model, number, name)
                if not self.store.create(key, path):
                    raise RegistryError(f"{self.describe()}/{key} holds other bytes than ours")
                if self.store.digest(key) != digests[name]:
                    raise RegistryError(f"{name} changed on its way into {self.describe()}")
            self._still_ours(model, number, claim)
            if not self.store.create(card_key, complete):
                raise RegistryError(f"{model} version {number} holds another writer's card")
        except Exception:
            if not self._holds(card_key, complete):
                self._abandon(model, number, list(files), card_key)
                raise
            log.warning("the card of %s version %d is in place although writing it failed; "
                        "the version is complete", model, number)  # fmt: skip
        except BaseException:
            self._abandon(model, number, list(files), card_key)
            raise
        self._write_event(event)
        return Published(number, created=True)

    def _same_bytes(self, model: str, digest: str, damaged: list[str]) -> int | None:
        """The newest intact version whose model has ``digest``; damaged ones that do are
        listed in ``damaged`` and passed over. Repairs owed events on the way."""
        cards = self._cards(model)
        self._repair(model, cards)
        for v, existing in sorted(cards.items(), reverse=True):
            if existing["files"].get("model.onnx") != digest:
                continue
            problems = self.problems(model, v, existing)
            if not problems:
                return v
            damaged.append(f"version {v} ({'; '.join(problems)})")
        return None

    def _claim(self, model: str, run_id: str | None) -> tuple[int, bytes]:
        claim = _json({"owner": uuid.uuid4().hex, "run_id": run_id, "user": _user(),
                       "host": socket.gethostname(), "time": datetime.now(UTC).isoformat()})  # fmt: skip
        number = max(self._listing(model), default=0) + 1
        for _ in range(1000):
            if self.store.create(self._version_key(model, number, "claim.json"), claim):
                return number, claim
            number += 1  # another writer claimed it first
        raise RegistryError(f"could not claim a version number of {model} in {self.describe()}")

    def _still_ours(self, model: str, number: int, claim: bytes) -> None:
        found = self.store.read(self._version_key(model, number, "claim.json"))
        gone = self.store.read(self._version_key(model, number, "abandoned.json"))
        if found is None or found[0] != claim or gone is not None:
            raise RegistryError(
                f"{model} version {number}: its claim was removed while it was being written "
                "(registry gc?); nothing was published"
            )

    def _holds(self, key: str, data: bytes) -> bool:
        """Whether ``key`` holds exactly ``data``; False also when the store cannot be read."""
        try:
            found = self.store.read(key)
        except Exception:
            return False
        return found is not None and found[0] == data

    def _abandon(self, model: str, number: int, names: list[str], card_key: str) -> None:
        """Best effort: remove the files of a version that will never be complete.

        Only once the store said positively that the version has no card: a complete version's
        files are never deleted. The claim stays, so the number is never reused.
        """
        try:
            if self.store.read(card_key) is not None:
                return
        except Exception:
            return  # cannot tell: delete nothing
        for name in names:
            with contextlib.suppress(Exception):  # cleanup must not hide the original error
                self.store.delete(self._version_key(model, number, name))

    # --- the alias -------------------------------------------------------------------------------

    def move_alias(
        self,
        model: str,
        version: int,
        *,
        alias: str = "production",
        seen_serial: int = 0,
        reason: str,
        run_id: str | None = None,
        deadline_s: float = DEADLINE_S,
    ) -> Pointer:
        """Point ``alias`` at ``version`` under the alias policy, waiting out contention.

        The policy, decided against the pointer as it is at the swap (and again after every lost
        race): the alias moves only to a version newer than the one it points at; never to a
        version a rollback withdrew; and not at all if it was rolled back after ``seen_serial``
        (the pointer's serial when this promotion's run looked at production: its gate was not
        judged against the rolled-back champion). A move to where the alias already points is a
        success. The version must be intact, and so must the one it replaces.

        Raises:
            AliasRefused: the policy refused the move (recorded as an ``alias_refused`` event).
            AliasConflict: the alias kept moving until ``deadline_s`` (an ``alias_give_up`` event).
            RegistryError: the version, or the one production points at, is damaged.
        """
        self.verify(model, version)
        checked: set[int] = set()

        def decide(current: Pointer | None) -> Pointer | None:
            if current is not None and current.version == version:
                return None
            if current is not None:
                refusal = promotion_refusal(current, version, alias, seen_serial)
                if refusal:
                    self._write_event(self._new_event(
                        model, "alias_refused", alias=alias, version=version,
                        current=current.version, reason=refusal, run_id=run_id))  # fmt: skip
                    raise AliasRefused(f"{model} version {version} was published but {alias} "
                                       f"did not move: {refusal}")  # fmt: skip
                if current.version not in checked:
                    if problems := self.problems(model, current.version):
                        raise damaged_target(model, alias, current.version, problems)
                    checked.add(current.version)
            return promoted(current, version)

        return self._swap(model, alias, decide, action="move_alias", reason=reason,
                          run_id=run_id, deadline_s=deadline_s,
                          details={"seen_serial": seen_serial})  # fmt: skip

    def rollback(
        self,
        model: str,
        *,
        alias: str = "production",
        reason: str,
        to: int | None = None,
        run_id: str | None = None,
        deadline_s: float = DEADLINE_S,
    ) -> Pointer:
        """Move ``alias`` back to the version it held before (or to ``to``, one it held
        earlier), withdrawing the version it rolls back from and every version promoted after
        it, including those that land while the rollback runs. Promotions whose run looked at
        production before the rollback are refused afterwards."""
        first = self.pointer(model, alias)
        if first is None:
            raise RegistryInputError(f"{model} has no {alias!r} alias to roll back")
        origin = first.version
        if to is not None:
            self._version_key(model, to)
        checked: set[int] = set()

        def decide(current: Pointer | None) -> Pointer | None:
            target = rollback_target(current, model, alias, origin, to)
            if target not in checked:
                problems = self.problems(model, target)
                if problems:
                    # intact by presence (one listing), not re-hashed: on S3 that downloads
                    intact = {s.version for s in self.states(model) if s.state == "ok"}
                    assert current is not None  # (rollback_target raised otherwise)
                    earlier = current.history[: current.history.index(origin)]
                    others = [v for v in earlier if v != target and v in intact]
                    hint = f"; roll back to an earlier one with --to ({others})" if others else ""
                    raise RegistryError(f"cannot roll back to {model} version {target}: it is "
                                        f"damaged ({'; '.join(problems)}){hint}")  # fmt: skip
                checked.add(target)
            assert current is not None
            return rolled_back(current, target)

        return self._swap(model, alias, decide, action="rollback", reason=reason,
                          run_id=run_id, deadline_s=deadline_s)  # fmt: skip

    def _swap(
        self,
        model: str,
        alias: str,
        decide: Callable[[Pointer | None], Pointer | None],
        *,
        action: str,
        reason: str,
        run_id: str | None,
        deadline_s: float,
        details: Mapping[str, Any] | None = None,
    ) -> Pointer:
        """Compare-and-swap the pointer ``decide`` makes of the current one (None: it is
        already right), re-reading and re-deciding after each lost race, with jittered backoff."""
        key = self._alias_key(model, alias)
        where = f"{self.describe()}/{key}"
        start = time.monotonic()
        mine: Pointer | None = None  # our last attempt, to know our own write
        ensured: set[str] = set()
        attempt = -1
        while True:
            attempt += 1
            found = self.store.read(key)
            current = None if found is None else Pointer.parse(found[0], where)
            if mine is not None and mine.event is not None:
                ours = str(mine.event["key"])
                if current is not None and current.event and current.event.get("key") == ours:
                    self._ensure_event(model, mine.event)  # our swap landed; its reply was lost
                    return mine
                if self.store.read(ours) is not None:
                    # our swap landed, its reply was lost, and another writer (who wrote our
                    # event before replacing our pointer) has moved the alias on since
                    log.warning("%s@%s: version %d was aliased, then superseded",
                                model, alias, mine.version)  # fmt: skip
                    return mine
            owed = current.event if current is not None else None
            if owed is not None and owed.get("key") not in ensured:  # if its writer was killed
                self._ensure_event(model, owed)
                ensured.add(str(owed.get("key")))
            chosen = decide(current)
            if chosen is None:
                assert current is not None
                return current
            extra = {"serial": chosen.serial, **(details or {})}
            if chosen.mode == "rollback":
                before = set(current.withdrawn) if current else set()
                extra["withdrawn"] = [v for v in chosen.withdrawn if v not in before]
            event = self._new_event(model, action, alias=alias, version=chosen.version,
                                    previous=chosen.previous, reason=reason, run_id=run_id,
                                    attempts=attempt + 1, **extra)  # fmt: skip
            pointer = Pointer(chosen.version, chosen.previous, chosen.serial, chosen.mode,
                              chosen.history, chosen.withdrawn, chosen.rollback_serial, event)  # fmt: skip
            mine = pointer
            if self.store.swap(key, _json(pointer.as_json()), found[1] if found else None):
                self._write_event(event)
                return pointer
            waited = time.monotonic() - start
            if waited > deadline_s:
                self._write_event(self._new_event(
                    model, "alias_give_up", alias=alias, version=chosen.version, move=action,
                    attempts=attempt + 1, waited_s=round(waited, 3), run_id=run_id))  # fmt: skip
                raise AliasConflict(
                    f"{model}@{alias} kept moving for {waited:.0f} s ({attempt + 1} attempts); "
                    f"version {chosen.version} was published but not aliased"
                )
            time.sleep(random.uniform(0, min(2.0, 0.02 * 2 ** min(attempt, 10))))  # full jitter

    # --- events and repair -----------------------------------------------------------------------

    def _new_event(self, model: str, action: str, **fields: Any) -> dict[str, Any]:
        now = datetime.now(UTC)
        name = f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex[:8]}.json"
        return {"key": f"{self._model(model)}/events/{name}", "time": now.isoformat(),
                "action": action, "model": model, "user": _user(), "host": socket.gethostname(),
                **fields}  # fmt: skip

    def _write_event(self, event: Mapping[str, Any]) -> None:
        """Write an event (again: the same bytes are a success). A failure is logged, not
        raised: the card or pointer that carries the event lets the next write repair it."""
        try:
            self.store.create(str(event["key"]), _json(dict(event)))
        except Exception as exc:
            log.warning("could not write the event %s (%s); the next write repairs it",
                        event.get("key"), exc)  # fmt: skip

    def _ensure_event(self, model: str, event: Mapping[str, Any]) -> None:
        """Make sure the event a pointer carries is in the log before that pointer is replaced
        (the pointer is the only other record of it): raise rather than lose it."""
        key = str(event.get("key", ""))
        name = key.removeprefix(f"{self._model(model)}/events/")
        if name == key or not _FILE.match(name):
            raise RegistryError(f"{model}: a pointer carries an event with a bad key {key!r}")
        if self.store.read(key) is None and not self.store.create(key, _json(dict(event))):
            raise RegistryError(f"{self.describe()}/{key} holds another event than its pointer's")

    def _cards(self, model: str) -> dict[int, dict[str, Any]]:
        """The readable card of every complete version."""
        out = {}
        for v in self.versions(model):
            with contextlib.suppress(_Unreadable, RegistryInputError):  # damaged, or just deleted
                out[v] = self.card(model, v)
        return out

    def _repair(self, model: str, cards: dict[int, dict[str, Any]] | None = None) -> list[str]:
        """Write every event a card or alias pointer carries but the log lacks."""
        have = set(self.store.keys(f"{self._model(model)}/events/"))
        owed: list[dict[str, Any]] = []
        for card in (self._cards(model) if cards is None else cards).values():
            if isinstance(event := card.get("event"), dict):
                owed.append(event)
        for pointer in self.aliases(model).values():
            if pointer.event is not None:
                owed.append(pointer.event)
        repaired = []
        for event in owed:
            if event.get("key") not in have:
                self._ensure_event(model, event)
                repaired.append(str(event["key"]))
        return repaired

    # --- garbage -----------------------------------------------------------------------------------

    def gc(self, model: str, older_than: timedelta, *, now: datetime | None = None) -> list[int]:
        """Remove the files of versions claimed longer ago than ``older_than`` (at least
        ``MIN_GC_AGE``) that never completed (no card, no alias, no publish event), and only
        those. Each number keeps an ``abandoned.json`` tombstone, so it is never reused; a gc
        that was interrupted is finished by the next."""
        if older_than < MIN_GC_AGE:
            raise RegistryInputError(
                f"older than {older_than}: gc collects only claims older than {MIN_GC_AGE}, "
                "whose writer cannot still be uploading"
            )
        now = now or datetime.now(UTC)
        removed = []
        listing = self._listing(model)
        for state in self.states(model):
            v = state.version
            if state.state == "abandoned":
                if listing[v] - {"abandoned.json"}:  # an interrupted gc: finish it
                    self._collect(model, v)
                continue
            if state.state != "incomplete" or state.aliases or state.claim is None:
                continue
            try:
                claimed = datetime.fromisoformat(str(state.claim["time"]))
            except (KeyError, ValueError):
                continue
            if now - claimed < older_than:
                continue
            tomb = _json({"claim": state.claim, "removed_at": now.isoformat(), "user": _user()})
            if not self.store.create(self._version_key(model, v, "abandoned.json"), tomb):
                continue
            self._collect(model, v)
            removed.append(v)
        self.store.sweep(older_than, now)
        if removed:
            self._write_event(self._new_event(model, "gc", versions=removed,
                                              older_than_s=older_than.total_seconds()))  # fmt: skip
        return removed

    def _collect(self, model: str, version: int) -> None:
        for key in self.store.keys(self._version_key(model, version)):
            if not key.endswith(("/abandoned.json", "/card.json")):
                self.store.delete(key)


class FileRegistry(Registry):
    """A registry in a local folder."""

    def __init__(self, root: Path) -> None:
        super().__init__(FileStore(root))
        self.root = root

    def file(self, model: str, version: int, name: str) -> Path:
        """The local path of one file of a version."""
        if not _FILE.match(name):
            raise RegistryInputError(f"file name {name!r} is not allowed")
        path = self.root / self._version_key(model, version, name)
        if not path.is_file():
            raise RegistryError(f"{model} version {version} has no {name} in {self.root}")
        return path


def open_registry(uri: str) -> ModelRegistry:
    """The registry at ``s3://bucket/prefix``, ``file://PATH``, a plain path, or
    ``mlflow://HOST:PORT`` (MLflow's Model Registry, see :mod:`components.mlflow_registry`)."""
    if uri.startswith(MLFLOW_SCHEMES):
        from components.mlflow_registry import MlflowRegistry

        return MlflowRegistry(uri)
    return store_registry(uri)


def store_registry(uri: str) -> Registry:
    """The registry on the object store at ``s3://bucket/prefix``, ``file://PATH`` or a path."""
    store = open_store(uri)
    if isinstance(store, FileStore):
        return FileRegistry(store.root)
    return Registry(store)
