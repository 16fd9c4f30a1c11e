"""Object stores the registry writes to: the local file system and S3 (boto3).

Both offer the same few primitives, with the guarantees the registry's protocol relies on:
``create`` writes a key only if it does not exist (an exclusive link on the file system,
``IfNoneMatch="*"`` on S3), and ``swap`` replaces a key only if it still has the etag that was
read (a compare under a lock on the file system, ``IfMatch`` on S3).

A create whose reply was lost is retried by the S3 client; the retry finds the key there and
is refused. So a refused create compares what is there with what it meant to write: the same
bytes are its own write, a success, never "someone else's".
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from components.errors import RegistryError

__all__ = ["FileStore", "KeyMissing", "ObjectStore", "S3Store", "open_store"]

T = TypeVar("T")
_CHUNK = 1 << 20


class KeyMissing(RegistryError):
    """The store answered that a key does not exist (not: could not be asked)."""


class ObjectStore(ABC):
    """Keys are ``/``-separated paths below the store's root."""

    @abstractmethod
    def describe(self) -> str:
        """The store as a URI, for messages and records."""

    @abstractmethod
    def read(self, key: str) -> tuple[bytes, str] | None:
        """(content, etag), or None if the key does not exist."""

    def create(self, key: str, data: bytes | Path) -> bool:
        """Write ``key`` only if it does not exist, or already holds exactly these bytes (a
        retried write whose first reply was lost); False if it holds anything else."""
        if self._create(key, data):
            return True
        found = self.read(key)
        if found is None:
            return False
        ours = sha256_file(data) if isinstance(data, Path) else hashlib.sha256(data).hexdigest()
        return hashlib.sha256(found[0]).hexdigest() == ours

    @abstractmethod
    def _create(self, key: str, data: bytes | Path) -> bool:
        """Write ``key`` only if it does not exist; False if it does."""

    @abstractmethod
    def swap(self, key: str, data: bytes, expected_etag: str | None) -> bool:
        """Replace ``key`` only if its etag is still ``expected_etag`` (None: it must not exist)."""

    @abstractmethod
    def keys(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix``."""

    @abstractmethod
    def fetch(self, key: str, dest: Path) -> None:
        """Copy ``key`` to the local file ``dest``."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` if it exists."""

    def sweep(self, older_than: timedelta, now: datetime) -> list[str]:
        """Remove what killed writers left outside any key (nothing, on S3)."""
        return []

    def digest(self, key: str) -> str:
        """sha256 of the key's content, read back from the store."""
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "object"
            self.fetch(key, local)
            return sha256_file(local)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# --- local file system ---------------------------------------------------------------------


class FileStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise RegistryError(f"key {key!r} leaves the registry root {self.root}")
        return path

    def read(self, key: str) -> tuple[bytes, str] | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def _create(self, key: str, data: bytes | Path) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as f:
                if isinstance(data, Path):
                    with data.open("rb") as src:
                        shutil.copyfileobj(src, f, _CHUNK)
                else:
                    f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # atomic, and fails if the key exists
            except FileExistsError:
                return False
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)

    def swap(self, key: str, data: bytes, expected_etag: str | None) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.parent / ".lock"):
            current = self.read(key)
            if (current[1] if current else None) != expected_etag:
                return False
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            return True

    def sweep(self, older_than: timedelta, now: datetime) -> list[str]:
        """The ``.incoming-*`` files of writers killed before they linked them into place."""
        removed = []
        if self.root.is_dir():
            for path in self.root.rglob(".incoming-*"):
                with contextlib.suppress(OSError):
                    if now.timestamp() - path.stat().st_mtime > older_than.total_seconds():
                        path.unlink()
                        removed.append(str(path))
        return removed

    def keys(self, prefix: str) -> list[str]:
        # a prefix is a string, not a folder: "m" also matches "m2/...", as on S3
        start = self._path(prefix) if prefix.endswith("/") else self._path(prefix).parent
        if not prefix:
            start = self.root.resolve()
        if not start.is_dir():
            return []
        out = []
        root = self.root.resolve()  # _path resolved symlinks in the root too
        for path in start.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                key = path.relative_to(root).as_posix()
                if key.startswith(prefix):
                    out.append(key)
        return sorted(out)

    def fetch(self, key: str, dest: Path) -> None:
        path = self._path(key)
        if not path.is_file():
            raise KeyMissing(f"{self.describe()}/{key} not found")
        shutil.copyfile(path, dest)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def digest(self, key: str) -> str:
        path = self._path(key)
        if not path.is_file():
            raise KeyMissing(f"{self.describe()}/{key} not found")
        return sha256_file(path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- S3 ------------------------------------------------------------------------------------------

ATTEMPTS = 4  # botocore's standard retry mode: exponential backoff with jitter


class S3Store(ObjectStore):
    """A prefix of an S3 bucket (AWS, MinIO, any S3 API with conditional writes).

    Credentials and the endpoint come only from the standard AWS chain (environment,
    ``~/.aws``, instance roles; ``AWS_ENDPOINT_URL`` for MinIO): never from the spec.
    """

    page_size = 1000  # keys per listing request (S3's own maximum)

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                retries={"max_attempts": ATTEMPTS, "mode": "standard"},
                connect_timeout=3,
                read_timeout=30,
            )
            self._client = boto3.client("s3", config=config)
        return self._client

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        if ".." in key.split("/"):
            raise RegistryError(f"key {key!r} leaves the registry prefix")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from botocore.exceptions import (
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            HTTPClientError,
            NoCredentialsError,
        )

        try:
            return fn()
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            endpoint = self.client.meta.endpoint_url
            raise RegistryError(
                f"cannot reach the S3 endpoint {endpoint} after {ATTEMPTS} attempts while "
                f"{what}: {exc}; check AWS_ENDPOINT_URL and the network"
            ) from None
        except HTTPClientError as exc:  # a reset connection, a reply that never came
            endpoint = self.client.meta.endpoint_url
            raise RegistryError(
                f"lost the connection to the S3 endpoint {endpoint} {ATTEMPTS} times while "
                f"{what}: {exc}"
            ) from None
        except NoCredentialsError:
            raise RegistryError(
                f"no AWS credentials found while {what} {self.describe()}: set AWS_PROFILE or "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (slimgate reads only the standard AWS chain)"
            ) from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                raise RegistryError(
                    f"bucket {self.bucket!r} does not exist at {self.client.meta.endpoint_url}; "
                    "create it, or fix the registry URI"
                ) from None
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise RegistryError(
                    f"access denied to {self.describe()} while {what} ({code}): check the "
                    "credentials and the bucket policy"
                ) from None
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if int(status or 0) >= 500 or code in ("SlowDown", "Throttling"):
                raise RegistryError(
                    f"the S3 endpoint {self.client.meta.endpoint_url} answered {code or status} "
                    f"{ATTEMPTS} times while {what} {self.describe()}; try again later"
                ) from None
            raise

    @staticmethod
    def _code(exc: Exception) -> str:
        response = getattr(exc, "response", {}) or {}
        return str(response.get("Error", {}).get("Code", ""))

    def read(self, key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        try:
            obj = self._call(
                "reading", lambda: self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            )
        except ClientError as exc:
            if self._code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        return obj["Body"].read(), str(obj["ETag"])

    def _put(self, what: str, **kwargs: Any) -> bool:
        from botocore.exceptions import ClientError

        for attempt in range(ATTEMPTS):
            try:
                self._call(what, lambda: self.client.put_object(Bucket=self.bucket, **kwargs))
                return True
            except ClientError as exc:
                code = self._code(exc)
                if code == "PreconditionFailed":
                    return False
                if code != "ConditionalRequestConflict":  # 409: a concurrent write, try again
                    raise
                time.sleep(random.uniform(0, 0.05 * 2**attempt))
        return False

    def _create(self, key: str, data: bytes | Path) -> bool:
        body = data.read_bytes() if isinstance(data, Path) else data
        return self._put("writing", Key=self._key(key), Body=body, IfNoneMatch="*")

    def swap(self, key: str, data: bytes, expected_etag: str | None) -> bool:
        if expected_etag is None:
            return self._put("writing", Key=self._key(key), Body=data, IfNoneMatch="*")
        return self._put("writing", Key=self._key(key), Body=data, IfMatch=expected_etag)

    def keys(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0

        def listing() -> list[str]:
            out = []
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full, PaginationConfig={"PageSize": self.page_size}
            )
            for page in pages:
                out += [obj["Key"][strip:] for obj in page.get("Contents", [])]
            return out

        return sorted(self._call("listing", listing))

    def fetch(self, key: str, dest: Path) -> None:
        from botocore.exceptions import ClientError

        try:
            self._call(
                "downloading",
                lambda: self.client.download_file(self.bucket, self._key(key), str(dest)),
            )
        except ClientError as exc:
            if self._code(exc) in ("NoSuchKey", "404"):
                raise KeyMissing(f"{self.describe()}/{key} not found") from None
            raise

    def delete(self, key: str) -> None:
        self._call(
            "deleting", lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        )


def open_store(uri: str) -> ObjectStore:
    """``s3://bucket/prefix`` or ``file://path`` (or a plain path) as a store."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        return S3Store(bucket, prefix)
    return FileStore(Path(uri.removeprefix("file://")))
