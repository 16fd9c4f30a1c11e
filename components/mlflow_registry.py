"""The model registry on MLflow's Model Registry: ``registry: mlflow://HOST:PORT``.

A version is an MLflow model version whose files (``model.onnx``, ``card.json``,
``report.html``, and an ``MLmodel`` with the ``onnx`` flavour, so that
``mlflow.pyfunc.load_model("models:/NAME@production")`` serves it) are the artifacts of an
upload run in the experiment ``slimgate-registry``. The alias is MLflow's own alias; slimgate
keeps the pointer's history beside it, in the registered model's tag ``slimgate.pointer.<alias>``.

The guarantees of :class:`~components.registry.Registry`, where MLflow can give them:

- **Complete versions only.** The files are uploaded and read back (sha256 against the card)
  before the model version is created, so every version that exists is complete.
- **Write-once** is what MLflow gives: a version's source never changes, but whoever can write
  to the upload run's artifacts can change the files. Every read (``show``, ``download``, the
  champion step, ``verify``) re-hashes them against the card, whose own sha256 is a tag.
- **The alias moves last, by the same policy** (forward only, never to a withdrawn version, not
  after a rollback this run did not see). MLflow has no conditional write, so moves of one
  model's alias are serialised by MLflow's own version numbers: a new version is created
  ``pending`` and moves the alias only when no lower-numbered version is still pending (a
  ticket lock; the database assigns the numbers). A pending writer beats every few seconds; one
  silent for ``STALE_S`` is taken for dead and skipped. A rollback flags itself first, then waits
  for every pending version; a promotion that sees the flag is refused.
- **Moves made outside slimgate** (the MLflow UI, a killed writer between the alias and its
  record) are adopted into the history when next read; an alias removed outside slimgate stops
  promotions with an error until it is set again.

The tracking URI is ``mlflow://HOST[:PORT][/PATH]`` (plain HTTP), ``mlflow+https://HOST/...``,
or ``mlflow://`` alone for ``MLFLOW_TRACKING_URI``. Credentials come only from MLflow's own
environment (``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from components.errors import AliasRefused, RegistryError, RegistryInputError
from components.registry import (
    _ALIAS,
    _FILE,
    _NAME,
    _RESERVED,
    DEADLINE_S,
    MIN_GC_AGE,
    AliasConflict,
    Check,
    ModelRegistry,
    Pointer,
    Published,
    VersionState,
    _json,
    _user,
    damaged_target,
    promoted,
    promotion_refusal,
    rollback_target,
    rolled_back,
)
from components.stores import sha256_file

__all__ = ["EXPERIMENT", "MlflowRegistry", "tracking_uri"]

log = logging.getLogger(__name__)

#: The experiment whose runs hold the versions' files.
EXPERIMENT = "slimgate-registry"
#: A pending version's writer, or a rollback, beats this often (seconds) ...
BEAT_S = 5.0
#: ... and is taken for dead when its beat is older than this (hosts' clocks must agree to
#: well within it).
STALE_S = 60.0
_ARTIFACTS = "model"  # the folder of the upload run that a version's source names

# tags
MANAGED = "slimgate.managed"
STATE = "slimgate.state"  # pending -> aliased | refused | failed | abandoned
BEAT = "slimgate.beat"
CARD_SHA = "slimgate.card_sha256"
MODEL_SHA = "slimgate.model_sha256"
UPLOAD = "slimgate.upload"
WITHDRAWN = "slimgate.withdrawn"


def tracking_uri(uri: str) -> str:
    """The MLflow tracking URI that a ``mlflow://`` registry (or tracking) URI names."""
    if uri.startswith("mlflow+https://"):
        rest, scheme = uri.removeprefix("mlflow+https://"), "https"
    elif uri.startswith("mlflow://"):
        rest, scheme = uri.removeprefix("mlflow://"), "http"
    else:
        return uri  # an http(s):// tracking URI as MLflow takes it
    if rest.strip("/"):
        return f"{scheme}://{rest.rstrip('/')}"
    env = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not env:
        raise RegistryInputError(
            f"{uri!r} names no server and MLFLOW_TRACKING_URI is not set; give mlflow://HOST:PORT"
        )
    return env.rstrip("/")


