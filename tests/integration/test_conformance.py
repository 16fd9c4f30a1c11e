"""Every form of the pipeline runs the steps of ``components.pipeline.STEPS`` the same way.

One spec with every optional step (a champion goal, a search, a candidate that breaks) runs in
each form: the in-process runner (``slimgate run``), the Airflow DAG with ``dag.test()``, the DAG's
Kubernetes mode (its pods' commands, as parsed in ``.venv-k8s``, run here in dependency order),
the Kubeflow pipeline with ``kfp.local``, and the compiled Kubeflow IR (its container commands
run here in the IR's dependency order). Against a registry with a production model the run is
promoted, the champion scored in every form; against an empty one the champion goal blocks the
release, and every form fails visibly with the report written and nothing promoted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.pipeline import STEPS, Trace
from components.testing import QUICK_BENCHMARK

pytest.importorskip("airflow", reason="install slimgate[airflow] to test the DAG")
pytest.importorskip("kfp", reason="install slimgate[kfp] to test the pipeline")

ROOT = Path(__file__).parents[2]
SLIMGATE = str(Path(sys.executable).with_name("slimgate"))
K8S_PYTHON = ROOT / ".venv-k8s" / "bin" / "python"
BROKEN = "c1-transformer-fusion"  # transformer fusion refuses an MLP: a failed candidate

PROMOTED = [("prepare_data", "done"), ("baseline", "done"), ("champion", "done"),
            ("candidate", "done,failed"), ("search", "done"), ("gate", "done"),
            ("promote", "done"), ("report", "done")]  # fmt: skip
REJECTED = [*PROMOTED[:6], ("promote", "failed"), ("report", "done")]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Specs, a registry with a production model and an empty one, a shared cache."""
    root = tmp_path_factory.mktemp("conformance")
    spec: dict[str, Any] = {
        "name": "conform-mlp",
        "model": {"builtin": "tabular_mlp"},
        "data": {"builtin": "breast_cancer"},
        "training": {"epochs": 3},
        "target": {"threads": 1, "batch_sizes": [1]},
        "benchmark": QUICK_BENCHMARK,
        "goals": {"size": {"max_ratio": 0.5}, "accuracy": {"max_drop": 0.05},
                  "champion": {"max_accuracy_drop": 0.05}},
        "candidates": [["quantization.dynamic_int8"], ["graph.transformer_fusion"]],
        "search": {"trials": 1, "sampler": "random", "recipes": [{"name": "int8", "steps": [
            {"quantization.dynamic_int8": {"per_channel": {"choices": [True, False]}}}]}]},
        "select": "smallest",
        "registry": str(root / "production-registry"),
        "cache": {"uri": str(root / "cache")},
    }  # fmt: skip
    first = {**spec, "goals": {**spec["goals"], "champion": {"first_release": "pass"}},
             "candidates": [["quantization.dynamic_int8"]]}  # fmt: skip
    first.pop("search")
    (root / "first.yaml").write_text(yaml.safe_dump(first))
    (root / "promoted.yaml").write_text(yaml.safe_dump(spec))
    (root / "rejected.yaml").write_text(yaml.safe_dump({**spec, "registry": str(root / "empty")}))
    proc = subprocess.run([SLIMGATE, "run", str(root / "first.yaml"), "--runs-dir", str(root / "first")],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root}


def registry_files(path: Path) -> list[Path]:
    return sorted(p.relative_to(path) for p in path.rglob("*") if "events" not in p.parts)


# --- the forms: each runs one spec and returns (run directory, did the run succeed, log) ---------


def run_runner(world: dict[str, Any], spec: Path, runs: Path) -> tuple[Path, bool, str]:
    proc = subprocess.run([SLIMGATE, "run", str(spec), "--runs-dir", str(runs), "--run-id", "job"],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    return runs / "job", proc.returncode == 0, proc.stderr


AIRFLOW_RUNNER = textwrap.dedent("""
    import importlib.util, json, os, sys
    path = os.path.join(os.environ["AIRFLOW__CORE__DAGS_FOLDER"], "slimgate_airflow.py")
    spec = importlib.util.spec_from_file_location("slimgate_airflow", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = module.slimgate.test(run_conf=json.loads(sys.argv[1]))
    print("RESULT " + json.dumps({"state": str(run.state)}))
""")


def run_airflow(world: dict[str, Any], spec: Path, runs: Path) -> tuple[Path, bool, str]:
    home = runs.parent / f"{runs.name}-airflow"
    (home / "dags").mkdir(parents=True)
    shutil.copy(ROOT / "dags" / "slimgate_airflow.py", home / "dags")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "SLIMGATE_SPEC": str(spec),
           "SLIMGATE_RUNS_DIR": str(runs)}  # fmt: skip
    subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=env,
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", AIRFLOW_RUNNER, json.dumps({"spec": str(spec)})],
                          env=env, capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = [p for p in runs.iterdir() if p.name != ".cache"]
    state = json.loads(lines[-1].removeprefix("RESULT "))["state"]
    assert state in ("success", "failed"), state
    return run_dir, state == "success", proc.stdout + proc.stderr


