"""slimgate as a Kubeflow Pipelines v2 pipeline, in two forms from one definition.

- ``lightweight``: Python components that call the step functions in ``components``; for
  ``kfp.local`` runs, or a cluster image with slimgate installed.
- ``container``: every step is ``slimgate step NAME ...`` in the project image, whose tag is
  the package version. ``infra/kfp/slimgate-pipeline.yaml`` is this form, compiled.

The graph is ``components.pipeline.STEPS``; steps share a run directory (a volume or bucket
mount in a cluster) and also emit typed artifacts (Dataset, Model, Metrics, HTML) for the KFP
UI. Candidates fan out with ``ParallelFor``; the report is the exit handler; promote takes the
gate's selection and fails the run when there is none.

Measurements never overlap: pods may land anywhere and share no host lock
(``components.hostlock``), so the candidate loop runs one candidate at a time
(``parallelism=1``) in both forms; within a pod, and for ``kfp.local`` on one machine, the
lock keeps each measurement apart from other slimgate work::

    python dags/slimgate_kfp.py compile infra/kfp/slimgate-pipeline.yaml
"""

# No `from __future__ import annotations`: KFP reads component annotations as types.

import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from kfp import compiler, dsl
from kfp.dsl import HTML, Dataset, Metrics, Model, Output

__all__ = ["IMAGE", "build_pipeline", "compile_pipeline"]


def _version() -> str:
    try:
        return metadata.version("slimgate")
    except metadata.PackageNotFoundError:
        return "dev"


IMAGE = f"ghcr.io/slimgate/slimgate:{_version()}"
DEFAULT_RUNS_DIR = "/data/slimgate/runs"


# --- lightweight components: each runs its step in this process --------------------------------
# KFP reads a component's signature (its typed artifacts) and ships its source, so each is
# written out; the body is the same call for all: components.steps.execute, as `slimgate step`.


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare_data(spec: str, runs_dir: str, run_id: str, dataset: Output[Dataset]) -> list:  # type: ignore[type-arg]  # fmt: skip
    """Validate and split the data; the candidate names to fan out over."""
    from pathlib import Path

    from components.spec import load_spec
    from components.steps import execute

    record = execute("prepare_data", load_spec(spec), Path(runs_dir) / run_id,
                     outputs={"dataset": dataset.path})  # fmt: skip
    return list(record.value)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def baseline(spec: str, runs_dir: str, run_id: str, model: Output[Model], metrics: Output[Metrics]) -> None:  # fmt: skip
    from pathlib import Path

    from components.spec import load_spec
    from components.steps import execute

    execute("baseline", load_spec(spec), Path(runs_dir) / run_id,
            outputs={"model": model.path, "metrics": metrics.path})  # fmt: skip


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def champion(spec: str, runs_dir: str, run_id: str) -> None:
    """Score the production model on this run's data (nothing without a champion goal)."""
    from pathlib import Path

    from components.spec import load_spec
    from components.steps import execute

    execute("champion", load_spec(spec), Path(runs_dir) / run_id)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def candidate(spec: str, runs_dir: str, run_id: str, candidate: str, model: Output[Model], metrics: Output[Metrics]) -> None:  # fmt: skip
    """One candidate; a failure is recorded for the gate and does not stop the pipeline."""
    from pathlib import Path

    from components.spec import load_spec
    from components.steps import execute

    execute("candidate", load_spec(spec), Path(runs_dir) / run_id, item=candidate,
            outputs={"model": model.path, "metrics": metrics.path})  # fmt: skip


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def search(spec: str, runs_dir: str, run_id: str, metrics: Output[Metrics]) -> None:
    """The spec's recipe search (nothing without one); its front joins the gate."""
    from pathlib import Path

    from components.spec import load_spec
    from components.steps import execute

    execute("search", load_spec(spec), Path(runs_dir) / run_id, outputs={"metrics": metrics.path})


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def gate(spec: str, runs_dir: str, run_id: str, metrics: Output[Metrics]) -> str:
    """The selected candidate's name, or "" when none met every goal."""
    from pathlib import Path

    from components.spec import load_spec
    from components.steps import execute

    record = execute("gate", load_spec(spec), Path(runs_dir) / run_id,
                     outputs={"metrics": metrics.path})  # fmt: skip
    return str(record.value)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promote(spec: str, runs_dir: str, run_id: str, expect: str) -> None:
    """Publish the gate's selection; with none, fail: the release was rejected."""
    from pathlib import Path

    from components.spec import load_spec
    from components.steps import execute

    execute("promote", load_spec(spec), Path(runs_dir) / run_id, inputs={"expect": expect})


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def report(spec: str, runs_dir: str, run_id: str, html: Output[HTML]) -> None:
    from pathlib import Path

    from components.spec import load_spec
    from components.steps import execute

    execute("report", load_spec(spec), Path(runs_dir) / run_id, outputs={"html": html.path})


LIGHTWEIGHT = {"prepare_data": prepare_data, "baseline": baseline, "champion": champion,
               "candidate": candidate, "search": search, "gate": gate, "promote": promote,
               "report": report}  # fmt: skip


# --- container components: `slimgate step NAME` in the project image --------------------------


