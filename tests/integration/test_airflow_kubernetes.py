"""The DAG's Kubernetes mode, parsed in its own environment with the cncf-kubernetes provider
(which cannot share one with kfp; `make test` builds .venv-k8s). Without a cluster the pods are
not run here; their `slimgate step` commands are the ones the container tests run."""

from __future__ import annotations

import itertools
import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
K8S_PYTHON = ROOT / ".venv-k8s" / "bin" / "python"

PROBE = textwrap.dedent("""
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("d", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.slimgate
    heavy = [m for m in ("torch", "onnxruntime", "sklearn", "great_expectations", "kfp") if m in sys.modules]
    out = {"_heavy": heavy, "_params": {k: dag.params[k] for k in dag.params},
           "_run_id": dag.get_template_env().from_string("{{ run_id | safe_id }}").render(
               run_id="scheduled__2026-01-01T03:00:00+00:00")}
    for t in dag.tasks:
        info = {"type": type(t).__name__, "trigger_rule": str(t.trigger_rule).split(".")[-1],
                "upstream": sorted(t.upstream_task_ids)}
        if type(t).__name__ == "KubernetesPodOperator":
            info |= {"image": t.image, "cmds": t.cmds, "arguments": t.arguments, "pool": t.pool,
                     "xcom": t.do_xcom_push, "mounts": [v.mount_path for v in t.volume_mounts]}
        elif type(t).__name__ == "MappedOperator":
            info |= {"image": t.partial_kwargs["image"],
                     "arguments": t.expand_input.value["arguments"].callables[0]("c0-x"),
                     "max_active": t.max_active_tis_per_dagrun,
                     "pool": t.partial_kwargs.get("pool"),
                     "mounts": [v.mount_path for v in t.partial_kwargs.get("volume_mounts") or []],
                     "host_paths": [v.host_path.path for v in t.partial_kwargs.get("volumes") or []
                                    if v.host_path is not None]}
        out[t.task_id] = info
    print("RESULT " + json.dumps(out, default=str))
""")


def parse(home: Path, **extra_env: str) -> dict[str, Any]:
    if not K8S_PYTHON.exists():
        pytest.skip("needs .venv-k8s (Airflow with the cncf-kubernetes provider): run `make test`")
    env = {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "SLIMGATE_AIRFLOW_MODE": "kubernetes", "SLIMGATE_IMAGE": "registry.example/slimgate:1.2.3",
           "SLIMGATE_RUNS_PVC": "slimgate-runs", "PATH": "/usr/bin:/bin", **extra_env}  # fmt: skip
    proc = subprocess.run([str(K8S_PYTHON), "-c", PROBE, str(ROOT / "dags" / "slimgate_airflow.py")],
                          env=env, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


@pytest.fixture(scope="module")
def dag(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return parse(tmp_path_factory.mktemp("airflow-k8s"))


RUN = [
    "--spec",
    "{{ params.spec }}",
    "--runs-dir",
    "{{ params.runs_dir }}",
    "--run-id",
    "{{ run_id | safe_id }}",
]


def test_the_pods_are_the_declared_steps_in_order(dag: dict[str, Any]) -> None:
    """Each step of components.pipeline.STEPS after the one before it; the release after all."""
    from components.pipeline import STEPS

    names = [s.name for s in STEPS]
    for before, after in itertools.pairwise(STEPS):
        fed_by = {after.fan_out} if after.fan_out else set()  # the XCom a fan-out maps over
        assert set(dag[after.name]["upstream"]) == {before.name} | fed_by
    assert dag["release"]["upstream"] == sorted(names)
    assert dag["release"]["trigger_rule"] == "ALL_SUCCESS"
    # the step after the fan-out runs whatever became of the candidates (none, or one killed)
    assert (
        dag["report"]["trigger_rule"] == "ALL_DONE" and dag["search"]["trigger_rule"] == "ALL_DONE"
    )
    assert {dag[n]["trigger_rule"].upper() for n in names if n not in ("report", "search")} == {
        "ALL_SUCCESS"
    }


def test_every_step_is_a_pod_running_slimgate_step_in_the_image(dag: dict[str, Any]) -> None:
    for step in ["prepare_data", "baseline", "champion", "search", "gate", "promote", "report"]:
        task = dag[step]
        assert task["type"] == "KubernetesPodOperator"
        assert task["image"] == "registry.example/slimgate:1.2.3"
        assert task["cmds"] == ["slimgate", "step"]
        assert task["arguments"][0] == step and task["arguments"][1:7] == RUN
        assert task["mounts"] == ["/data/slimgate"]
    # what a step hands on goes through the pod's XCom file, and comes back as a template
    assert dag["prepare_data"]["arguments"][-2:] == ["--value-out", "/airflow/xcom/return.json"]
    assert dag["gate"]["arguments"][-2:] == ["--value-out", "/airflow/xcom/return.json"]
    assert dag["promote"]["arguments"][-4:] == ["--expect", "{{ ti.xcom_pull(task_ids='gate') }}",
                                                "--value-out", "/airflow/xcom/return.json"]  # fmt: skip
    xcoms = [n for n in dag if not n.startswith("_") and dag[n].get("xcom")]
    assert xcoms == ["prepare_data", "gate", "promote"]  # release reads the promotion from XCom


def test_candidates_fan_out_over_the_names_the_data_step_returns(dag: dict[str, Any]) -> None:
    cand = dag["candidate"]
    assert cand["type"] == "MappedOperator" and cand["image"] == "registry.example/slimgate:1.2.3"
    assert cand["arguments"] == ["candidate", *RUN, "--candidate", "c0-x"]


def test_pods_without_a_shared_host_lock_measure_one_at_a_time(
    dag: dict[str, Any], tmp_path: Path
) -> None:
    assert dag["candidate"]["max_active"] == 1 and dag["candidate"]["host_paths"] == []
    shared = parse(tmp_path, SLIMGATE_HOST_LOCK_DIR="/var/lock/slimgate", SLIMGATE_POOL="measure")
    cand = shared["candidate"]
    assert cand["max_active"] is None  # they build side by side and take turns on the lock
    assert cand["host_paths"] == [
        "/var/lock/slimgate/host.lock",
        "/var/lock/slimgate/host.lock.turn",
    ]
    lock_mounts = ["/run/slimgate/host.lock", "/run/slimgate/host.lock.turn"]
    assert cand["mounts"] == ["/data/slimgate", *lock_mounts]
    assert shared["baseline"]["mounts"] == ["/data/slimgate", *lock_mounts]
    # the pool: every step that measures, and only those
    assert {n for n, t in shared.items() if not n.startswith("_") and t.get("pool") == "measure"} == {
        "baseline", "candidate", "search"}  # fmt: skip


def test_parsing_needs_no_heavy_library_and_runs_go_to_the_volume(dag: dict[str, Any]) -> None:
    assert dag["_heavy"] == []
    assert dag["_params"]["runs_dir"] == "/data/slimgate/runs"
    assert dag["_run_id"] == "scheduled__2026-01-01T03_00_00_00_00"
