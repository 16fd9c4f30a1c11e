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
    assert not list((tmp_path / "reg" / "m" / ".staging").iterdir())  # staging cleaned up


def test_same_content_twice_is_one_version(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    first = reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {})
    again = reg.publish("m", {"model.onnx": artifact(tmp_path, b"one", "copy.onnx")}, {})
    other = reg.publish("m", {"model.onnx": artifact(tmp_path, b"two")}, {})
    assert (again.version, again.created) == (first.version, False)
    assert other.version == 2 and reg.versions("m") == [1, 2]


def test_alias_moves_by_compare_and_swap(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {})
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"two")}, {})
    assert reg.move_alias("m", 1, expected=None, reason="first") == {"version": 1, "previous": None}
    with pytest.raises(AliasConflict, match="points at version 1, expected None"):
        reg.move_alias("m", 2, expected=None, reason="stale")
    assert reg.move_alias("m", 2, expected=1, reason="better") == {"version": 2, "previous": 1}
    events = reg.events("m")
    assert [e["version"] for e in events] == [1, 2] and events[1]["reason"] == "better"


def test_alias_refuses_a_tampered_version(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "reg")
    reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {})
    (tmp_path / "reg" / "m" / "versions" / "1" / "model.onnx").write_bytes(b"evil")
    with pytest.raises(RegistryError, match="does not match its checksum"):
        reg.move_alias("m", 1, expected=None, reason="x")
    assert reg.alias("m") is None


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