def mlflow_client(uri: str) -> Any:
    """An ``MlflowClient`` for the server at ``uri``, with bounded retries (MLflow's default
    retries an unreachable server for about four minutes) unless the environment says more."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise RegistryInputError(
            "an mlflow:// registry or tracking needs the MLflow client: "
            "pip install 'slimgate[mlflow]'"
        ) from None
    target = tracking_uri(uri)
    return MlflowClient(tracking_uri=target, registry_uri=target)


def probe(uri: str, api: str = "registered-models/search") -> list[str]:
    """Why the MLflow server at ``uri`` cannot be used (empty: it answers a GET of ``api``, its
    registry's by default), asked once with a 10 s timeout."""
    try:
        target = tracking_uri(uri)
        mlflow_client(uri)  # the import
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request
    except RegistryInputError as exc:
        return [str(exc)]
    try:
        creds = get_default_host_creds(target)  # type: ignore[no-untyped-call]
        response = http_request(creds,
                                f"/api/2.0/mlflow/{api}", "GET",
                                max_retries=0, timeout=10, raise_on_status=False,
                                params={"max_results": 1})  # type: ignore[no-untyped-call]  # fmt: skip
    except Exception as exc:
        return [f"cannot reach the MLflow server at {target}: {str(exc).splitlines()[0][:200]}"]
    if response.status_code in (401, 403):
        return [f"the MLflow server at {target} refused access ({response.status_code}): set "
                "MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD"]  # fmt: skip
    if response.status_code != 200:
        return [f"the MLflow server at {target} answered {response.status_code} to "
                f"{api}: {response.text[:200]}"]  # fmt: skip
    return []


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "error_code", ""))


