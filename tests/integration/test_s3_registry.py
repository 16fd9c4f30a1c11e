"""The registry on a real S3 HTTP API (moto's server on loopback), driven through boto3."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from components.errors import RegistryError
from components.registry import AliasConflict, Registry, open_registry
from components.stores import S3Store


@pytest.fixture
def registry(s3_endpoint: str) -> Registry:
    return open_registry(f"s3://models/test-{uuid.uuid4().hex[:8]}")


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
    registry.move_alias("m", 1, expected=None, reason="first")
    registry.move_alias("m", 2, expected=1, reason="better")
    with pytest.raises(AliasConflict):
        registry.move_alias("m", 1, expected=1, reason="stale read")
    assert registry.rollback("m", reason="regression") == {"version": 1, "previous": 2}
    assert registry.diff("m", 1, 2)["metrics"] == {"accuracy": {"from": 0.9, "to": 0.95}}
    files = registry.download("m", 2, tmp_path / "out")
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b"two" and len(files) == 2
    actions = [e["action"] for e in registry.events("m")]
    assert (
        actions.count("publish") == 3
        and actions.count("move_alias") == 2
        and actions[-1] == "rollback"
    )


PROMOTER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from components.promote import _move
    from components.registry import open_registry
    reg = open_registry(sys.argv[1])
    path = Path(sys.argv[2])
    start = float(sys.argv[3])
    time.sleep(max(0.0, start - time.time()))  # start together
    version = reg.publish("m", {"model.onnx": path}, {}, run_id=path.name).version
    _move(reg, "m", version, path.name)
    print(version)
""")


def test_processes_racing_to_promote_leave_one_winner_and_no_damage(
    registry: Registry, tmp_path: Path
) -> None:
    uri = registry.describe()
    start = time.time() + 3
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                PROMOTER,
                uri,
                str(artifact(tmp_path, bytes([i]) * 4096)),
                str(start),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    versions = sorted(int(out) for out, _ in results)
    assert versions == [1, 2, 3, 4]  # each a distinct, complete version
    for v in registry.versions("m"):
        registry.verify("m", v)
    pointer = registry.alias("m")
    assert pointer is not None and pointer["version"] in versions
    events = registry.events("m")
    assert sum(e["action"] == "publish" for e in events) == 4
    moved = [e for e in events if e["action"] == "move_alias"]
    assert len(moved) == 4  # every promotion moved the alias once, in some order
    assert moved[-1]["version"] == pointer["version"]


KILLED = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from components.registry import open_registry
    reg = open_registry(sys.argv[1])
    stage = sys.argv[3]
    if stage == "after-upload":
        reg.publish("m", {"model.onnx": Path(sys.argv[2])}, {})
    else:  # mid-upload: the number is claimed and the model uploaded, the card not yet written
        n = reg._claim("m", run_id="doomed")
        reg.store.create(f"m/versions/{n}/model.onnx", Path(sys.argv[2]))
    print("ready", flush=True)
    time.sleep(600)  # the alias would move next; SIGKILL lands here
""")


@pytest.mark.parametrize("stage", ["after-upload", "mid-upload"])
def test_a_promotion_killed_before_the_alias_moves_leaves_the_registry_consistent(
    registry: Registry, tmp_path: Path, stage: str
) -> None:
    registry.publish("m", {"model.onnx": artifact(tmp_path, b"old")}, {})
    registry.move_alias("m", 1, expected=None, reason="first")
    proc = subprocess.Popen([sys.executable, "-c", KILLED, registry.describe(), str(artifact(tmp_path, b"new")), stage],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    assert registry.alias("m") == {"version": 1, "previous": None}  # production untouched
    complete = registry.versions("m")
    assert complete == ([1, 2] if stage == "after-upload" else [1])
    for v in complete:
        registry.verify("m", v)
    # the next promotion succeeds, and a dead writer's number is never reused
    nxt = registry.publish("m", {"model.onnx": artifact(tmp_path, b"next")}, {})
    assert nxt.version == 3
    registry.move_alias("m", nxt.version, expected=1, reason="after the crash")
    assert registry.alias("m") == {"version": 3, "previous": 1}


def test_a_missing_bucket_is_named(s3_endpoint: str, tmp_path: Path) -> None:
    reg = open_registry("s3://no-such-bucket/x")
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
    reg = open_registry("s3://models/x")
    start = time.monotonic()
    with pytest.raises(
        RegistryError, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:9 after 4 attempts"
    ):
        reg.publish("m", {"model.onnx": artifact(tmp_path, b"one")}, {})
    assert time.monotonic() - start < 60