def _step(name: str, spec: Any, runs_dir: Any, run_id: Any, **kwargs: Any) -> dsl.ContainerSpec:
    from components.pipeline import step_arguments

    args = step_arguments(name, spec, runs_dir, run_id, **kwargs)
    return dsl.ContainerSpec(image=IMAGE, command=["slimgate", "step"], args=args)


@dsl.container_component
def prepare_data_c(spec: str, runs_dir: str, run_id: str, dataset: Output[Dataset],
                   names: dsl.OutputPath(list)) -> dsl.ContainerSpec:  # type: ignore[valid-type]  # fmt: skip
    return _step("prepare_data", spec, runs_dir, run_id,
                 outputs={"dataset": dataset.path, "names": names})  # fmt: skip


@dsl.container_component
def baseline_c(spec: str, runs_dir: str, run_id: str, model: Output[Model], metrics: Output[Metrics]) -> dsl.ContainerSpec:  # fmt: skip
    return _step("baseline", spec, runs_dir, run_id,
                 outputs={"model": model.path, "metrics": metrics.path})  # fmt: skip


@dsl.container_component
def champion_c(spec: str, runs_dir: str, run_id: str) -> dsl.ContainerSpec:
    return _step("champion", spec, runs_dir, run_id)


@dsl.container_component
def candidate_c(spec: str, runs_dir: str, run_id: str, candidate: str, model: Output[Model], metrics: Output[Metrics]) -> dsl.ContainerSpec:  # fmt: skip
    return _step("candidate", spec, runs_dir, run_id, item=candidate,
                 outputs={"model": model.path, "metrics": metrics.path})  # fmt: skip


@dsl.container_component
def search_c(spec: str, runs_dir: str, run_id: str, metrics: Output[Metrics]) -> dsl.ContainerSpec:
    return _step("search", spec, runs_dir, run_id, outputs={"metrics": metrics.path})


@dsl.container_component
def gate_c(spec: str, runs_dir: str, run_id: str, metrics: Output[Metrics],
           selected: dsl.OutputPath(str)) -> dsl.ContainerSpec:  # type: ignore[valid-type]  # fmt: skip
    return _step("gate", spec, runs_dir, run_id,
                 outputs={"metrics": metrics.path, "selected": selected})  # fmt: skip


@dsl.container_component
def promote_c(spec: str, runs_dir: str, run_id: str, expect: str) -> dsl.ContainerSpec:
    return _step("promote", spec, runs_dir, run_id, inputs={"expect": expect})


@dsl.container_component
def report_c(spec: str, runs_dir: str, run_id: str, html: Output[HTML]) -> dsl.ContainerSpec:
    return _step("report", spec, runs_dir, run_id, outputs={"html": html.path})


CONTAINER = {"prepare_data": prepare_data_c, "baseline": baseline_c, "champion": champion_c,
             "candidate": candidate_c, "search": search_c, "gate": gate_c, "promote": promote_c,
             "report": report_c}  # fmt: skip


# --- the pipeline: components.pipeline.STEPS, in order ------------------------------------------


def build_pipeline(form: Literal["lightweight", "container"] = "lightweight") -> Any:
    """The pipeline, with its steps as lightweight or as container components.

    The graph comes from ``components.pipeline.STEPS``: steps in order, a fan-out step in a
    ``ParallelFor`` over the value of the step it fans out from, inputs wired from the values of
    earlier steps, and the ``always`` step (the report) as the exit handler, which runs
    whatever happened. A rejected release fails ``promote``, and with it the run.
    """
    from components.pipeline import STEPS, consumed

    components = LIGHTWEIGHT if form == "lightweight" else CONTAINER

    @dsl.pipeline(name="slimgate", description="compress a model and gate its release")
    def slimgate(spec: str, runs_dir: str = DEFAULT_RUNS_DIR) -> None:
        run = {"spec": spec, "runs_dir": runs_dir, "run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER}
        (always,) = [components[s.name](**run).set_display_name(s.name) for s in STEPS if s.always]
        values: dict[str, Any] = {}
        with dsl.ExitHandler(always, name="steps"):
            previous = None
            for s in STEPS:
                if s.always:
                    continue
                inputs = {keyword: values[source] for keyword, source in s.inputs}
                if s.fan_out is not None:
                    # pods on a cluster share no host lock: measuring items go one at a time
                    with dsl.ParallelFor(
                        values[s.fan_out], parallelism=1 if s.measures else 0
                    ) as item:
                        task = components[s.name](**run, **{str(s.item): item}, **inputs)
                else:
                    task = components[s.name](**run, **inputs)
                task.set_display_name(s.name)
                if previous is not None:
                    task.after(previous)
                if s.value is not None and consumed(s):  # lightweight: returned as "Output"
                    values[s.name] = task.outputs[
                        "Output" if form == "lightweight" else s.value.output
                    ]
                previous = task

    return slimgate


def compile_pipeline(path: Path, form: Literal["lightweight", "container"] = "container") -> None:
    compiler.Compiler().compile(build_pipeline(form), str(path))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "compile":
        sys.exit("usage: python dags/slimgate_kfp.py compile OUTPUT.yaml")
    compile_pipeline(Path(sys.argv[2]))
