"""The DAG under a real Airflow: PostgreSQL, api-server, scheduler and dag-processor, LocalExecutor.

What ``dag.test()`` cannot show is what happens when the scheduler runs the mapped candidates
as concurrent task processes. The test starts every service itself (PostgreSQL from Debian's
package, on a loopback port), triggers runs through the REST API, waits, and stops everything.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.testing import write_quick_spec

pytest.importorskip("airflow", reason="install slimgate[airflow] to test the DAG")

ROOT = Path(__file__).parents[2]
AIRFLOW = Path(sys.executable).with_name("airflow")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user there."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def run_checked(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> None:
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, (
        f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    )


@pytest.fixture(scope="module")
def postgres(needs: Any) -> Iterator[str]:
    """A fresh PostgreSQL cluster on a loopback port; yields its SQLAlchemy URL."""
    import tempfile

    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    needs("postgresql", bool(bins), "Debian: apt-get install postgresql; .ci/run installs it")
    pg = bins[-1]
    # outside pytest's folders, which the postgres user may not enter
    root = Path(tempfile.mkdtemp(prefix="slimgate-postgres-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        for path in (root, sockets):
            shutil.chown(path, "postgres")
    port = free_port()
    run_checked(as_postgres([str(pg / "initdb"), "-D", str(data), "-U", "airflow",
                             "--auth=trust", "--no-sync"]))  # fmt: skip
    run_checked(as_postgres([str(pg / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"),
                             "-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off",
                             "start"]))  # fmt: skip
    try:
        run_checked(as_postgres([str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                                 "-U", "airflow", "airflow"]))  # fmt: skip
        yield f"postgresql+psycopg2://airflow@127.0.0.1:{port}/airflow"
    finally:
        subprocess.run(as_postgres([str(pg / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       check=False, capture_output=True, timeout=120)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


class Airflow:
    """api-server, scheduler and dag-processor sharing one metadata DB and one JWT secret."""

    def __init__(self, root: Path, home: Path, env: dict[str, str], port: int) -> None:
        self.root, self.home, self.env = root, home, env
        self.url = f"http://127.0.0.1:{port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.token = ""

    def start(self, name: str, *args: str) -> None:
        log = (self.home / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen([str(AIRFLOW), name, *args], env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.home.glob("*.log")))  # fmt: skip

    def api(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def wait(self, what: str, probe: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                assert proc.poll() is None, (
                    f"airflow {name} exited while waiting for {what}\n{self.logs()}"
                )
            try:
                found = probe()
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                found = None
            if found:
                return found
            time.sleep(1)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}")

    def trigger(self, conf: dict[str, Any]) -> dict[str, Any]:
        """Trigger a run of the slimgate DAG and wait until it ends; returns the run and its tasks."""
        run = self.api(
            "POST", "/api/v2/dags/slimgate/dagRuns", {"logical_date": None, "conf": conf}
        )
        run_id = run["dag_run_id"]
        path = f"/api/v2/dags/slimgate/dagRuns/{run_id}"

        def ended() -> Any:
            state = self.api("GET", path)["state"]
            return state if state in ("success", "failed") else None

        state = self.wait(f"run {run_id}", ended, timeout=900)
        tis = self.api("GET", f"{path}/taskInstances?limit=100")["task_instances"]
        tasks = {f"{t['task_id']}[{t['map_index']}]" if t["map_index"] >= 0 else t["task_id"]: t
                 for t in tis}  # fmt: skip
        return {"run_id": run_id, "state": state, "tasks": tasks}


@pytest.fixture(scope="module")
def airflow(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    root = tmp_path_factory.mktemp("airflow-scheduler")
    home, dags = root / "home", root / "dags"
    home.mkdir()
    dags.mkdir()
    shutil.copy(ROOT / "dags" / "slimgate_airflow.py", dags)
    fields: dict[str, Any] = {
        "training": {"epochs": 3},
        "benchmark": {"warmup": 5, "min_runs": 50, "min_seconds": 0.3, "compare_rounds": 4,
                      "compare_seconds": 0.1, "compare_min_runs": 20},
        "goals": {"size": {"max_ratio": 0.5}, "accuracy": {"max_drop": 0.1}},
        # three candidates the scheduler maps to concurrent task processes
        "candidates": [
            {"name": "int8", "steps": ["quantization.dynamic_int8"]},
            {"name": "int8-channel", "steps": [{"quantization.dynamic_int8": {"per_channel": True}}]},
            {"name": "fp16", "steps": ["quantization.fp16"]},
        ],
        "select": "smallest",
    }  # fmt: skip
    write_quick_spec(root, **fields).rename(root / "spec.yaml")
    write_quick_spec(root, **fields | {"goals": {"size": {"max_ratio": 0.01}}}).rename(
        root / "impossible.yaml"
    )
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": "slimgate-test-secret",
        "AIRFLOW__API__SECRET_KEY": "slimgate-test-secret",
        "SLIMGATE_SPEC": str(root / "spec.yaml"),
        "SLIMGATE_RUNS_DIR": str(root / "runs"),
    }
    run_checked([str(AIRFLOW), "db", "migrate"], env=env, timeout=600)
    services = Airflow(root, home, env, port)
    try:
        services.start("api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1")
        services.start("scheduler")
        services.start("dag-processor")

        def token() -> Any:
            with urllib.request.urlopen(f"{services.url}/auth/token", timeout=10) as response:
                return json.loads(response.read())["access_token"]

        services.token = services.wait("the api-server", token, timeout=300)
        services.wait("the DAG to be parsed",
                      lambda: services.api("GET", "/api/v2/dags/slimgate"), timeout=300)  # fmt: skip
        yield services
    finally:
        services.stop()


def test_a_run_promotes_and_its_candidates_measure_in_turn(airflow: Airflow) -> None:
    result = airflow.trigger({})
    tasks = result["tasks"]
    assert result["state"] == "success", (tasks, airflow.logs())
    assert {t["state"] for t in tasks.values()} <= {"success", "skipped"}, tasks
    assert tasks["release"]["state"] == "success" and tasks["search"]["state"] == "success"
    # the scheduler ran the candidates as concurrent processes: their tasks overlapped
    cands = [t for k, t in tasks.items() if k.startswith("candidate[")]
    assert len(cands) == 3
    spans = sorted((t["start_date"], t["end_date"]) for t in cands)
    assert spans[0][1] > spans[1][0], "the candidates did not run side by side"

    root = airflow.root
    # the run's folder: its run id with what a path cannot hold replaced, as the DAG names it
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in result["run_id"])
    run_dir = root / "runs" / safe
    # ...but each measurement held the host alone: no two of them overlapped
    holds = []
    for name in ("int8", "int8-channel", "fp16"):
        for record in ("benchmark.json", "comparison.json"):
            hold = json.loads((run_dir / "candidates" / name / record).read_text())["host_lock"]
            holds.append((hold["acquired"], hold["released"], name))
            assert hold["settled"]["settle_s"] >= 0.1  # it looked for quiet first
    holds.sort()
    for (_, released, a), (acquired, _, b) in itertools.pairwise(holds):
        assert released <= acquired or a == b, holds
    # promoted: the registry's alias and the asset event the serving DAGs wait for
    promotion = json.loads((run_dir / "promotion.json").read_text())
    assert promotion["status"] == "promoted" and promotion["version"] == 1
    from components.registry import open_registry

    assert (open_registry(str(root / "registry")).alias("cancer") or {})["version"] == 1
    events = airflow.api("GET", "/api/v2/assets/events?limit=10")["asset_events"]
    assert [e["extra"]["version"] for e in events] == [1]


def test_a_rejected_run_fails_after_its_report(airflow: Airflow) -> None:
    from components.registry import open_registry

    root = airflow.root
    registry = open_registry(str(root / "registry"))
    before = registry.versions("cancer") if (root / "registry").exists() else []
    result = airflow.trigger({"spec": str(root / "impossible.yaml")})
    states = {k: t["state"] for k, t in result["tasks"].items()}
    assert result["state"] == "failed", (states, airflow.logs())
    assert states["gate"] == "success"  # the gate judged: nothing met every goal
    assert states["promote"] == "failed" and states["release"] == "upstream_failed"
    assert states["report"] == "success"
    assert all(states[k] == "success" for k in states if k.startswith("candidate["))
    assert registry.versions("cancer") == before  # nothing new
