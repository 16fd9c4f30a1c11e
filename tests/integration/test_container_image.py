"""The project image, built with podman, running the compiled Kubeflow pipeline step by step.

Nothing here imitates the image: `infra/podman/image.sh` builds it (as `make image` does), and
each task of `infra/kfp/slimgate-pipeline.yaml` runs as `podman run` of the executor's own
image, command and arguments, in the IR's order (its dependencies, the candidate loop over the
names the data step wrote, the report as the exit handler), on one mounted volume and with no
network. A small interpreter of the IR stands in for the KFP backend, which is not on these
machines (and kfp.local's DockerRunner over podman reports failed containers as succeeded).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.errors import EXIT_REJECTED
from components.registry import open_registry
from components.testing import write_quick_spec

ROOT = Path(__file__).parents[2]
IR = yaml.safe_load((ROOT / "infra" / "kfp" / "slimgate-pipeline.yaml").read_text())
IMAGE: str = {e["container"]["image"] for e in IR["deploymentSpec"]["executors"].values()}.pop()
VOLUME = "/data"


def podman_env() -> dict[str, str]:
    """The environment infra/podman/env.sh sets up (runc, cgroupfs, the host's ulimits)."""
    out = subprocess.run(["bash", "-c", ". infra/podman/env.sh && echo $CONTAINERS_CONF"],
                         cwd=ROOT, capture_output=True, text=True, check=True)  # fmt: skip
    return {**os.environ, "CONTAINERS_CONF": out.stdout.strip()}


@pytest.fixture(scope="module")
def image(needs: Any) -> str:
    """The image the IR names, built from this checkout (layers cached between builds)."""
    needs("podman", shutil.which("podman") is not None,
          "Debian: apt-get install podman runc fuse-overlayfs mmdebstrap; .ci/run installs it")  # fmt: skip
    proc = subprocess.run([str(ROOT / "infra" / "podman" / "image.sh")], env={**podman_env(), "IMAGE": IMAGE},
                          cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return IMAGE


class PipelineRun:
    """Runs the IR's tasks as containers, one at a time, the way a KFP backend orders them."""

    def __init__(self, image: str, volume: Path, lock_dir: Path, run_id: str) -> None:
        self.image, self.volume, self.lock_dir, self.run_id = image, volume, lock_dir, run_id
        self.ran: list[tuple[str, int]] = []  # (task display name, exit code), in order
        self.log = ""  # each container's exit code and the end of its stderr

    def container(self, task: str, executor: dict[str, Any], params: dict[str, Any]) -> int:
        outputs = f"{VOLUME}/outputs/{task}"
        for folder in (self.volume / "outputs", self.volume / "outputs" / task):
            folder.mkdir(exist_ok=True)
            folder.chmod(0o777)  # as the KFP launcher makes them: writable by the step

        def fill(arg: str) -> str:
            arg = re.sub(r"\{\{\$\.inputs\.parameters\['(\w+)'\]\}\}",
                         lambda m: str(params[m[1]]), arg)  # fmt: skip
            arg = re.sub(r"\{\{\$\.outputs\.artifacts\['(\w+)'\]\.path\}\}",
                         lambda m: f"{outputs}/{m[1]}", arg)  # fmt: skip
            return re.sub(r"\{\{\$\.outputs\.parameters\['(\w+)'\]\.output_file\}\}",
                          lambda m: f"{outputs}/{m[1]}", arg)  # fmt: skip

        spec = executor["container"]
        cmd = ["podman", "run", "--rm", "--network", "none",
               "-v", f"{self.volume}:{VOLUME}", "-v", f"{self.lock_dir}:/run/slimgate",
               spec["image"], *spec["command"], *map(fill, spec["args"])]  # fmt: skip
        proc = subprocess.run(cmd, env=podman_env(), capture_output=True, text=True,
                              timeout=900, check=False)  # fmt: skip
        self.log += f"\n--- {task}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
        return proc.returncode

    def dag(self, component: str, scope: dict[str, Any]) -> bool:
        """Run a component's DAG in dependency order; False once a task failed."""
        tasks: dict[str, Any] = IR["components"][component]["dag"]["tasks"]
        order = TopologicalSorter({n: t.get("dependentTasks", []) for n, t in tasks.items()})
        outputs: dict[str, dict[str, Any]] = {}
        ok = True
        for name in order.static_order():
            task = tasks[name]
            exit_handler = (
                task.get("triggerPolicy", {}).get("strategy") == "ALL_UPSTREAM_TASKS_COMPLETED"
            )
            if not ok and not exit_handler:
                continue
            params = {key: self.value(src, scope, outputs)
                      for key, src in task.get("inputs", {}).get("parameters", {}).items()}  # fmt: skip
            ref = task["componentRef"]["name"]
            comp = IR["components"][ref]
            if "dag" in comp and "parameterIterator" in task:
                loop = task["parameterIterator"]
                for item in json.loads(params[loop["items"]["inputParameter"]]):
                    ok = self.dag(ref, {**params, loop["itemInput"]: item}) and ok
            elif "dag" in comp:
                ok = self.dag(ref, params) and ok
            else:
                label = comp["executorLabel"]
                executor = IR["deploymentSpec"]["executors"][label]
                key = f"{name}-{params.get('candidate', '')}".rstrip("-")
                code = self.container(key, executor, params)
                self.ran.append((task["taskInfo"]["name"], code))
                declared = comp.get("outputDefinitions", {}).get("parameters", {})
                folder = self.volume / "outputs" / key
                outputs[name] = {p: (folder / p).read_text() for p in declared
                                 if (folder / p).is_file()}  # fmt: skip
                ok = ok and code == 0
        return ok

    def value(self, src: dict[str, Any], scope: dict[str, Any], outputs: dict[str, Any]) -> Any:
        if "componentInputParameter" in src:
            return scope[src["componentInputParameter"]]
        if "taskOutputParameter" in src:
            out = src["taskOutputParameter"]
            return outputs[out["producerTask"]][out["outputParameterKey"]]
        constant = src["runtimeValue"]["constant"]
        return constant.replace("{{$.pipeline_job_uuid}}", self.run_id)

    def run(self, spec: str) -> list[tuple[str, int]]:
        self.dag("__root__", {"spec": spec, "runs_dir": f"{VOLUME}/runs"})
        return self.ran


IR["components"]["__root__"] = IR["root"]


def pipeline_run(image: str, tmp_path: Path, run_id: str, **spec: Any) -> tuple[PipelineRun, Path]:
    volume = tmp_path / "volume"
    volume.mkdir()
    volume.chmod(0o777)  # the image's user (uid 10001) writes the run there
    lock_dir = tmp_path / "lock"
    lock_dir.mkdir(mode=0o777)
    lock_dir.chmod(0o1777)
    path = write_quick_spec(volume, registry=f"{VOLUME}/registry", **spec)
    runner = PipelineRun(image, volume, lock_dir, run_id)
    runner.run(f"{VOLUME}/{path.name}")
    return runner, volume


def test_the_compiled_pipeline_runs_in_the_image_and_promotes(image: str, tmp_path: Path) -> None:
    runner, volume = pipeline_run(image, tmp_path, "kfp-promoted")
    names = [n for n, _ in runner.ran]
    assert names == ["prepare_data", "baseline", "champion", "candidate", "search", "gate",
                     "promote", "report"], runner.log  # fmt: skip
    assert all(code == 0 for _, code in runner.ran), runner.log
    run_dir = volume / "runs" / "kfp-promoted"
    promotion = json.loads((run_dir / "promotion.json").read_text())
    assert promotion["status"] == "promoted" and promotion["version"] == 1
    registry = open_registry(str(volume / "registry"))
    assert registry.versions("cancer") == [1] and (run_dir / "report.html").is_file()
    assert (registry.alias("cancer") or {})["version"] == 1
    registry.verify("cancer", 1)  # every file the card lists, whole
    # typed artifacts for the KFP UI, where the IR said
    assert (volume / "outputs" / "gate-c" / "selected").read_text() == "int8"
    assert (volume / "outputs" / "candidate-c-int8" / "model").stat().st_size > 0
    # the measurement held the lock every container on the host shares
    bench = json.loads((run_dir / "candidates" / "int8" / "benchmark.json").read_text())
    assert bench["host_lock"]["lock"] == "/run/slimgate/host.lock"
    assert (runner.lock_dir / "host.lock").is_file()  # in the host's folder, shared


def test_a_rejected_spec_ends_with_the_rejection_exit_code_and_writes_no_registry(
    image: str, tmp_path: Path
) -> None:
    runner, volume = pipeline_run(image, tmp_path, "kfp-rejected",
                                  goals={"size": {"max_ratio": 0.01}})  # fmt: skip
    assert runner.ran[-2:] == [("promote", EXIT_REJECTED), ("report", 0)], runner.log
    assert all(code == 0 for _, code in runner.ran[:-2]), runner.log
    promotion = json.loads((volume / "runs" / "kfp-rejected" / "promotion.json").read_text())
    assert promotion["status"] == "rejected"
    assert not (volume / "registry").exists()  # not even created