K8S_PROBE = textwrap.dedent("""
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("d", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = {}
    for t in module.slimgate.tasks:
        info = {"upstream": sorted(t.upstream_task_ids), "trigger_rule": str(t.trigger_rule).split(".")[-1]}
        if type(t).__name__ == "KubernetesPodOperator":
            info |= {"cmds": t.cmds, "arguments": t.arguments, "xcom": t.do_xcom_push}
        elif type(t).__name__ == "MappedOperator":
            info |= {"cmds": t.partial_kwargs["cmds"], "over": t.expand_input.value["arguments"].arg.operator.task_id,
                     "arguments": t.expand_input.value["arguments"].callables[0]("@ITEM@"), "mapped": True}
        out[t.task_id] = info
    print("RESULT " + json.dumps(out, default=str))
""")


def run_airflow_kubernetes(world: dict[str, Any], spec: Path, runs: Path) -> tuple[Path, bool, str]:
    """The pods' commands, as the DAG's Kubernetes mode declares them, run in dependency order:
    a failed pod fails its downstream tasks but those whose trigger rule is ALL_DONE."""
    if not K8S_PYTHON.exists():
        pytest.skip("needs .venv-k8s (Airflow with the cncf-kubernetes provider): run `make test`")
    env = {"AIRFLOW_HOME": str(runs.parent / f"{runs.name}-home"), "PATH": "/usr/bin:/bin",
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "SLIMGATE_AIRFLOW_MODE": "kubernetes",
           "SLIMGATE_SPEC": str(spec)}  # fmt: skip
    proc = subprocess.run([str(K8S_PYTHON), "-c", K8S_PROBE, str(ROOT / "dags" / "slimgate_airflow.py")],
                          env=env, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stderr[-3000:]
    tasks: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    xcoms: dict[str, Any] = {}
    state: dict[str, str] = {}
    log = []

    def render(arg: str, item: str | None = None) -> str:
        arg = arg.replace("{{ params.spec }}", str(spec)).replace(
            "{{ params.runs_dir }}", str(runs)
        )
        arg = arg.replace("{{ run_id | safe_id }}", "job").replace("@ITEM@", item or "")
        return re.sub(r"\{\{ ti\.xcom_pull\(task_ids='(\w+)'\) \}\}",
                      lambda m: str(xcoms[m.group(1)]), arg)  # fmt: skip

    def pod(name: str, arguments: list[str], xcom: bool) -> bool:
        out = runs.parent / f"{runs.name}-xcom-{name}.json"
        args = [render(a).replace("/airflow/xcom/return.json", str(out)) for a in arguments]
        p = subprocess.run([SLIMGATE, *tasks[name]["cmds"][1:], *args], capture_output=True,
                           text=True, timeout=600, check=False)  # fmt: skip
        log.append(f"{name}: exit {p.returncode}\n{p.stderr[-2000:]}")
        if xcom and p.returncode == 0:
            xcoms[name] = json.loads(out.read_text())
        return p.returncode == 0

    for name in topological({n: t["upstream"] for n, t in tasks.items()}):
        task = tasks[name]
        upstream_ok = all(state[u] == "success" for u in task["upstream"])
        if not upstream_ok and task["trigger_rule"] != "ALL_DONE":
            state[name] = "upstream_failed"
        elif name == "release":
            state[name] = "success"  # an Airflow task, not a pod: it records the asset event
        elif task.get("mapped"):
            ok = [pod(name, [render(a, item) for a in task["arguments"]], False)
                  for item in xcoms[task["over"]]]  # fmt: skip
            state[name] = "success" if all(ok) else "failed"
        else:
            state[name] = "success" if pod(name, task["arguments"], task["xcom"]) else "failed"
    return runs / "job", state["release"] == "success", "\n".join(log)


KFP_RUNNER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import slimgate_kfp
    from kfp import local
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=sys.argv[4],
               raise_on_error=False)
    slimgate_kfp.build_pipeline("lightweight")(spec=sys.argv[2], runs_dir=sys.argv[3])
