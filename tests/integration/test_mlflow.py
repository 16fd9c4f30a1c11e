"""The registry and tracking on a real ``mlflow server`` on loopback (tests/conftest.py), checked
through MLflow's own client: what a serving stack that resolves ``models:/NAME@production`` sees.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from components.cli import main
from components.errors import AliasRefused, RegistryError
from components.layout import RunLayout, read_json
from components.mlflow_registry import BEAT, STATE, MlflowRegistry, mlflow_client, tracking_uri
from components.registry import AliasConflict, open_registry
from components.stores import sha256_file
from components.testing import write_quick_spec

ROOT = Path(__file__).resolve().parents[2]


def fresh() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def onnx_model(path: Path, seed: int) -> Path:
    """A 4 -> 3 linear model whose weights (and so bytes) differ with ``seed``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).normal(size=(4, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        initializer=[numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def publish(reg: MlflowRegistry, model: str, tmp: Path, seed: int) -> int:
    folder = tmp / f"v{seed}"
    folder.mkdir(exist_ok=True)
    files = {"model.onnx": onnx_model(folder / "model.onnx", seed)}
    card = {"candidate": f"c{seed}", "verdict": {"outcome": "pass", "goals": []},
            "metrics": {"accuracy": 0.9 + seed / 1000}}  # fmt: skip
    return reg.publish(model, files, card, run_id=f"run-{seed}").version


def promote(reg: MlflowRegistry, model: str, tmp: Path, seed: int) -> int:
    version = publish(reg, model, tmp, seed)
    reg.move_alias(model, version, reason="test")
    return version


@pytest.fixture
def reg(mlflow_server: str) -> MlflowRegistry:
    registry = open_registry(mlflow_server)
    assert isinstance(registry, MlflowRegistry)
    return registry


def test_a_run_promotes_a_version_that_serving_resolves(
    mlflow_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow
    import onnxruntime as ort

    name = fresh()
    spec = write_quick_spec(tmp_path, name=name, registry=mlflow_server,
                            tracking={"mlflow": mlflow_server})  # fmt: skip
    runs = tmp_path / "runs"
    assert main(["run", str(spec), "--runs-dir", str(runs), "--run-id", "first"]) == 0
    run = RunLayout(runs / "first")
    promotion = read_json(run.promotion)
    assert (promotion["status"], promotion["version"], promotion["registry"]) == (
        "promoted", 1, f"mlflow {tracking_uri(mlflow_server)}")  # fmt: skip

    client = mlflow_client(mlflow_server)
    mv = client.get_model_version_by_alias(name, "production")
    assert mv.version == "1" and mv.status == "READY"
    tags = mv.tags
    assert tags["slimgate.verdict"] == "pass" and tags["slimgate.candidate"] == "int8"
    assert tags[STATE] == "aliased" and tags["slimgate.run_id"] == "first"
    assert tags["slimgate.data_fingerprint"] == read_json(run.dataset)["fingerprint"]
    assert tags["slimgate.goal.accuracy"].startswith("pass")
    listed = {Path(f.path).name for f in client.list_artifacts(mv.run_id, "model")}
    assert listed == {"MLmodel", "card.json", "model.onnx", "report.html", "requirements.txt",
                      "python_env.yaml"}  # fmt: skip

    # models:/NAME@production: the bytes the gate judged, and they run
    mlflow.set_tracking_uri(tracking_uri(mlflow_server))  # (models:/ reads the registry URI)
    local = Path(mlflow.artifacts.download_artifacts(
        f"models:/{name}@production", dst_path=str(tmp_path / "served"),
        tracking_uri=tracking_uri(mlflow_server)))  # fmt: skip
    judged = run.candidate("int8").model
    assert sha256_file(local / "model.onnx") == sha256_file(judged)
    x = np.load(run.split("test"))["x"][:5].astype(np.float32)
    session = ort.InferenceSession(str(local / "model.onnx"), providers=["CPUExecutionProvider"])
    scores = session.run(None, {session.get_inputs()[0].name: x})[0]
    served = mlflow.pyfunc.load_model(f"models:/{name}@production")
    out = served.predict({session.get_inputs()[0].name: x})
    np.testing.assert_allclose(next(iter(out.values())), scores, rtol=1e-6)

    # the registry CLI reads it
    capsys.readouterr()
    assert main(["registry", "list", name, "--registry", mlflow_server]) == 0
    assert f"{name}\tv1 production\tint8" in capsys.readouterr().out
    assert main(["registry", "show", name, "--registry", mlflow_server]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 1 and shown["damaged"] == [] and shown["candidate"] == "int8"
    assert main(["registry", "verify", name, "--registry", mlflow_server]) == 0
    assert "v1 production\tok (re-hashed)" in capsys.readouterr().out

    # tracking: the run, and a nested run per candidate with its metrics
    record = read_json(run.tracking)
    assert record["status"] == "logged"
    parent = client.get_run(record["run"])
    assert parent.data.tags["slimgate.outcome"] == "promoted"
    assert parent.data.tags["slimgate.version"] == "1"
    assert parent.data.params["goal.accuracy.max_drop"] == "0.1"
    assert "baseline.accuracy" in parent.data.metrics
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "slimgate")} >= {
        "slimgate/report.html", "slimgate/verdict.json", "slimgate/promotion.json"}  # fmt: skip
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")  # fmt: skip
    assert [c.data.tags["slimgate.candidate"] for c in children] == ["int8"]
    child = children[0].data
    assert child.tags["slimgate.outcome"] == "pass" and child.tags["slimgate.selected"] == "true"
    assert child.params["step0.key"] == "quantization.dynamic_int8"
    for metric in ("accuracy", "agreement", "size_bytes", "speedup", "speedup_low",
                   "batch1.p50_ms", "batch1.p99_ms", "goal.accuracy"):  # fmt: skip
        assert metric in child.metrics, metric
    assert child.metrics["size_bytes"] == read_json(run.candidate("int8").metrics)["size_bytes"]

    # the report step again (a resume) logs into the same runs
    assert (
        main(["step", "report", "--spec", str(spec), "--runs-dir", str(runs), "--run-id", "first"])
        == 0
    )
    assert read_json(run.tracking)["run"] == record["run"]
    assert len(client.search_runs([parent.info.experiment_id], "")) == 2


def test_a_rejected_run_creates_no_version_and_moves_no_alias(
    mlflow_server: str, reg: MlflowRegistry, tmp_path: Path
) -> None:
    name = fresh()
    first = promote(reg, name, tmp_path, 1)
    client = mlflow_client(mlflow_server)
    before = [m.version for m in client.search_model_versions(f"name='{name}'")]
    # a half-size goal that dynamic int8 of this MLP cannot meet
    spec = write_quick_spec(tmp_path, name=name, registry=mlflow_server,
                            goals={"size": {"max_ratio": 0.01}},
                            tracking={"mlflow": mlflow_server})  # fmt: skip
    runs = tmp_path / "runs"
    assert main(["run", str(spec), "--runs-dir", str(runs), "--run-id", "rejected"]) == 3
    assert [m.version for m in client.search_model_versions(f"name='{name}'")] == before
    assert client.get_model_version_by_alias(name, "production").version == str(first)
    pointer = reg.pointer(name)
    assert pointer is not None and pointer.history == (first,)
    tracked = client.get_run(read_json(RunLayout(runs / "rejected").tracking)["run"])
    assert tracked.data.tags["slimgate.outcome"] == "rejected"


CONTENDER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from components.errors import AliasRefused
    from components.registry import open_registry
    uri, name, model, start = sys.argv[1], sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])
    reg = open_registry(uri)
    version = reg.publish(name, {"model.onnx": model}, {"verdict": {"outcome": "pass"}}).version
    time.sleep(max(0.0, start - time.time()))  # move together
    try:
        reg.move_alias(name, version, reason="race")
        print(json.dumps({"version": version, "status": "aliased"}))
    except AliasRefused as exc:
        print(json.dumps({"version": version, "status": "refused", "reason": str(exc)}))
""")


def test_concurrent_promotions_leave_a_consistent_alias(
    mlflow_server: str, reg: MlflowRegistry, tmp_path: Path
) -> None:
    name = fresh()
    models = [onnx_model(tmp_path / f"{seed}.onnx", seed) for seed in range(6)]
    start = time.time() + 25  # after every contender has imported MLflow and published
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, mlflow_server, name, str(model),
                               str(start)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for model in models]  # fmt: skip
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    versions = sorted(r["version"] for r in results)
    assert versions == [1, 2, 3, 4, 5, 6]
    pointer = reg.pointer(name)
    assert pointer is not None
    # the newest version won, the alias only ever moved forward, and refusals were only that
    assert pointer.version == 6
    assert list(pointer.history) == sorted(set(pointer.history))
    aliased = sorted(r["version"] for r in results if r["status"] == "aliased")
    assert aliased == list(pointer.history)
    for r in results:
        if r["status"] == "refused":
            assert "the alias only moves forward" in r["reason"], r
    client = mlflow_client(mlflow_server)
    assert client.get_model_version_by_alias(name, "production").version == "6"
    states = {m.version: m.tags[STATE] for m in client.search_model_versions(f"name='{name}'")}
    assert set(states.values()) <= {"aliased", "refused"}, states


def test_a_pending_lower_version_moves_first_and_a_dead_one_is_skipped(
    mlflow_server: str, reg: MlflowRegistry, tmp_path: Path
) -> None:
    name = fresh()
    low, high = publish(reg, name, tmp_path, 1), publish(reg, name, tmp_path, 2)
    done: list[Any] = []
    waiter = threading.Thread(target=lambda: done.append(reg.move_alias(name, high, reason="b")))
    waiter.start()
    waiter.join(timeout=3)
    assert waiter.is_alive()  # its turn comes after the pending version below it
    reg.move_alias(name, low, reason="a")
    waiter.join(timeout=60)
    assert not waiter.is_alive() and done[0].version == high
    pointer = reg.pointer(name)
    assert pointer is not None and pointer.history == (low, high)

    # a live pending version below holds the alias until the deadline: published, not aliased
    stuck, third = publish(reg, name, tmp_path, 3), publish(reg, name, tmp_path, 4)
    with pytest.raises(AliasConflict, match=f"versions \\[{stuck}\\] to finish"):
        reg.move_alias(name, third, reason="c", deadline_s=1)
    client = mlflow_client(mlflow_server)
    assert client.get_model_version(name, str(third)).tags[STATE] == "failed"
    # ... until it stops beating: a writer killed while pending is skipped
    reg._beats.pop((name, stuck)).stop()
    client.set_model_version_tag(name, str(stuck), BEAT, f"{time.time() - 120:.3f}")
    fifth = publish(reg, name, tmp_path, 5)
    assert reg.move_alias(name, fifth, reason="d", deadline_s=5).version == fifth


def test_rollback_withdraws_and_later_promotions_of_it_are_refused(
    mlflow_server: str, reg: MlflowRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = fresh()
    one, two = promote(reg, name, tmp_path, 1), promote(reg, name, tmp_path, 2)
    capsys.readouterr()
    assert main(["registry", "rollback", name, "--reason", "regression",
                 "--registry", mlflow_server]) == 0  # fmt: skip
    assert (
        f"{name}@production: version {two} -> {one} (withdrawn: v{two})" in capsys.readouterr().out
    )
    client = mlflow_client(mlflow_server)
    assert client.get_model_version_by_alias(name, "production").version == str(one)
    assert "regression" in client.get_model_version(name, str(two)).tags["slimgate.withdrawn"]
    # the withdrawn model again: the same version, refused
    again = publish(reg, name, tmp_path, 2)
    assert again == two
    with pytest.raises(AliasRefused, match="withdrawn by a rollback"):
        reg.move_alias(name, again, reason="again")
    # a promotion that sees a rollback running is refused (the rollback withdraws it anyway)
    flag = json.dumps({"user": "ops", "host": "h", "beat": f"{time.time():.3f}"})
    client.set_registered_model_tag(name, "slimgate.rollback.production.test", flag)
    three = publish(reg, name, tmp_path, 3)
    with pytest.raises(AliasRefused, match="a rollback of production by ops@h is running"):
        reg.move_alias(name, three, reason="during a rollback")
    assert client.get_model_version(name, str(three)).tags[STATE] == "refused"
    client.delete_registered_model_tag(name, "slimgate.rollback.production.test")


def test_damage_is_found_and_nothing_moves_over_it(
    mlflow_server: str, reg: MlflowRegistry, tmp_path: Path
) -> None:
    name = fresh()
    one = promote(reg, name, tmp_path, 1)
    client = mlflow_client(mlflow_server)
    mv = client.get_model_version(name, str(one))
    tampered = tmp_path / "tampered" / "model.onnx"
    tampered.parent.mkdir()
    onnx_model(tampered, 99)
    client.log_artifact(mv.run_id, str(tampered), "model")  # overwrites the version's file
    assert reg.problems(name, one)[0].startswith("model.onnx does not match its checksum")
    assert main(["registry", "verify", name, "--registry", mlflow_server]) == 1
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(RegistryError, match="does not match its checksum; nothing in"):
        reg.download(name, one, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]
    two = publish(reg, name, tmp_path, 2)
    with pytest.raises(RegistryError, match=f"points at version {one}, which is damaged"):
        reg.move_alias(name, two, reason="over damage")
    assert client.get_model_version_by_alias(name, "production").version == str(one)


def test_an_alias_moved_outside_slimgate_is_adopted(
    mlflow_server: str, reg: MlflowRegistry, tmp_path: Path
) -> None:
    name = fresh()
    one, two = promote(reg, name, tmp_path, 1), promote(reg, name, tmp_path, 2)
    client = mlflow_client(mlflow_server)
    client.set_registered_model_alias(name, "production", str(one))  # someone, in the UI
    pointer = reg.pointer(name)
    assert pointer is not None  # back to a version it held: taken as a rollback
    assert (pointer.version, pointer.mode, pointer.history, pointer.withdrawn) == (
        one, "external", (one,), (two,))  # fmt: skip
    three = publish(reg, name, tmp_path, 3)
    with pytest.raises(AliasRefused, match="was rolled back"):  # judged before it
        reg.move_alias(name, three, reason="stale", seen_serial=2)
    four = publish(reg, name, tmp_path, 4)
    reg.move_alias(name, four, reason="after it", seen_serial=pointer.serial)
    client.set_registered_model_alias(name, "production", str(three))  # a version it never held
    pointer = reg.pointer(name)
    assert pointer is not None and (pointer.version, pointer.history) == (three, (one, four, three))
    client.delete_registered_model_alias(name, "production")
    with pytest.raises(RegistryError, match="was removed outside slimgate"):
        reg.pointer(name)


def test_an_unreachable_server_is_bad_input_found_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    spec = write_quick_spec(tmp_path, registry=f"mlflow://127.0.0.1:{port}")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"registry: cannot reach the MLflow server at http://127.0.0.1:{port}" in err
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = write_quick_spec(tmp_path, registry="mlflow://")
    assert main(["validate", str(spec)]) == 2
    assert "MLFLOW_TRACKING_URI is not set" in capsys.readouterr().err
    spec = write_quick_spec(tmp_path, tracking={"mlflow": f"http://127.0.0.1:{port}"})
    assert main(["validate", str(spec)]) == 2
    assert "tracking.mlflow: cannot reach the MLflow server" in capsys.readouterr().err


def test_diff_and_gc_through_the_cli_and_gc_never_deletes_a_version(
    mlflow_server: str, reg: MlflowRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime, timedelta

    from components.mlflow_registry import EXPERIMENT, UPLOAD

    name = fresh()
    one, two = promote(reg, name, tmp_path, 1), promote(reg, name, tmp_path, 2)
    capsys.readouterr()
    assert main(["registry", "diff", name, str(one), str(two), "--registry", mlflow_server]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["accuracy"] == {
        "from": 0.901, "to": 0.902}  # fmt: skip
    client = mlflow_client(mlflow_server)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    orphan = client.create_run(experiment, tags={UPLOAD: name}).info.run_id  # never a version
    dead = publish(reg, name, tmp_path, 3)
    reg._beats.pop((name, dead)).stop()
    client.set_model_version_tag(name, str(dead), BEAT, f"{time.time() - 120:.3f}")
    later = datetime.now(UTC) + timedelta(hours=2)
    removed = reg.gc(name, timedelta(hours=1), now=later)
    assert removed == [f"upload run {orphan}", dead]
    assert client.get_run(orphan).info.lifecycle_stage == "deleted"
    assert client.get_model_version(name, str(dead)).tags[STATE] == "abandoned"
    assert reg.versions(name) == [one, two, dead] and reg.problems(name, two) == []
    assert main(["registry", "gc", name, "--older-than", "1h", "--registry", mlflow_server]) == 0
    assert f"{name}: removed 0 leftover(s)" in capsys.readouterr().out
