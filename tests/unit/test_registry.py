"""The registry protocol on the file store. The same protocol on S3 is tested against a real
S3 HTTP API in tests/integration/test_s3_registry.py."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from components.errors import RegistryError
from components.registry import AliasConflict, FileRegistry


def artifact(tmp_path: Path, content: bytes, name: str = "model.onnx") -> Path:
    path = tmp_path / f"{content.hex()[:8]}-{name}"
    path.write_bytes(content)
    return path


def test_publish_writes_an_immutable_version_with_checksums(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    pub = reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {"note": "x"})
    assert (pub.version, pub.created) == (1, True)
    card = reg.card("m", 1)
    assert card["note"] == "x" and set(card["files"]) == {"model.onnx"}
    reg.verify("m", 1)
    assert sorted(p.name for p in (tmp_path / "reg" / "m" / "versions" / "1").iterdir()) == [
        "card.json", "claim.json", "model.onnx"
    ]  # fmt: skip


def test_same_content_twice_is_one_version(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    first = reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {})
    again = reg.publish("m", {"model.onnx": artifact(tmp_path, b"one", "copy.onnx")}, {})
    other = reg.publish("m", {"model.onnx": artifact(tmp_path, b"two")}, {})
    assert (again.version, again.created) == (first.version, False)
    assert other.version == 2 and reg.versions("m") == [1, 2]


def test_a_version_without_its_card_is_invisible_and_its_number_never_reused(
    tmp_path: Path,
) -> None:
    reg = FileRegistry(tmp_path / "reg")
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {})
    # a writer that died after claiming version 2 and uploading its model
    number = reg._claim("m", run_id="dead")
    assert number == 2
    reg.store.create("m/versions/2/model.onnx", artifact(tmp_path, b"half"))
    assert reg.versions("m") == [1]
    assert reg.publish("m", {"model.onnx": artifact(tmp_path, b"three")}, {}).version == 3
    assert reg.versions("m") == [1, 3]


def test_alias_moves_by_compare_and_swap(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {})
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"two")}, {})
    assert reg.move_alias("m", 1, expected=None, reason="first") == {"version": 1, "previous": None}
    with pytest.raises(AliasConflict, match="points at version 1, expected None"):
        reg.move_alias("m", 2, expected=None, reason="stale")
    assert reg.move_alias("m", 2, expected=1, reason="better") == {"version": 2, "previous": 1}
    moves = [e for e in reg.events("m") if e["action"] == "move_alias"]
    assert [e["version"] for e in moves] == [1, 2] and moves[1]["reason"] == "better"


def test_rollback_moves_the_alias_back_and_records_why(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    for content in (b"one", b"two"):
        reg.publish("m", {"model.onnx": artifact(tmp_path, content)}, {})
    reg.move_alias("m", 1, expected=None, reason="first")
    reg.move_alias("m", 2, expected=1, reason="second")
    assert reg.rollback("m", reason="v2 misbehaves in production") == {"version": 1, "previous": 2}
    event = reg.events("m")[-1]
    assert (
        event["action"] == "rollback"
        and event["reason"] == "v2 misbehaves in production"
        and event["user"]
    )
    reg.rollback("m", reason="back again")
    with pytest.raises(RegistryError, match="no 'staging' alias"):
        reg.rollback("m", alias="staging", reason="x")


def test_alias_refuses_a_tampered_version(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {})
    (tmp_path / "reg" / "m" / "versions" / "1" / "model.onnx").write_bytes(b"evil")
    with pytest.raises(RegistryError, match="does not match its checksum"):
        reg.move_alias("m", 1, expected=None, reason="x")
    assert reg.alias("m") is None
    with pytest.raises(RegistryError, match=r"downloaded model\.onnx does not match its checksum"):
        reg.download("m", 1, tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())


def test_download_and_diff(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {"metrics": {"accuracy": 0.9}})
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"two")}, {"metrics": {"accuracy": 0.95}})
    paths = reg.download("m", 2, tmp_path / "out")
    assert {p.name for p in paths} == {"model.onnx", "card.json"} and (
        tmp_path / "out" / "model.onnx"
    ).read_bytes() == b"two"
    diff = reg.diff("m", 1, 2)
    assert (
        diff["metrics"] == {"accuracy": {"from": 0.9, "to": 0.95}} and "model.onnx" in diff["files"]
    )


def test_concurrent_publishers_get_distinct_complete_versions(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    files = [artifact(tmp_path, bytes([i]) * 1000) for i in range(8)]
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda f=f: results.append(reg.publish("m", {"model.onnx": f}, {}).version)
        )
        for f in files
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 9))
    for v in reg.versions("m"):
        reg.verify("m", v)


@pytest.mark.parametrize("name", ["../etc", "a/b", "UPPER", "", "x" * 65])
def test_model_names_cannot_escape_the_root(tmp_path: Path, name: str) -> None:
    reg = FileRegistry(tmp_path / "reg")
    with pytest.raises(RegistryError, match="model name"):
        reg.publish(name, {"model.onnx": artifact(tmp_path, b"one")}, {})
    assert not (tmp_path / "reg").exists() or not any((tmp_path / "reg").iterdir())


@pytest.mark.parametrize("name", ["../x", "card.json", "claim.json", ".hidden", "a/b"])
def test_file_names_are_checked(tmp_path: Path, name: str) -> None:
    reg = FileRegistry(tmp_path / "reg")
    with pytest.raises(RegistryError, match="is not allowed"):
        reg.publish(
            "m", {"model.onnx": artifact(tmp_path, b"one"), name: artifact(tmp_path, b"x")}, {}
        )