""")


def run_kfp(world: dict[str, Any], spec: Path, runs: Path) -> tuple[Path, bool, str]:
    proc = subprocess.run([sys.executable, "-c", KFP_RUNNER, str(ROOT / "dags"), str(spec), str(runs),
                           str(runs.parent / f"{runs.name}-root")],
                          capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
    log = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    status = re.findall(r"Pipeline 'slimgate' finished with status (\w+)", log)
    assert status, log[-4000:]
    (run_dir,) = [p for p in runs.iterdir() if p.name != ".cache"]
    return run_dir, status[-1] == "SUCCESS", log


def run_kfp_ir(world: dict[str, Any], spec: Path, runs: Path) -> tuple[Path, bool, str]:
    """The compiled container form: every executor's command, placeholders filled, run in the
    IR's dependency order, loops over their items, the exit handler's task last."""
    ir_path = runs.parent / f"{runs.name}-pipeline.yaml"
    subprocess.run([sys.executable, str(ROOT / "dags" / "slimgate_kfp.py"), "compile", str(ir_path)],
                   check=True)  # fmt: skip
    ir = yaml.safe_load(ir_path.read_text())
    components, executors = ir["components"], ir["deploymentSpec"]["executors"]
    out_dir = runs.parent / f"{runs.name}-outputs"
    log: list[str] = []
    counter = iter(range(10_000))

    def run_dag(dag: dict[str, Any], scope: dict[str, Any]) -> bool:
        outputs: dict[str, dict[str, Any]] = {}
        failed = False
        for name in topological({n: t.get("dependentTasks", []) for n, t in dag["tasks"].items()}):
            task = dag["tasks"][name]
            if (
                failed
                and task.get("triggerPolicy", {}).get("strategy") != "ALL_UPSTREAM_TASKS_COMPLETED"
            ):
                continue
            inputs = {key: resolve(value, scope, outputs)
                      for key, value in task.get("inputs", {}).get("parameters", {}).items()}  # fmt: skip
            component = components[task["componentRef"]["name"]]
            if "dag" in component and "parameterIterator" in task:
                loop = task["parameterIterator"]
                items = inputs[loop["items"]["inputParameter"]]
                ok = all([run_dag(component["dag"], {**inputs, loop["itemInput"]: item})
                          for item in items])  # fmt: skip
            elif "dag" in component:
                ok = run_dag(component["dag"], inputs)
            else:
                ok, outputs[name] = run_executor(executors[component["executorLabel"]], inputs)
            failed = failed or not ok
        return not failed

    def resolve(value: dict[str, Any], scope: dict[str, Any], outputs: dict[str, Any]) -> Any:
        if "componentInputParameter" in value:
            return scope[value["componentInputParameter"]]
        if "taskOutputParameter" in value:
            ref = value["taskOutputParameter"]
            return outputs[ref["producerTask"]][ref["outputParameterKey"]]
        return value["runtimeValue"]["constant"].replace("{{$.pipeline_job_uuid}}", "job")

    def run_executor(
        executor: dict[str, Any], inputs: dict[str, Any]
    ) -> tuple[bool, dict[str, Any]]:
        where = out_dir / str(next(counter))
        files: dict[str, Path] = {}

        def fill(arg: str) -> str:
            arg = re.sub(
                r"\{\{\$\.inputs\.parameters\['(\w+)'\]\}\}", lambda m: str(inputs[m.group(1)]), arg
            )
            arg = re.sub(r"\{\{\$\.outputs\.artifacts\['(\w+)'\]\.path\}\}",
                         lambda m: str(where / "artifacts" / m.group(1)), arg)  # fmt: skip

            def parameter(m: re.Match[str]) -> str:
                files[m.group(1)] = where / "parameters" / m.group(1)
                return str(files[m.group(1)])

            return re.sub(
                r"\{\{\$\.outputs\.parameters\['(\w+)'\]\.output_file\}\}", parameter, arg
            )

        container = executor["container"]
        args = [fill(a) for a in container["args"]]
        p = subprocess.run([SLIMGATE, *container["command"][1:], *args], capture_output=True,
                           text=True, timeout=600, check=False)  # fmt: skip
        log.append(f"{args[0]}: exit {p.returncode}\n{p.stderr[-2000:]}")
        values = {}
        for key, path in files.items():
            text = path.read_text() if path.is_file() else ""
            values[key] = json.loads(text) if key == "names" else text
        return p.returncode == 0, values

    ok = run_dag(ir["root"]["dag"], {"spec": str(spec), "runs_dir": str(runs)})
    return runs / "job", ok, "\n".join(log)


def topological(upstream: dict[str, list[str]]) -> list[str]:
    order: list[str] = []
    while len(order) < len(upstream):
        ready = sorted(n for n, ups in upstream.items()
                       if n not in order and all(u in order for u in ups))  # fmt: skip
        assert ready, f"a cycle among {upstream}"
        order.append(ready[0])
    return order


FORMS: dict[str, Callable[[dict[str, Any], Path, Path], tuple[Path, bool, str]]] = {
    "runner": run_runner,
    "airflow": run_airflow,
    "airflow-kubernetes": run_airflow_kubernetes,
    "kfp-local": run_kfp,
    "kfp-container-ir": run_kfp_ir,
}


@pytest.mark.parametrize("form", FORMS)
def test_a_release_with_a_production_model_is_promoted_the_same_way(
    world: dict[str, Any], form: str
) -> None:
    root = world["root"]
    run_dir, succeeded, log = FORMS[form](world, root / "promoted.yaml", root / f"{form}-promoted")
    assert Trace.read(run_dir).sequence() == PROMOTED, log[-4000:]
    assert succeeded, log[-4000:]
    candidates = Trace.read(run_dir).items("candidate")
    assert candidates == {"c0-dynamic-int8": "done", BROKEN: "failed"}
    champion = json.loads((run_dir / "champion" / "champion.json").read_text())
    assert isinstance(champion["version"], int) and champion["metrics"]["accuracy"] > 0.8
    verdict = json.loads((run_dir / "verdict.json").read_text())
    entries = {c["name"]: c for c in verdict["candidates"]}
    assert entries[BROKEN]["outcome"] == "fail" and "attention" in entries[BROKEN]["error"]
    selected = entries[verdict["selected"]]
    goal = next(g for g in selected["goals"] if g["goal"] == "champion")
    assert goal["outcome"] == "pass" and goal["value"] is not None  # scored, not assumed
    promotion = json.loads((run_dir / "promotion.json").read_text())
    assert promotion["status"] == "promoted" and promotion["candidate"] == verdict["selected"]
    assert json.loads((run_dir / "report.json").read_text())["status"] == "promoted"


@pytest.mark.parametrize("form", FORMS)
def test_a_release_blocked_by_its_goals_fails_visibly_and_loses_nothing(
    world: dict[str, Any], form: str
) -> None:
    root = world["root"]
    production = root / "production-registry"
    before = registry_files(production)
    run_dir, succeeded, log = FORMS[form](world, root / "rejected.yaml", root / f"{form}-rejected")
    assert Trace.read(run_dir).sequence() == REJECTED, log[-4000:]
    assert not succeeded, f"{form}: a rejected release ended green"
    champion = json.loads((run_dir / "champion" / "champion.json").read_text())
    assert champion["version"] is None  # the empty registry has no production model
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert verdict["selected"] is None
    for entry in verdict["candidates"]:
        goal = next(g for g in entry["goals"] if g["goal"] == "champion")
        assert goal["outcome"] == "fail" and "no model is behind production" in goal["reason"]
    assert json.loads((run_dir / "promotion.json").read_text())["status"] == "rejected"
    assert json.loads((run_dir / "report.json").read_text())["status"] == "rejected"
    assert (run_dir / "report.html").is_file()
    assert not (root / "empty").exists() or not list((root / "empty").rglob("model.onnx"))
    assert registry_files(production) == before


def test_every_form_is_built_from_the_declared_steps() -> None:
    """The Kubeflow components and Airflow tasks are the steps of the definition, no more."""
    import importlib.util

    module_spec = importlib.util.spec_from_file_location(
        "kfp_form", ROOT / "dags" / "slimgate_kfp.py"
    )
    assert module_spec is not None and module_spec.loader is not None
    slimgate_kfp = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(slimgate_kfp)
    names = [s.name for s in STEPS]
    assert list(slimgate_kfp.LIGHTWEIGHT) == names and list(slimgate_kfp.CONTAINER) == names