def _error(target: str, what: str, exc: BaseException) -> RegistryError:
    """An MLflow client error in slimgate's words (the first line: MLflow's are long)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RegistryError(f"MLflow at {target}, {what}: {first[:300]}")


class _Beat:
    """Sets a tag to the time every ``BEAT_S`` seconds until stopped (or for ``lifetime_s``)."""

    def __init__(self, write: Any, lifetime_s: float) -> None:
        self._write = write
        self._stop = threading.Event()
        self._until = time.monotonic() + lifetime_s
        self._thread = threading.Thread(target=self._run, daemon=True, name="slimgate-beat")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(BEAT_S) and time.monotonic() < self._until:
            with contextlib.suppress(Exception):  # a missed beat is a late one, not an error
                self._write(f"{time.time():.3f}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=BEAT_S + 30)


def _fresh(beat: str | None, now: float) -> bool:
    try:
        return now - float(beat or "") < STALE_S
    except ValueError:
        return False


#: MLflow keeps a registered model's tag in a 5000-character column (SQL backends enforce it).
_TAG_MAX = 5000


def _compact(pointer: Pointer) -> str:
    """The pointer's record as JSON within ``_TAG_MAX``: the oldest history and withdrawn
    entries go first (withdrawn versions also carry the ``slimgate.withdrawn`` tag)."""
    history, withdrawn = list(pointer.history), list(pointer.withdrawn)
    while True:
        data = {**pointer.as_json(), "history": history, "withdrawn": withdrawn}
        text = json.dumps(data, sort_keys=True)
        if len(text) <= _TAG_MAX or (len(history) <= 2 and not withdrawn):
            return text
        if len(withdrawn) > len(history) // 2:
            withdrawn = withdrawn[len(withdrawn) // 4 + 1 :]
        else:
            history = history[len(history) // 4 + 1 :]


class MlflowRegistry(ModelRegistry):
    """slimgate's registry protocol on an MLflow tracking server's Model Registry."""

    def __init__(self, uri: str, client: Any = None) -> None:
        self.uri = uri
        self.target = tracking_uri(uri)
        self._client = client
        self._beats: dict[tuple[str, int], _Beat] = {}
        self._experiment: str | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = mlflow_client(self.uri)
        return self._client

    def describe(self) -> str:
        return f"mlflow {self.target}"

    # --- calls ---------------------------------------------------------------------------------

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            raise _error(self.target, what, exc) from None

    def _maybe(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(...)``, or None where MLflow answers that the thing does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            if _code(exc) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise _error(self.target, what, exc) from None

    @staticmethod
    def _model(model: str) -> str:
        if not isinstance(model, str) or not _NAME.match(model):
            raise RegistryInputError(
                f"model name {model!r}: expected lowercase letters, digits, '.', '_' or '-' "
                "(at most 64, starting with a letter or digit)"
            )
        return model

    @staticmethod
    def _alias(alias: str) -> str:
        if not isinstance(alias, str) or not _ALIAS.match(alias):
            raise RegistryInputError(
                f"alias {alias!r}: expected lowercase letters, digits, '_' or '-' "
                "(at most 32, starting with a letter)"
            )
        return alias

    def _registered(self, model: str) -> Any:
        return self._maybe(f"reading {model}", self.client.get_registered_model, self._model(model))

    def _all_versions(self, model: str, where: str = "") -> list[Any]:
        found = self._call(f"listing the versions of {model}", self.client.search_model_versions,
                           f"name='{self._model(model)}'{where}")  # fmt: skip
        return sorted(found, key=lambda mv: int(mv.version))

    def _managed(self, model: str) -> dict[int, Any]:
        """slimgate's versions of ``model`` (those with a card), by number."""
        return {int(mv.version): mv for mv in self._all_versions(model) if CARD_SHA in mv.tags}

    def _version(self, model: str, version: int) -> Any:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise RegistryInputError(f"version {version!r}: expected a positive integer")
        mv = self._maybe(f"reading {model} version {version}", self.client.get_model_version,
                         self._model(model), str(version))  # fmt: skip
        if mv is None or CARD_SHA not in mv.tags:
            raise RegistryInputError(f"{model} version {version} not found in {self.describe()}"
                                     + (" (it was not published by slimgate)" if mv else ""))  # fmt: skip
        return mv

    @staticmethod
    def _run_of(mv: Any) -> str:
        source = str(mv.source)
        if not source.startswith("runs:/"):
            raise RegistryError(f"{mv.name} version {mv.version}: its source {source} is not an "
                                "upload run of slimgate")  # fmt: skip
        return source.removeprefix("runs:/").split("/", 1)[0]

    def _fetch(self, mv: Any, name: str, dest_dir: Path) -> Path | None:
        """Download one file of a version into ``dest_dir``; None if it is not there.

        MLflow's artifact stores answer a missing file in several ways (a 404 gathered into a
        generic error, FileNotFoundError, a botocore error), so a failed download lists the
        folder to tell a missing file from a store that failed."""
        run = self._run_of(mv)
        try:
            return Path(self.client.download_artifacts(run, f"{_ARTIFACTS}/{name}", str(dest_dir)))
        except Exception as exc:
            listed = self._call(f"listing the files of {mv.name} version {mv.version}",
                                self.client.list_artifacts, run, _ARTIFACTS)  # fmt: skip
            if name not in {Path(f.path).name for f in listed}:
                return None
            raise _error(self.target, f"downloading {name} of {mv.name} version {mv.version}",
                         exc) from None  # fmt: skip

    # --- reading -------------------------------------------------------------------------------

    def models(self) -> list[str]:
        out, token = [], None
        while True:
            page = self._call("listing models", self.client.search_registered_models,
                              f"tags.`{MANAGED}` = 'true'", max_results=100, page_token=token)  # fmt: skip
            out += [m.name for m in page]
            token = page.token
            if not token:
                return sorted(out)

    def versions(self, model: str) -> list[int]:
        return sorted(v for v, mv in self._managed(model).items() if mv.status == "READY")

    def card(self, model: str, version: int) -> dict[str, Any]:
        return self._card(self._version(model, version))

    def _card(self, mv: Any) -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            path = self._fetch(mv, "card.json", Path(tmp))
            if path is None:
                raise RegistryError(f"{mv.name} version {mv.version} is damaged: card.json is "
                                    "missing from its upload run")  # fmt: skip
            if sha256_file(path) != mv.tags[CARD_SHA]:
                raise RegistryError(f"{mv.name} version {mv.version} is damaged: card.json does "
                                    f"not match the checksum in its tag {CARD_SHA}")  # fmt: skip
            card: dict[str, Any] = json.loads(path.read_text())
        return card

    def pointer(self, model: str, alias: str = "production") -> Pointer | None:
        return self._current(self._registered(model), model, self._alias(alias))

    def _current(self, rm: Any, model: str, alias: str) -> Pointer | None:
        """The alias as MLflow has it, with the history slimgate recorded beside it."""
        if rm is None:
            return None
        raw = rm.tags.get(f"slimgate.pointer.{alias}")
        recorded = (
            Pointer.parse(raw.encode(), f"{model} tag slimgate.pointer.{alias}") if raw else None
        )
        actual = rm.aliases.get(alias)
        if actual is None:
            if recorded is None:
                return None
            raise RegistryError(
                f"{model}@{alias} was removed outside slimgate (its record says version "
                f"{recorded.version}); set the alias again in MLflow, or delete the registered "
                f"model's tag slimgate.pointer.{alias} to start its history afresh"
            )
        actual = int(actual)
        if recorded is None:  # set outside slimgate: adopted
            return Pointer(actual, None, 0, "external", (actual,))
        if recorded.version == actual:
            return recorded
        # moved outside slimgate, or by a writer killed between the alias and its record
        if actual in recorded.history:  # back to a version it held: a rollback
            back = rolled_back(recorded, actual)
            return Pointer(actual, recorded.version, back.serial, "external", back.history,
                           back.withdrawn, back.rollback_serial)  # fmt: skip
        return Pointer(actual, recorded.version, recorded.serial, "external",
                       (*recorded.history, actual), recorded.withdrawn, recorded.rollback_serial)  # fmt: skip

    def aliases(self, model: str) -> dict[str, Pointer]:
        rm = self._registered(model)
        if rm is None:
            return {}
        names = set(rm.aliases) | {k.removeprefix("slimgate.pointer.") for k in rm.tags
                                   if k.startswith("slimgate.pointer.")}  # fmt: skip
        out = {}
        for name in sorted(names):
            if not _ALIAS.match(name):
                continue
            try:
                pointer = self._current(rm, model, name)
            except RegistryError as exc:  # removed outside slimgate: promotions stop on it
                log.warning("%s", exc)
                continue
            if pointer is not None:
                out[name] = pointer
        return out

    def problems(self, model: str, version: int, card: dict[str, Any] | None = None) -> list[str]:
        mv = self._version(model, version)
        if mv.status != "READY":
            return [f"MLflow's status of the version is {mv.status}"]
        try:
            card = self._card(mv)  # (re-read: its checksum is checked against the tag)
        except RegistryError as exc:
            return [str(exc).split(" is damaged: ", 1)[-1]]
        out = []
        with tempfile.TemporaryDirectory() as tmp:
            for name, digest in sorted(card.get("files", {}).items()):
                path = self._fetch(mv, name, Path(tmp))
                if path is None:
                    out.append(f"{name} is missing")
                elif (seen := sha256_file(path)) != digest:
                    out.append(f"{name} does not match its checksum (sha256 {seen[:12]}..., card "
                               f"says {str(digest)[:12]}...)")  # fmt: skip
        return out

    def states(self, model: str, *, rehash: Iterable[int] = ()) -> list[VersionState]:
        rm = self._registered(model)
        aliased: dict[int, list[str]] = {}
        for name, pointer in self.aliases(model).items() if rm is not None else ():
            aliased.setdefault(pointer.version, []).append(name)
        full = set(rehash) | set(aliased)
        out = []
        for v, mv in sorted(self._managed(model).items()):
            on = tuple(sorted(aliased.get(v, ())))
            try:
                card = self._card(mv)
            except RegistryError as exc:
                out.append(VersionState(v, "damaged", (str(exc),), aliases=on))
                continue
            if v in full:
                problems = self.problems(model, v, card)
            else:  # presence, from one listing
                listed = self._call(f"listing the files of {model} version {v}",
                                    self.client.list_artifacts, self._run_of(mv), _ARTIFACTS)  # fmt: skip
                names = {Path(f.path).name for f in listed}
                problems = [f"{n} is missing" for n in sorted(card["files"]) if n not in names]
            state = "damaged" if problems else "ok"
            out.append(VersionState(v, state, tuple(problems), card, None, on, v in full))
        return out

    def check(self, model: str, versions: Iterable[int] | None = None) -> Check:
        managed = self._managed(model)
        rehash = sorted(managed) if versions is None else list(versions)
        for v in rehash:
            if v not in managed:
                raise RegistryInputError(f"{model} has no version {v} in {self.describe()}")
        return Check(model, self.states(model, rehash=rehash), self._clear_dead_flags(model))

    def download(self, model: str, version: int, dest: Path) -> list[Path]:
        mv = self._version(model, version)
        card = self._card(mv)
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".slimgate-download-", dir=dest))
        try:
            for name, digest in card["files"].items():
                path = self._fetch(mv, name, staging)
                if path is None or sha256_file(path) != digest:
                    raise RegistryError(f"{model} version {version}: downloaded {name} is missing "
                                        f"or does not match its checksum; nothing in {dest} was "
                                        f"changed")  # fmt: skip
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
        """Upload ``files`` with ``card`` and an ``MLmodel`` to an upload run, read them back, and
        only then create the model version (``pending`` until ``move_alias`` decides)."""
        self._model(model)
        if "model.onnx" not in files:
            raise RegistryInputError("a version needs a model.onnx")
        for name in files:
            if name in (*_RESERVED, "MLmodel") or not _FILE.match(name):
                raise RegistryInputError(f"file name {name!r} is not allowed in a version")
        digest = sha256_file(files["model.onnx"])
        self._ensure_model(model)
        same = self._same_bytes(model, digest)
        if same is not None:
            return Published(same, created=False)

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / _ARTIFACTS
            folder.mkdir()
            for name, path in files.items():
                shutil.copyfile(path, folder / name)
            _write_mlmodel(folder)
            digests = {p.name: sha256_file(p) for p in sorted(folder.iterdir())}
            event = {"time": datetime.now(UTC).isoformat(), "action": "publish", "model": model,
                     "user": _user(), "host": socket.gethostname(), "run_id": run_id}  # fmt: skip
            (folder / "card.json").write_bytes(_json({**card, "files": digests, "event": event}))
            card_sha = sha256_file(folder / "card.json")
            upload = self._call("starting an upload run", self.client.create_run,
                                self._experiment_id(), run_name=f"{model}-{run_id or 'upload'}",
                                tags={UPLOAD: model, "slimgate.run_id": str(run_id)})  # fmt: skip
            rid = upload.info.run_id
            try:
                self._call(f"uploading {model}", self.client.log_artifacts, rid, str(folder),
                           _ARTIFACTS)  # fmt: skip
                self._read_back(rid, {**digests, "card.json": card_sha})
                tags = {**_card_tags(card), MANAGED: "true", CARD_SHA: card_sha, MODEL_SHA: digest,
                        STATE: "pending", BEAT: f"{time.time():.3f}", "slimgate.run_id": str(run_id)}  # fmt: skip
                mv = self._call(f"creating a version of {model}", self.client.create_model_version,
                                model, f"runs:/{rid}/{_ARTIFACTS}", run_id=rid, tags=tags,
                                description=_describe(card, run_id))  # fmt: skip
            except BaseException:
                with contextlib.suppress(Exception):
                    self.client.set_terminated(rid, "FAILED")
                raise
            with contextlib.suppress(Exception):
                self.client.set_terminated(rid, "FINISHED")
        number = int(mv.version)
        self._beats[(model, number)] = self._beat_version(model, number)
        return Published(number, created=True)

    def _ensure_model(self, model: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(model, tags={MANAGED: "true"},
                                                description="published by slimgate")  # fmt: skip
        except MlflowException as exc:
            if _code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise _error(self.target, f"creating the registered model {model}", exc) from None
            rm = self._registered(model)
            if rm is not None and rm.tags.get(MANAGED) != "true":
                self._call("tagging", self.client.set_registered_model_tag, model, MANAGED, "true")

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        if self._experiment is None:
            found = self._call("finding the experiment", self.client.get_experiment_by_name,
                               EXPERIMENT)  # fmt: skip
            if found is None:
                try:
                    self._experiment = str(self.client.create_experiment(EXPERIMENT))
                except MlflowException as exc:  # created meanwhile by another writer
                    if _code(exc) != "RESOURCE_ALREADY_EXISTS":
                        raise _error(
                            self.target, f"creating the experiment {EXPERIMENT}", exc
                        ) from None
                    found = self.client.get_experiment_by_name(EXPERIMENT)
            if found is not None:
                self._experiment = str(found.experiment_id)
        assert self._experiment is not None
        return self._experiment

    def _read_back(self, rid: str, digests: Mapping[str, str]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for name, digest in digests.items():
                got = self._call(f"reading back {name}", self.client.download_artifacts, rid,
                                 f"{_ARTIFACTS}/{name}", tmp)  # fmt: skip
                if sha256_file(Path(got)) != digest:
                    raise RegistryError(f"{name} changed on its way into {self.describe()} "
                                        f"(upload run {rid}); no version was created")  # fmt: skip

    def _same_bytes(self, model: str, digest: str) -> int | None:
        """An intact version holding these model bytes whose promotion needs no alias write
        (it is the alias target, withdrawn, or older than it): the re-run of a promotion.
        Otherwise a new version is created, whose number is its turn."""
        candidates = self._all_versions(model, f" and tags.`{MODEL_SHA}` = '{digest}'")
        pointer = self.pointer(model)
        for mv in sorted(candidates, key=lambda m: -int(m.version)):
            v = int(mv.version)
            if mv.status != "READY" or self.problems(model, v):
                continue
            withdrawn = bool(mv.tags.get(WITHDRAWN)) or (
                pointer is not None and v in pointer.withdrawn
            )
            if withdrawn or (pointer is not None and v <= pointer.version):
                return v
        return None

    def _beat_version(self, model: str, version: int, lifetime_s: float = 600.0) -> _Beat:
        def write(value: str) -> None:
            self.client.set_model_version_tag(model, str(version), BEAT, value)

        return _Beat(write, lifetime_s=lifetime_s)

    def _settle(self, model: str, version: int, state: str, reason: str = "") -> None:
        """Record how the version's promotion ended (it is no longer anyone's turn)."""
        beat = self._beats.pop((model, version), None)
        if beat is not None:
            beat.stop()
        with contextlib.suppress(Exception):  # a missing settle is a stale beat, taken for dead
            if reason:
                self.client.set_model_version_tag(model, str(version), "slimgate.reason",
                                                  reason[:4000])  # fmt: skip
            self.client.set_model_version_tag(model, str(version), STATE, state)

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
        """Point ``alias`` at ``version`` under the policy of ``Registry.move_alias``, once no
        lower-numbered version is pending (see the module's docstring)."""
        self._alias(alias)
        pending = (model, version) in self._beats  # published here: settled whatever happens
        try:
            mv = self._version(model, version)
            pending = pending or mv.tags.get(STATE) == "pending"
            if pending:  # beat for as long as this move may take
                self._restart_beat(model, version, 2 * deadline_s + 600)
            self.verify(model, version)
            if pending:
                self._wait(model, deadline_s, below=version, what=f"version {version}",
                           outcome="it was published but not aliased")  # fmt: skip
            rm = self._registered(model)
            current = self._current(rm, model, alias)
            if current is not None and current.version == version:
                if pending:
                    self._settle(model, version, "aliased")
                return current
            refusal = self._refusal(rm, mv, current, alias, seen_serial)
            if refusal:
                if pending:
                    self._settle(model, version, "refused", refusal)
                raise AliasRefused(f"{model} version {version} was published but {alias} did "
                                   f"not move: {refusal}")  # fmt: skip
            if not pending:
                raise RegistryError(
                    f"{model} version {version} is not being promoted (state "
                    f"{mv.tags.get(STATE)!r}), so it has no turn to move {alias}: publish it again"
                )
            managed = current is not None and current.version in self._managed(model)
            if (
                current is not None
                and managed
                and (problems := self.problems(model, current.version))
            ):
                raise damaged_target(model, alias, current.version, problems)
            pointer = self._write(model, alias, promoted(current, version), action="move_alias",
                                  reason=reason, run_id=run_id, seen_serial=seen_serial)  # fmt: skip
            self._settle(model, version, "aliased")
            return pointer
        except AliasRefused:
            raise
        except BaseException as exc:
            if pending:
                self._settle(model, version, "failed", str(exc))
            raise

    def _restart_beat(self, model: str, version: int, lifetime_s: float) -> None:
        old = self._beats.pop((model, version), None)
        if old is not None:
            old.stop()
        self._beats[(model, version)] = self._beat_version(model, version, lifetime_s)

    def _refusal(
        self, rm: Any, mv: Any, current: Pointer | None, alias: str, seen_serial: int
    ) -> str | None:
        """Why the policy refuses to move ``alias`` to ``mv`` now (None: it moves)."""
        refusal = self._rollback_running(rm, alias)
        if refusal is None and mv.tags.get(WITHDRAWN):
            refusal = f"version {mv.version} was withdrawn by a rollback of {alias}"
        if current is not None and refusal is None:
            refusal = promotion_refusal(current, int(mv.version), alias, seen_serial)
        return refusal

    def _write(
        self, model: str, alias: str, pointer: Pointer, *, action: str, reason: str,
        run_id: str | None, **details: Any,
    ) -> Pointer:  # fmt: skip
        """Set MLflow's alias, then the record beside it (a writer killed in between leaves a
        move that the next reader adopts)."""
        event = {"time": datetime.now(UTC).isoformat(), "action": action, "model": model,
                 "alias": alias, "version": pointer.version, "previous": pointer.previous,
                 "reason": reason[:300], "run_id": run_id, "user": _user(),
                 "host": socket.gethostname(), "serial": pointer.serial, **details}  # fmt: skip
        pointer = Pointer(pointer.version, pointer.previous, pointer.serial, pointer.mode,
                          pointer.history, pointer.withdrawn, pointer.rollback_serial, event)  # fmt: skip
        record = _compact(pointer)
        self._call(f"moving {model}@{alias}", self.client.set_registered_model_alias, model,
                   alias, str(pointer.version))  # fmt: skip
        for attempt in range(4):  # the alias has moved: its record must follow
            try:
                self.client.set_registered_model_tag(model, f"slimgate.pointer.{alias}", record)
                break
            except Exception as exc:
                if attempt == 3:
                    log.warning("%s@%s moved to version %d, but its record could not be written "
                                "(%s); the next reader adopts the move", model, alias,
                                pointer.version, exc)  # fmt: skip
                time.sleep(0.5 * 2**attempt)
        return pointer

    def _wait(
        self, model: str, deadline_s: float, *, below: int | None, what: str, outcome: str
    ) -> None:
        """Wait until no version (below ``below``, or none at all) is pending with a live beat."""
        start = time.monotonic()
        pause = 0.05
        while True:
            now = time.time()
            live = [int(mv.version) for mv in self._all_versions(model, f" and tags.`{STATE}` = 'pending'")
                    if (below is None or int(mv.version) < below) and _fresh(mv.tags.get(BEAT), now)]  # fmt: skip
            if not live:
                return
            waited = time.monotonic() - start
            if waited > deadline_s:
                raise AliasConflict(
                    f"{model}: {what} waited {waited:.0f} s for the promotions of versions "
                    f"{live} to finish; {outcome}"
                )
            time.sleep(pause * (0.5 + 0.5 * (uuid.uuid4().int % 1000) / 1000))
            pause = min(pause * 2, 1.0)

    @staticmethod
    def _rollback_running(rm: Any, alias: str, mine: str = "") -> str | None:
        """Why a rollback flagged on ``rm`` (other than ``mine``) stops a move (None: none)."""
        now = time.time()
        for key, value in (rm.tags if rm is not None else {}).items():
            if key.startswith(f"slimgate.rollback.{alias}.") and key != mine:
                flag = json.loads(value) if value.startswith("{") else {}
                if _fresh(str(flag.get("beat")), now):
                    return (f"a rollback of {alias} by {flag.get('user')}@{flag.get('host')} is "
                            "running; it withdraws what lands meanwhile: re-run the pipeline")  # fmt: skip
        return None

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
        """Move ``alias`` back, as ``Registry.rollback`` does: it flags itself, waits for every
        pending promotion, then decides; promotions that see the flag are refused."""
        self._alias(alias)
        first = self.pointer(model, alias)
        if first is None:
            raise RegistryInputError(f"{model} has no {alias!r} alias to roll back")
        origin = first.version
        key = f"slimgate.rollback.{alias}.{uuid.uuid4().hex[:12]}"

        def flag(beat: str) -> None:
            self.client.set_registered_model_tag(model, key, json.dumps(
                {"user": _user(), "host": socket.gethostname(), "beat": beat}))  # fmt: skip

        self._call(f"flagging a rollback of {model}@{alias}", flag, f"{time.time():.3f}")
        beat = _Beat(flag, lifetime_s=4 * deadline_s)
        try:
            if self._rollback_running(self._registered(model), alias, mine=key):
                raise RegistryError(f"{model}@{alias}: another rollback is running; nothing was "
                                    "changed")  # fmt: skip
            self._wait(model, deadline_s, below=None, what="the rollback",
                       outcome="nothing was changed")  # fmt: skip
            current = self._current(self._registered(model), model, alias)
            target = rollback_target(current, model, alias, origin, to)
            if problems := self.problems(model, target):
                raise RegistryError(f"cannot roll back to {model} version {target}: it is damaged "
                                    f"({'; '.join(problems)})")  # fmt: skip
            assert current is not None  # (rollback_target raised otherwise)
            pointer = rolled_back(current, target)
            withdrawn = [v for v in pointer.withdrawn if v not in current.withdrawn]
            for v in withdrawn:  # first: the tags keep them withdrawn if the record is lost
                self._call(f"withdrawing {model} version {v}", self.client.set_model_version_tag,
                           model, str(v), WITHDRAWN, f"rollback of {alias}: {reason}"[:4000])  # fmt: skip
            return self._write(model, alias, pointer, action="rollback", reason=reason,
                               run_id=run_id, withdrawn=withdrawn)  # fmt: skip
        finally:
            beat.stop()
            with contextlib.suppress(Exception):
                self.client.delete_registered_model_tag(model, key)

    # --- garbage -----------------------------------------------------------------------------------

    def gc(
        self, model: str, older_than: timedelta, *, now: datetime | None = None
    ) -> Sequence[int | str]:
        """Delete upload runs that never became a version, and mark versions whose writer died
        while pending ``abandoned`` (they stay: complete versions are never deleted)."""
        if older_than < MIN_GC_AGE:
            raise RegistryInputError(
                f"older than {older_than}: gc collects only what is older than {MIN_GC_AGE}, "
                "whose writer cannot still be uploading"
            )
        now = now or datetime.now(UTC)
        cutoff_ms = (now - older_than).timestamp() * 1000
        removed: list[int | str] = []
        used = {self._run_of(mv) for mv in self._all_versions(model)
                if str(mv.source).startswith("runs:/")}  # fmt: skip
        runs = self._call("listing upload runs", self.client.search_runs, [self._experiment_id()],
                          f"tags.`{UPLOAD}` = '{self._model(model)}'", max_results=5000)  # fmt: skip
        for run in runs:
            if run.info.run_id not in used and run.info.start_time < cutoff_ms:
                self._call("deleting an upload run", self.client.delete_run, run.info.run_id)
                removed.append(f"upload run {run.info.run_id}")
        for mv in self._all_versions(model, f" and tags.`{STATE}` = 'pending'"):
            if not _fresh(mv.tags.get(BEAT), now.timestamp()) and mv.creation_timestamp < cutoff_ms:
                self._settle(model, int(mv.version), "abandoned", "its writer stopped beating")
                removed.append(int(mv.version))
        return removed

    def _clear_dead_flags(self, model: str) -> list[str]:
        rm = self._registered(model)
        out = []
        for key, value in (rm.tags if rm is not None else {}).items():
            if key.startswith("slimgate.rollback."):
                flag = json.loads(value) if value.startswith("{") else {}
                if not _fresh(str(flag.get("beat")), time.time()):
                    self._call("removing a dead rollback's flag",
                               self.client.delete_registered_model_tag, model, key)  # fmt: skip
                    out.append(f"removed the flag {key} of a rollback that stopped beating")
        return out


def _card_tags(card: Mapping[str, Any]) -> dict[str, str]:
    """The verdict and lineage as version tags, for MLflow's UI and search."""
    lineage = card.get("lineage", {}) or {}
    verdict = card.get("verdict", {}) or {}
    tags = {
        "slimgate.verdict": str(verdict.get("outcome", "")),
        "slimgate.candidate": str(card.get("candidate", "")),
        "slimgate.recipe": json.dumps(lineage.get("recipe"))[:5000],
        "slimgate.spec_sha256": str(lineage.get("spec_sha256", "")),
        "slimgate.data_fingerprint": str(lineage.get("data_fingerprint", "")),
        "slimgate.parent_model_sha256": str(lineage.get("parent_model_sha256", "")),
        "slimgate.version": str(lineage.get("slimgate_version", "")),
    }
    for goal in verdict.get("goals", []) or []:
        value = goal.get("value")
        tags[f"slimgate.goal.{goal.get('goal')}"] = f"{goal.get('outcome')} ({value})"
    return tags


def _describe(card: Mapping[str, Any], run_id: str | None) -> str:
    return (f"slimgate: {card.get('candidate')} of run {run_id}, "
            f"{(card.get('verdict') or {}).get('outcome')} on every goal")  # fmt: skip


def _write_mlmodel(folder: Path) -> None:
    """An ``MLmodel`` with the ``onnx`` and ``python_function`` flavours for ``model.onnx``
    (not re-saved: its bytes are the ones the gate judged), and its requirements."""
    from importlib import metadata

    import mlflow.pyfunc
    from mlflow.models import Model

    versions = {}
    for package in ("onnx", "onnxruntime", "mlflow-skinny"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    requirements = [f"{p}=={v}" for p, v in versions.items()]
    (folder / "requirements.txt").write_text("\n".join(requirements) + "\n")
    python = ".".join(map(str, sys.version_info[:3]))
    (folder / "python_env.yaml").write_text(
        f"python: {python}\nbuild_dependencies:\n- pip\ndependencies:\n- -r requirements.txt\n"
    )
    mlmodel = Model()
    mlflow.pyfunc.add_to_model(mlmodel, loader_module="mlflow.onnx", data="model.onnx",
                               python_env="python_env.yaml")  # fmt: skip
    mlmodel.add_flavor("onnx", onnx_version=versions.get("onnx"), data="model.onnx",
                       providers=["CPUExecutionProvider"], code=None)  # fmt: skip
    mlmodel.save(str(folder / "MLmodel"))
