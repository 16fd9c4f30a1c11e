"""The registry on a real S3 HTTP API (moto's server on loopback), driven through boto3.

Races, kills and lost replies: tests/integration/test_registry_faults.py."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from components.errors import AliasRefused, RegistryError
from components.registry import Registry, store_registry
from components.stores import S3Store


@pytest.fixture
def registry(s3_endpoint: str) -> Registry:
    return store_registry(f"s3://models/test-{uuid.uuid4().hex[:8]}")


def artifact(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / f"{content.hex()[:12]}.onnx"
    path.write_bytes(content)
    return path


def test_versions_aliases_and_events_over_http(registry: Registry, tmp_path: Path) -> None:
    assert isinstance(registry.store, S3Store)
    one = registry.publish(
        "m", {"model.onnx": artifact(tmp_path, b"one")}, {"metrics": {"accuracy": 0.9}}
    )
    two = registry.publish(
        "m", {"model.onnx": artifact(tmp_path, b"two")}, {"metrics": {"accuracy": 0.95}}
    )
    again = registry.publish("m", {"model.onnx": artifact(tmp_path, b"two")}, {})
    assert (one.version, two.version, again.version, again.created) == (1, 2, 2, False)
    assert registry.models() == ["m"] and registry.versions("m") == [1, 2]
    registry.verify("m", 2)
    registry.move_alias("m", 1, reason="first")
    registry.move_alias("m", 2, reason="better")
    with pytest.raises(AliasRefused, match="production is at version 2, newer than 1"):
        registry.move_alias("m", 1, reason="stale read")
    back = registry.rollback("m", reason="regression")
    assert (back.version, back.previous, back.withdrawn) == (1, 2, (2,))
    assert registry.diff("m", 1, 2)["metrics"] == {"accuracy": {"from": 0.9, "to": 0.95}}
    files = registry.download("m", 2, tmp_path / "out")
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b"two" and len(files) == 2
    actions = [e["action"] for e in registry.events("m")]
    assert (
        actions.count("publish") == 3
        and actions.count("move_alias") == 2
        and actions.count("alias_refused") == 1
        and actions[-1] == "rollback"
    )


def test_a_missing_bucket_is_named(s3_endpoint: str, tmp_path: Path) -> None:
    reg = store_registry("s3://no-such-bucket/x")
    with pytest.raises(
        RegistryError, match=r"bucket 'no-such-bucket' does not exist at http://127\.0\.0\.1"
    ):
        reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {})


def test_an_unreachable_endpoint_fails_after_bounded_retries(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AWS_ENDPOINT_URL", "http://127.0.0.1:9"
    )  # nothing listens on the discard port
    reg = store_registry("s3://models/x")
    start = time.monotonic()
    with pytest.raises(
        RegistryError, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:9 after 4 attempts"
    ):
        reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {})
    assert time.monotonic() - start < 60
