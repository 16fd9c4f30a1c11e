"""Every bad input is refused before any work, in one line per problem, with the right exit code,
no traceback, the registry untouched and no run directory left unmarked.

Each case edits the quick spec (the breast-cancer MLP) or the files it names, runs
``slimgate run`` in this process, and checks all of that.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from components.cli import main
from components.testing import write_quick_spec

ROOT = Path(__file__).resolve().parents[2]


def cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    frame: pd.DataFrame = load_breast_cancer(as_frame=True).frame
    return frame


def csv(tmp: Path, frame: pd.DataFrame, name: str = "data.csv") -> dict[str, Any]:
    frame.to_csv(tmp / name, index=False)
    return {"data": {"path": name, "label": "target"}}


def onnx_identity(path: Path, features: int) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", features])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


class Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("pickled code ran",))


def spec_file(tmp: Path, text: bytes) -> Path:
    path = tmp / "raw.yaml"
    path.write_bytes(text)
    return path


# (id, what to do in the tmp folder -> the spec path, exit code, a fragment of the message)
Case = tuple[str, Callable[[Path], Path], int, str]


def edit(**fields: Any) -> Callable[[Path], Path]:
    return lambda tmp: write_quick_spec(tmp, **fields)


def with_files(make: Callable[[Path], dict[str, Any]]) -> Callable[[Path], Path]:
    return lambda tmp: write_quick_spec(tmp, **make(tmp))


def regression(tmp: Path) -> dict[str, Any]:
    frame = cancer()
    frame["target"] = 4.2
    return {**csv(tmp, frame), "task": "regression", "goals": {"error": {"max_increase": 0.1}}}


def one_row_class(tmp: Path) -> dict[str, Any]:
    frame = cancer()
    frame.loc[0, "target"] = 7
    return csv(tmp, frame)


def with_value(value: float) -> Callable[[Path], dict[str, Any]]:
    def make(tmp: Path) -> dict[str, Any]:
        frame = cancer()
        frame.iloc[3, 0] = value
        return csv(tmp, frame)

    return make


def labelled(labels: list[Any]) -> Callable[[Path], dict[str, Any]]:
    return lambda tmp: {**csv(tmp, cancer()), "validation": {"labels": labels}}


def duplicated(tmp: Path) -> dict[str, Any]:
    frame = cancer()
    frame = pd.concat([frame, frame.iloc[:3]], ignore_index=True)
    return csv(tmp, frame)


def registry_file(tmp: Path) -> dict[str, Any]:
    (tmp / "registry-file").write_text("not a folder")
    return {"registry": str(tmp / "registry-file")}


def cache_file(tmp: Path) -> dict[str, Any]:
    (tmp / "cache-file").write_text("not a folder")
    return {"cache": {"uri": str(tmp / "cache-file")}}


def garbage_onnx(tmp: Path) -> dict[str, Any]:
    (tmp / "model.onnx").write_bytes(b"\x08\x07garbage" * 10)
    return {"model": {"onnx": "model.onnx"}}


def narrow_onnx(tmp: Path) -> dict[str, Any]:
    onnx_identity(tmp / "narrow.onnx", 3)
    return {"model": {"onnx": "narrow.onnx"}}


def pickled_weights(tmp: Path) -> dict[str, Any]:
    import torch

    torch.save({"w": Evil()}, tmp / "weights.pt")
    return {"model": {"factory": "components.models:nothing", "weights": "weights.pt"}}


CASES: list[Case] = [
    # the spec
    ("not-utf8", lambda t: spec_file(t, b"name: x\ndata: \xff\xfe\n"), 2, "not UTF-8 text"),
    ("empty-spec", lambda t: spec_file(t, b""), 2, "the spec is empty"),
    ("spec-is-a-list", lambda t: spec_file(t, b"- name\n- data\n"), 2, "got a list"),
    ("bad-yaml", lambda t: spec_file(t, b"name: [x\n"), 2, "not valid YAML"),
    ("spec-is-a-folder", lambda t: t, 2, "is a folder; give the spec's YAML file"),
    ("no-spec", lambda t: t / "missing.yaml", 2, "spec file not found"),
    ("no-goals", edit(goals=None), 2, "goals"),
    ("model-null", edit(model=None), 2, "model: expected exactly one of"),  # found by hypothesis
    ("unknown-field", edit(colour="blue"), 2, "colour"),
    ("latency-not-a-number", edit(goals={"latency": {"max_ms": "fast"}}), 2,
     "goals.latency.max_ms: Input should be a valid number"),
    ("unknown-optimizer", edit(candidates=[["pruning.magic"]]), 2, "unknown optimizer"),
    ("split-too-large", edit(split={"test": 0.9}), 2, "split.test"),
    ("accuracy-above-1", edit(goals={"accuracy": {"min": 1.5}}), 2, "goals.accuracy.min"),
    ("goal-without-bound", edit(goals={"accuracy": {}}), 2, "set min, max_drop"),
    # the data
    ("no-data-file", edit(data={"path": "missing.csv", "label": "target"}), 2, "file not found"),
    ("one-class", with_files(lambda t: csv(t, cancer().assign(target=1))), 2,
     "the label column holds 1 class"),
    ("class-of-one-row", with_files(one_row_class), 2, "every class needs at least 3 rows"),
    ("constant-target", with_files(regression), 2, "the target is constant"),
    ("beyond-float32", with_files(with_value(1e308)), 2, "beyond float32's range"),
    ("infinite", with_files(with_value(np.inf)), 2, "+-inf"),
    ("too-few-rows-for-the-goals", with_files(lambda t: {
        **csv(t, cancer().sample(60, random_state=0)), "goals": {"agreement": {"min": 0.97}}}), 2,
     "needs at least 99"),
    ("header-only", with_files(lambda t: csv(t, cancer().iloc[:0])), 2, "data check"),
    ("text-feature", with_files(lambda t: csv(t, cancer().assign(**{"mean radius": "big"}))), 2,
     "data check"),
    ("label-column-missing", with_files(lambda t: {**csv(t, cancer()),
                                                   "data": {"path": "data.csv", "label": "y"}}),
     2, "'y'"),
    ("labels-outside-the-set", with_files(labelled([0, 2])), 2,
     "expect_column_values_to_be_in_set column 'target': value_set=[0, 2]"),
    ("duplicate-rows", with_files(duplicated), 2, "expect_compound_columns_to_be_unique"),
    # the model
    ("no-onnx-file", edit(model={"onnx": "missing.onnx"}), 2, "missing.onnx"),
    ("garbage-onnx", with_files(garbage_onnx), 2, "model.onnx:"),
    ("onnx-of-other-width", with_files(narrow_onnx), 2, "narrow.onnx"),
    ("pickled-weights", with_files(pickled_weights), 2, "holds pickled Python objects"),
    ("no-weights-file", edit(model={"factory": "x:y", "weights": "missing.pt"}), 2, "missing.pt"),
    ("factory-not-importable", edit(model={"factory": "nosuch.module:build"}), 2,
     "cannot import 'nosuch.module:build'"),
    # the registry and the cache
    ("registry-is-a-file", with_files(registry_file), 2, "registry: "),
    ("cache-is-a-file", with_files(cache_file), 2, "cache.uri: "),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line_per_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], case: Case
) -> None:
    _, make, code, message = case
    monkeypatch.chdir(tmp_path)
    spec = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["run", str(spec), "--runs-dir", str(tmp_path / "runs")]) == code
    err = capsys.readouterr().err
    problems = [line for line in err.splitlines() if line.startswith("slimgate: error:")]
    assert problems and message in err, err
    assert "Traceback" not in err and "pickled code ran" not in err, err
    assert all(len(line) < 700 for line in problems), problems  # examples are cut short
    assert "weights_only=False" not in err
    # the registry is untouched: nothing was written where it would be
    assert not (tmp_path / "registry").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "runs") == [
        n for n in before if n != "runs"
    ]
    # a run that started says how it ended
    for run in (tmp_path / "runs").glob("[!.]*/"):
        state = json.loads((run / "state.json").read_text())
        assert state["state"] == "failed" and state["error"], state


def test_integer_labels_pass_when_they_are_the_labels(tmp_path: Path) -> None:
    from components.prepare import prepare_data
    from components.spec import load_spec

    spec = load_spec(write_quick_spec(tmp_path, **csv(tmp_path, cancer()),
                                      validation={"labels": [0, 1]}))  # fmt: skip
    assert spec.validation.labels == ["0", "1"]
    assert prepare_data(spec, tmp_path / "run")["classes"] == ["0", "1"]


def test_validate_runs_the_same_preflight(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_quick_spec(tmp_path, **registry_file(tmp_path))
    assert main(["validate", str(spec)]) == 2
    assert "registry: " in capsys.readouterr().err


def test_an_unreachable_s3_registry_is_bad_input_found_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    s3_endpoint: str,
) -> None:  # fmt: skip
    spec = write_quick_spec(tmp_path, registry="s3://no-such-bucket/x")
    assert main(["run", str(spec), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "registry: bucket 'no-such-bucket' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # found before any run started
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    spec = write_quick_spec(tmp_path, registry="s3://models/x")
    assert main(["validate", str(spec)]) == 2
    assert "registry: cannot reach the S3 endpoint http://127.0.0.1:9" in capsys.readouterr().err


def test_a_killed_run_is_marked_abandoned_and_resumed(tmp_path: Path) -> None:
    spec = write_quick_spec(tmp_path)
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "components.cli", "run", str(spec), "--runs-dir", str(runs)]
    proc = subprocess.Popen([*cmd, "--run-id", "killed"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (runs / "killed" / "steps" / "baseline.json").is_file():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((runs / "killed" / "state.json").read_text())["state"] == "running"

    # the next run in the same folder marks it; --resume continues it from its finished steps
    other = subprocess.run([*cmd, "--run-id", "next"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, check=False)  # fmt: skip
    assert other.returncode == 0, other.stderr
    assert json.loads((runs / "killed" / "state.json").read_text())["state"] == "abandoned"
    # quiet by default: third-party logging goes to the run's log file, not the terminal
    assert "great_expectations" not in other.stderr and " INFO " not in other.stderr
    assert "INFO great_expectations" in (runs / "next" / "run.log").read_text()
    changed = write_quick_spec(tmp_path, training={"epochs": 6})
    stale = subprocess.run([sys.executable, "-m", "components.cli", "run", str(changed),
                            "--runs-dir", str(runs), "--resume", "killed"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert stale.returncode == 2 and "the spec changed since run killed started" in stale.stderr
    again = subprocess.run([*cmd, "--resume", "killed"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, check=False)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "= prepare_data kept from the interrupted run" in again.stderr
    assert "= baseline kept from the interrupted run" in again.stderr
    assert json.loads((runs / "killed" / "state.json").read_text())["state"] == "promoted"
    refused = subprocess.run([*cmd, "--resume", "killed"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300, check=False)  # fmt: skip
    assert refused.returncode == 2 and "finished (promoted); nothing to continue" in refused.stderr


def test_resume_refuses_a_run_whose_input_files_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = write_quick_spec(tmp_path, **csv(tmp_path, cancer().assign(target=1)))
    runs = ["--runs-dir", str(tmp_path / "runs")]
    assert main(["run", str(spec), *runs, "--run-id", "one-class"]) == 2
    state = json.loads((tmp_path / "runs" / "one-class" / "state.json").read_text())
    assert state["state"] == "failed" and str(tmp_path / "data.csv") in state["inputs"]
    capsys.readouterr()
    cancer().to_csv(tmp_path / "data.csv", index=False)  # fixed, at the same path
    assert main(["run", str(spec), *runs, "--resume", "one-class"]) == 2
    assert "data.csv changed since run one-class started" in capsys.readouterr().err
