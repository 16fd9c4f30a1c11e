"""slimgate as an Airflow 3 DAG: prepare data, baseline, one mapped task per candidate, gate,
promote, report. Every task calls a step function of ``components``; none holds step logic.

Deploy: copy this file into the Airflow DAGs folder of an environment that has
``pip install 'slimgate[airflow]'``, and point it at a spec::

    export SLIMGATE_SPEC=/opt/specs/digits.yaml      # default: the built-in example
    export SLIMGATE_RUNS_DIR=/data/slimgate/runs     # default: ~/slimgate/runs

A run may override both with its params (``spec``, ``runs_dir``). The schedule and the asset
name come from the spec when the file is parsed; parsing imports no heavy library.

Kubernetes mode (``SLIMGATE_AIRFLOW_MODE=kubernetes``) runs every step as the project's image
through KubernetesPodOperator (``slimgate step NAME ...``), so the Airflow environment needs
only ``apache-airflow-providers-cncf-kubernetes`` and slimgate without its heavy dependencies
(``pip install --no-deps slimgate pydantic pyyaml rich``): kfp and that provider cannot share
an environment. ``SLIMGATE_IMAGE`` (default: the image tagged with this package's version),
``SLIMGATE_NAMESPACE`` and ``SLIMGATE_RUNS_PVC`` (a volume claim mounted at the runs folder)
configure the pods.

Measurements never overlap. In local mode every task holds the host's lock
(``components.hostlock``): candidates build side by side and benchmark one at a time, also
against other DAGs' runs on the same host. Pods share no lock unless ``SLIMGATE_HOST_LOCK_DIR``
names a folder of the nodes whose lock files to mount (hostPath); without it the candidate task
runs one pod at a time within a DAG run (``max_active_tis_per_dagrun=1``). ``SLIMGATE_POOL``
puts every measuring task (baseline, candidates, search) in that pool: give it one slot and
the measuring pods of every DAG that uses it take turns.

The tasks are the steps of ``components.pipeline.STEPS``, in its order, with its conditions and
failure semantics (a failed candidate is recorded and judged by the gate; ``report`` runs
whatever happened). When no candidate meets the goals the ``promote`` task fails with the reason,
``report`` still runs, and the final ``release`` task makes the run fail visibly (not a skipped
branch that looks green). A promotion records an asset event (version and key metrics) on ``slimgate.<model>.production``,
so serving DAGs can be scheduled on it.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from airflow.sdk import DAG, Asset, Param, dag, get_current_context, task

__all__ = ["build_dag"]


def _default_spec() -> str:
    from components.cli import demo_spec_path

    return os.environ.get("SLIMGATE_SPEC") or str(demo_spec_path())


def _safe_id(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)


def _run_dir(runs_dir: str, run_id: str) -> str:
    return str(Path(runs_dir).expanduser() / _safe_id(run_id))


def _image() -> str:
    try:
        version = metadata.version("slimgate")
    except metadata.PackageNotFoundError:
        version = "dev"
    return os.environ.get("SLIMGATE_IMAGE") or f"ghcr.io/slimgate/slimgate:{version}"


def build_dag(
    spec_path: str,
    *,
    dag_id: str = "slimgate",
    runs_dir: str | None = None,
    mode: Literal["local", "kubernetes"] = "local",
) -> DAG:
    """The DAG for one spec (the spec's name, schedule and registry are read now).

    ``local`` runs the steps in the Airflow worker; ``kubernetes`` runs each in a pod.
    """
    from components.spec import load_spec

    spec = load_spec(spec_path)
    local_default = "~/slimgate/runs" if mode == "local" else f"{DEFAULT_RUNS_MOUNT}/runs"
    runs_dir = runs_dir or os.environ.get("SLIMGATE_RUNS_DIR") or local_default
    production = Asset(name=f"slimgate.{spec.name}.production")

    def loaded() -> tuple[Any, str]:
        """The spec this run uses, and its run directory (one per DAG run)."""
        from components.spec import load_spec

        ctx = get_current_context()
        params = ctx["params"]
        run_spec = load_spec(params["spec"])
        return run_spec, _run_dir(params["runs_dir"], ctx["run_id"])

    @dag(
        dag_id=dag_id,
        schedule=spec.schedule,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        params={
            "spec": Param(spec_path, type="string", description="the spec YAML file"),
            "runs_dir": Param(runs_dir, type="string", description="where run directories go"),
        },
        default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
        tags=["slimgate", spec.name, mode],
        doc_md=__doc__,
        user_defined_filters={"safe_id": _safe_id},
    )
    def pipeline() -> None:
        if mode == "kubernetes":
            _kubernetes_tasks(production)
        else:
            _local_tasks(loaded, production)

    return pipeline()


def _local_tasks(loaded: Any, production: Asset) -> None:
    """One TaskFlow task per step of ``components.pipeline.STEPS``, in its order."""
    from components.pipeline import STEPS, Step, after_fan_out

    def make(s: Step) -> Any:
        rule = "all_done" if s.always or after_fan_out(s) else "all_success"

        @task(task_id=s.name, trigger_rule=rule,
              map_index_template="{{ item }}" if s.fan_out else None, doc_md=s.summary)  # fmt: skip
        def run(item: str | None = None, inputs: dict[str, Any] | None = None) -> Any:
            from airflow.sdk.exceptions import AirflowFailException

            from components.errors import Rejected
            from components.steps import execute

            run_spec, run_dir = loaded()
            try:
                record = execute(s.name, run_spec, Path(run_dir), item=item, inputs=inputs)
            except Rejected as exc:  # fails the run visibly, and is not retried
                raise AirflowFailException(str(exc)) from None
            return record.value

        return run

    tasks: dict[str, Any] = {}
    previous: Any = None
    for s in STEPS:
        inputs = {keyword: tasks[source] for keyword, source in s.inputs}
        fn = make(s)
        if s.fan_out is not None:
            current = fn.expand(item=tasks[s.fan_out])
        else:
            current = fn(inputs=inputs) if inputs else fn()
        if previous is not None:
            previous >> current
        tasks[s.name] = previous = current
    # a run succeeds only when every step did: the release waits on all of them
    list(tasks.values()) >> _release(production)(tasks["promote"])


def _release(production: Asset) -> Any:
    @task(outlets=[production])
    def release(promotion: dict[str, Any]) -> str:
        """The run's outcome, and the asset event serving DAGs wait for. Airflow judges a run by
        its last tasks, and ``report`` always succeeds; this one runs only after ``promote``
        succeeded (it takes promote's record through XCom, in both modes), so a rejected
        release fails the run instead of looking green."""
        from airflow.sdk.exceptions import AirflowFailException

        from components.records import Promotion

        result = Promotion.model_validate(promotion)
        if result.status != "promoted":
            raise AirflowFailException(f"nothing was promoted: {result.reason}")
        ctx = get_current_context()
        ctx["outlet_events"][production].extra = result.model_dump(
            include={"version", "created", "candidate", "registry", "previous"}
        )
        return f"{result.model} version {result.version} is production"

    return release


def _kubernetes_tasks(production: Asset) -> None:
    """The same graph, each step a pod running ``slimgate step NAME`` in the project image."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    from components.pipeline import STEPS, after_fan_out, step_arguments

    run = ("{{ params.spec }}", "{{ params.runs_dir }}", "{{ run_id | safe_id }}")
    xcom = "/airflow/xcom/return.json"  # what the pod writes there becomes the task's XCom
    pod: dict[str, Any] = {
        "image": _image(),
        "cmds": ["slimgate", "step"],
        "namespace": os.environ.get("SLIMGATE_NAMESPACE", "default"),
        "get_logs": True,
        "on_finish_action": "delete_pod",
    }
    volumes, mounts = [], []
    claim = os.environ.get("SLIMGATE_RUNS_PVC")
    if claim:
        volumes.append(k8s.V1Volume(
            name="runs",
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=claim),
        ))  # fmt: skip
        mounts.append(k8s.V1VolumeMount(name="runs", mount_path=DEFAULT_RUNS_MOUNT))
    # a folder of each node whose lock files its pods share (components/hostlock.py): with it,
    # candidates build side by side and measure in turn on each node. The files are mounted,
    # not the folder, which the node creates for root alone: flock needs only read access.
    lock_dir = os.environ.get("SLIMGATE_HOST_LOCK_DIR")
    if lock_dir:
        for name in ("host.lock", "host.lock.turn"):
            volume = "host-" + name.replace(".", "-")
            volumes.append(k8s.V1Volume(
                name=volume,
                host_path=k8s.V1HostPathVolumeSource(path=f"{lock_dir}/{name}", type="FileOrCreate"),
            ))  # fmt: skip
            mounts.append(k8s.V1VolumeMount(name=volume, mount_path=f"/run/slimgate/{name}"))
    if volumes:
        pod["volumes"], pod["volume_mounts"] = volumes, mounts

    pool = os.environ.get("SLIMGATE_POOL")
    tasks: dict[str, Any] = {}
    previous: Any = None
    for s in STEPS:
        # what a step hands on goes through the pod's XCom file; inputs come back as templates
        outputs = {"value": xcom} if s.value is not None else None  # fmt: skip
        inputs = {keyword: f"{{{{ ti.xcom_pull(task_ids='{source}') }}}}"
                  for keyword, source in s.inputs}  # fmt: skip
        kwargs = {"trigger_rule": "all_done" if s.always or after_fan_out(s) else "all_success",
                  "do_xcom_push": outputs is not None, **pod}  # fmt: skip
        if s.name == "promote":
            kwargs["retries"] = 0  # a rejection (exit 3) is final
        if s.fan_out is not None and s.measures and not lock_dir:
            kwargs["max_active_tis_per_dagrun"] = 1  # pods that share no lock measure in turn
        if s.measures and pool:
            kwargs["pool"] = pool  # one slot: measuring pods of every DAG take turns
        if s.fan_out is not None:
            upstream = tasks[s.fan_out]
            current = KubernetesPodOperator.partial(task_id=s.name, **kwargs).expand(
                arguments=upstream.output.map(
                    lambda item, name=s.name: step_arguments(name, *run, item=item)
                )
            )
        else:
            current = KubernetesPodOperator(
                task_id=s.name, arguments=step_arguments(s.name, *run, inputs=inputs,
                                                         outputs=outputs), **kwargs)  # fmt: skip
        if previous is not None:
            previous >> current
        tasks[s.name] = previous = current
    list(tasks.values()) >> _release(production)(tasks["promote"].output)


DEFAULT_RUNS_MOUNT = "/data/slimgate"

slimgate = build_dag(
    _default_spec(),
    mode="kubernetes" if os.environ.get("SLIMGATE_AIRFLOW_MODE") == "kubernetes" else "local",
)
