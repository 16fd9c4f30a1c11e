"""The Airflow DAG run whole with dag.test() on a real metadata DB (SQLite in a temporary
AIRFLOW_HOME). Each run is a subprocess, so Airflow reads that home's configuration fresh."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("airflow", reason="install slimgate[airflow] to test the DAG")

DAG_FILE = Path(__file__).parents[2] / "dags" / "slimgate_airflow.py"

RUNNER = textwrap.dedent("""
    import importlib.util, json, os, sys
    path = os.path.join(os.environ["AIRFLOW__CORE__DAGS_FOLDER"], "slimgate_airflow.py")
    spec = importlib.util.spec_from_file_location("slimgate_airflow", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = module.slimgate.test(run_conf=json.loads(sys.argv[1]))
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    with create_session() as session:
        events = [{"asset": e.asset.name, "extra": e.extra} for e in session.query(AssetEvent).all()]
    tasks = {f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id: str(ti.state)
             for ti in run.get_task_instances()}
    print("RESULT " + json.dumps({"state": str(run.state), "tasks": tasks, "events": events}))
""")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("airflow")
    (root / "dags").mkdir()
    shutil.copy(DAG_FILE, root / "dags")
    spec = {
        "name": "cancer-mlp",
        "model": {"builtin": "tabular_mlp"},
        "data": {"builtin": "breast_cancer"},
        "training": {"epochs": 3},
        "target": {"threads": 1, "batch_sizes": [1]},
        "benchmark": {"warmup": 2, "min_runs": 20, "min_seconds": 0.05, "compare_rounds": 4,
                      "compare_seconds": 0.02, "compare_min_runs": 10},
        "goals": {"size": {"max_ratio": 0.5}, "accuracy": {"max_drop": 0.05}},
        "candidates": [["quantization.dynamic_int8"], [{"quantization.dynamic_int8": {"per_channel": True}}]],
        "search": {"trials": 2, "sampler": "random", "recipes": [{"name": "prune-int8", "steps": [
            {"pruning.structured": {"ratio": {"choices": [0.5, 0.75]}, "fine_tune_epochs": 1}},
            "quantization.dynamic_int8"]}]},
        "select": "smallest",
        "registry": str(root / "registry"),
    }  # fmt: skip
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    spec["goals"] = {"size": {"max_mb": 0.00001}}
    (root / "impossible.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "AIRFLOW_HOME": str(root / "home"), "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "SLIMGATE_SPEC": str(root / "spec.yaml"),
           "SLIMGATE_RUNS_DIR": str(root / "runs")}  # fmt: skip
    airflow_cli = Path(sys.executable).with_name("airflow")
    subprocess.run(
        [str(airflow_cli), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300
    )
    return {"root": root, "env": env}


def run_dag(airflow: dict[str, Any], conf: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(conf)], env=airflow["env"],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    result["log"] = proc.stdout + proc.stderr
    return result


def test_the_dag_promotes_and_records_an_asset_event(airflow: dict[str, Any]) -> None:
    result = run_dag(airflow, {"spec": str(airflow["root"] / "spec.yaml")})
    assert result["state"] == "success"
    assert result["tasks"] == {
        "prepare_data": "success", "baseline": "success", "candidate[0]": "success",
        "candidate[1]": "success", "champion": "success", "search": "success", "gate": "success",
        "promote": "success",
        "report": "success", "release": "success",
    }  # fmt: skip
    (run_dir,) = [p for p in (airflow["root"] / "runs").iterdir() if p.name != ".cache"]
    assert len(json.loads((run_dir / "search" / "search.json").read_text())["trials"]) == 2
    (event,) = result["events"]
    assert event["asset"] == "slimgate.cancer-mlp.production"
    assert event["extra"]["version"] == 1 and event["extra"]["created"] is True
    assert (airflow["root"] / "registry" / "cancer-mlp" / "aliases" / "production.json").is_file()


def test_a_rejected_release_fails_the_run_visibly_and_keeps_the_report(
    airflow: dict[str, Any],
) -> None:
    registry = airflow["root"] / "registry"
    before = sorted(p.relative_to(registry) for p in registry.rglob("*") if "events" not in p.parts)
    result = run_dag(airflow, {"spec": str(airflow["root"] / "impossible.yaml")})
    assert result["state"] == "failed"
    assert result["tasks"]["gate"] == "success"  # a verdict was reached: reject
    assert result["tasks"]["promote"] == "failed"
    assert result["tasks"]["release"] == "upstream_failed"
    assert result["tasks"]["report"] == "success"
    assert "rejected: none of 2 candidates met every goal; nothing was promoted" in result["log"]
    assert (
        sorted(p.relative_to(registry) for p in registry.rglob("*") if "events" not in p.parts)
        == before
    )
    reports = list((airflow["root"] / "runs").glob("*/report.html"))
    assert len(reports) == 2


def test_parsing_the_dag_file_imports_no_heavy_library(airflow: dict[str, Any]) -> None:
    probe = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("d", {str(DAG_FILE)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        heavy = ["torch", "onnxruntime", "onnx", "sklearn", "great_expectations", "boto3", "scipy"]
        print([m for m in heavy if m in sys.modules], module.slimgate.schedule, sorted(module.slimgate.params))
    """)
    out = subprocess.run([sys.executable, "-c", probe], env=airflow["env"], capture_output=True,
                         text=True, check=True, timeout=120).stdout  # fmt: skip
    assert out.strip().splitlines()[-1] == "[] None ['runs_dir', 'spec']"
