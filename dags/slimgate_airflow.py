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

When no candidate meets the goals the ``gate`` task fails and ``promote`` does not run; ``report``
still does, and the final ``release`` task makes the run fail visibly (not a skipped branch that
looks green). A
promotion records an asset event (version and key metrics) on ``slimgate.<model>.production``,
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


def build_dag(  # noqa: PLR0915 - the tasks are defined inside, where they close over the spec
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
    def pipeline() -> None:  # noqa: PLR0915  # one task per step, defined in place
        if mode == "kubernetes":
            _kubernetes_tasks(production)
            return

        @task
        def prepare_data() -> list[str]:
            """Validate and split the data; returns the candidate names to fan out over."""
            from components.prepare import prepare_data as step

            run_spec, run_dir = loaded()
            step(run_spec, Path(run_dir))
            return [c.name for c in run_spec.candidate_names()]

        @task
        def baseline() -> None:
            from components.baseline import baseline as step

            run_spec, run_dir = loaded()
            step(run_spec, Path(run_dir))

        @task(map_index_template="{{ name }}")
        def candidate(name: str) -> None:
            from components.layout import RunLayout, write_json
            from components.optimize import candidate as step

            run_spec, run_dir = loaded()
            try:
                step(run_spec, Path(run_dir), name)
            except Exception as exc:
                # the gate reads this and fails the candidate with the reason
                write_json(RunLayout(Path(run_dir)).candidate(name).root / "error.json",
                           {"error": str(exc) or type(exc).__name__, "type": type(exc).__name__})  # fmt: skip
                raise

        @task(trigger_rule="all_done")
        def search() -> None:
            """The spec's recipe search (a no-op without one), after the fixed candidates so
            that benchmarks never overlap; resumes its stored study when retried."""
            from components.search import search as step

            run_spec, run_dir = loaded()
            step(run_spec, Path(run_dir))

        @task(trigger_rule="all_done")
        def gate() -> str:
            """Judge every candidate, even when some failed; fail the run if none passes."""
            from airflow.sdk.exceptions import AirflowFailException

            from components.gate import gate as step

            run_spec, run_dir = loaded()
            verdict = step(run_spec, Path(run_dir))
            if not verdict["selected"]:
                raise AirflowFailException(f"rejected: {verdict['reason']}; nothing was promoted")
            return str(verdict["selected"])

        @task
        def promote(selected: str) -> dict[str, Any]:
            from components.promote import promote as step

            run_spec, run_dir = loaded()
            result: dict[str, Any] = step(run_spec, Path(run_dir))
            return result

        @task(trigger_rule="all_done")
        def report() -> str:
            from components.layout import RunLayout
            from components.report import report as step

            run_spec, run_dir = loaded()
            step(run_spec, Path(run_dir))
            return str(RunLayout(Path(run_dir)).report_html)

        names = prepare_data()
        base = baseline()
        names >> base
        judged = candidate.expand(name=names)
        base >> judged
        selected = gate()
        searched = search()  # always there: a run's spec may come with the run's conf
        base >> searched
        judged >> searched >> selected
        promoted = promote(selected)  # type: ignore[arg-type]  # TaskFlow passes XComArgs
        summary = report()
        promoted >> summary
        summary >> _release(production)(promoted)

    return pipeline()


def _release(production: Asset) -> Any:
    @task(outlets=[production])
    def release(result: dict[str, Any]) -> str:
        """The run's outcome, and the asset event serving DAGs wait for. Airflow judges a run by
        its last tasks, and ``report`` always succeeds; this one is upstream-failed unless a
        model was promoted, so a rejected release fails the run instead of looking green."""
        ctx = get_current_context()
        ctx["outlet_events"][production].extra = {
            key: result.get(key)
            for key in ("version", "created", "candidate", "registry", "previous")
        }
        return f"{result['model']} version {result['version']} is production"

    return release


def _kubernetes_tasks(production: Asset) -> None:
    """The same graph, each step a pod running ``slimgate step NAME`` in the project image."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    run = ["--spec", "{{ params.spec }}", "--runs-dir", "{{ params.runs_dir }}",
           "--run-id", "{{ run_id | safe_id }}"]  # fmt: skip
    xcom = "/airflow/xcom/return.json"  # what the pod writes there becomes the task's XCom
    pod: dict[str, Any] = {
        "image": _image(),
        "cmds": ["slimgate", "step"],
        "namespace": os.environ.get("SLIMGATE_NAMESPACE", "default"),
        "get_logs": True,
        "on_finish_action": "delete_pod",
    }
    claim = os.environ.get("SLIMGATE_RUNS_PVC")
    if claim:
        pod["volumes"] = [
            k8s.V1Volume(
                name="runs",
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=claim),
            )
        ]
        pod["volume_mounts"] = [k8s.V1VolumeMount(name="runs", mount_path=DEFAULT_RUNS_MOUNT)]  # fmt: skip

    prepare = KubernetesPodOperator(task_id="prepare_data", do_xcom_push=True,
                                    arguments=["prepare_data", *run, "--names-out", xcom], **pod)  # fmt: skip
    base = KubernetesPodOperator(task_id="baseline", arguments=["baseline", *run], **pod)
    judged = KubernetesPodOperator.partial(task_id="candidate", **pod).expand(
        arguments=prepare.output.map(lambda name: ["candidate", *run, "--candidate", name])
    )
    # exits 3 when no candidate met the goals: the task fails, and so does the run
    gate = KubernetesPodOperator(
        task_id="gate", trigger_rule="all_done", arguments=["gate", *run], **pod
    )
    promote = KubernetesPodOperator(task_id="promote", do_xcom_push=True,
                                    arguments=["promote", *run, "--promotion-out", xcom], **pod)  # fmt: skip
    report = KubernetesPodOperator(
        task_id="report", trigger_rule="all_done", arguments=["report", *run], **pod
    )
    # after the fixed candidates, so that benchmarks never overlap; a no-op without a search
    search = KubernetesPodOperator(
        task_id="search", trigger_rule="all_done", arguments=["search", *run], **pod
    )
    base >> search
    prepare >> base >> judged >> search >> gate >> promote >> report
    report >> _release(production)(promote.output)


DEFAULT_RUNS_MOUNT = "/data/slimgate"

slimgate = build_dag(
    _default_spec(),
    mode="kubernetes" if os.environ.get("SLIMGATE_AIRFLOW_MODE") == "kubernetes" else "local",
)
