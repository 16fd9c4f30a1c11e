"""slimgate as a Kubeflow Pipelines v2 pipeline, in two forms from one definition.

- ``lightweight``: Python components that call the step functions in ``components``; for
  ``kfp.local`` runs, or a cluster image with slimgate installed.
- ``container``: every step is ``slimgate step NAME ...`` in the project image, whose tag is
  the package version. ``infra/kfp/slimgate-pipeline.yaml`` is this form, compiled.

Steps share a run directory (a volume or bucket mount in a cluster) and also emit typed
artifacts (Dataset, Model, Metrics, HTML) for the KFP UI. Candidates fan out with
``ParallelFor``; promote runs inside ``dsl.If`` on the gate's selection::

    python dags/slimgate_kfp.py compile infra/kfp/slimgate-pipeline.yaml
"""

# No `from __future__ import annotations`: KFP reads component annotations as types.

import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from kfp import compiler, dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

__all__ = ["IMAGE", "build_pipeline", "compile_pipeline"]


def _version() -> str:
    try:
        return metadata.version("slimgate")
    except metadata.PackageNotFoundError:
        return "dev"


IMAGE = f"ghcr.io/slimgate/slimgate:{_version()}"
DEFAULT_RUNS_DIR = "/data/slimgate/runs"


# --- lightweight components -------------------------------------------------------------------


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare_data(spec: str, runs_dir: str, run_id: str, dataset: Output[Dataset]) -> list:  # type: ignore[type-arg]
    """Validate and split the data; the candidate names to fan out over."""
    import shutil
    from pathlib import Path

    from components.layout import RunLayout
    from components.prepare import prepare_data as step
    from components.spec import load_spec

    run_dir = Path(runs_dir) / run_id
    s = load_spec(spec)
    step(s, run_dir)
    shutil.copyfile(RunLayout(run_dir).dataset, dataset.path)
    return [c.name for c in s.candidate_names()]


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def baseline(
    spec: str,
    runs_dir: str,
    run_id: str,
    dataset: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
) -> None:
    import shutil
    from pathlib import Path

    from components.baseline import baseline as step
    from components.layout import RunLayout
    from components.spec import load_spec

    result = step(load_spec(spec), Path(runs_dir) / run_id)
    shutil.copyfile(RunLayout(Path(runs_dir) / run_id).baseline.model, model.path)
    for key in ("accuracy", "size_bytes", "parameters"):
        metrics.log_metric(key, float(result[key]))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def candidate(
    spec: str,
    runs_dir: str,
    run_id: str,
    name: str,
    baseline_model: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
) -> None:
    import shutil
    from pathlib import Path

    from components.layout import RunLayout, write_json
    from components.optimize import candidate as step
    from components.spec import load_spec

    out = RunLayout(Path(runs_dir) / run_id).candidate(name)
    try:
        result = step(load_spec(spec), Path(runs_dir) / run_id, name)
    except Exception as exc:
        write_json(
            out.root / "error.json",
            {"error": str(exc) or type(exc).__name__, "type": type(exc).__name__},
        )
        raise
    shutil.copyfile(out.model, model.path)
    for key in ("accuracy", "agreement", "size_bytes"):
        metrics.log_metric(key, float(result[key]))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def search(spec: str, runs_dir: str, run_id: str, summary: Output[Metrics]) -> None:
    """The spec's recipe search (nothing when the spec has none); its front joins the gate."""
    from pathlib import Path

    from components.search import search as step
    from components.spec import load_spec

    result = step(load_spec(spec), Path(runs_dir) / run_id)
    summary.log_metric("trials", float(len(result["trials"])))
    summary.log_metric("front", float(len(result.get("front", []))))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def gate(spec: str, runs_dir: str, run_id: str, verdict: Output[Metrics]) -> str:
    """The selected candidate's name, or "" when none met every goal."""
    from pathlib import Path

    from components.gate import gate as step
    from components.spec import load_spec

    result = step(load_spec(spec), Path(runs_dir) / run_id)
    for entry in result["candidates"]:
        verdict.log_metric(f"{entry['name']}.passed", 1.0 if entry["passed"] else 0.0)
    return str(result["selected"] or "")


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promote(spec: str, runs_dir: str, run_id: str, selected: str) -> int:
    from pathlib import Path

    from components.promote import promote as step
    from components.spec import load_spec

    result = step(load_spec(spec), Path(runs_dir) / run_id)
    if result["candidate"] != selected:
        raise RuntimeError(f"promoted {result['candidate']!r}, but the gate selected {selected!r}")
    return int(result["version"])


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def report(spec: str, runs_dir: str, run_id: str, page: Output[HTML]) -> str:
    import shutil
    from pathlib import Path

    from components.layout import RunLayout
    from components.report import report as step
    from components.spec import load_spec

    data = step(load_spec(spec), Path(runs_dir) / run_id)
    shutil.copyfile(RunLayout(Path(runs_dir) / run_id).report_html, page.path)
    return str(data["status"])


LIGHTWEIGHT = {"prepare_data": prepare_data, "baseline": baseline, "candidate": candidate,
               "search": search, "gate": gate, "promote": promote, "report": report}  # fmt: skip


# --- container components: `slimgate step NAME` in the project image --------------------------


def _step(name: str, spec: Any, runs_dir: Any, run_id: Any, *args: Any) -> dsl.ContainerSpec:
    common = ["--spec", spec, "--runs-dir", runs_dir, "--run-id", run_id]
    return dsl.ContainerSpec(image=IMAGE, command=["slimgate", "step", name], args=[*common, *args])


@dsl.container_component
def prepare_data_c(spec: str, runs_dir: str, run_id: str, dataset: Output[Dataset],
                   names: dsl.OutputPath(list)) -> dsl.ContainerSpec:  # type: ignore[valid-type]  # fmt: skip
    return _step(
        "prepare_data", spec, runs_dir, run_id, "--dataset-out", dataset.path, "--names-out", names
    )


@dsl.container_component
def baseline_c(
    spec: str,
    runs_dir: str,
    run_id: str,
    dataset: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
) -> dsl.ContainerSpec:
    return _step(
        "baseline", spec, runs_dir, run_id, "--model-out", model.path, "--metrics-out", metrics.path
    )


@dsl.container_component
def candidate_c(
    spec: str,
    runs_dir: str,
    run_id: str,
    name: str,
    baseline_model: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
) -> dsl.ContainerSpec:
    return _step("candidate", spec, runs_dir, run_id, "--candidate", name, "--model-out", model.path,
                 "--metrics-out", metrics.path)  # fmt: skip


@dsl.container_component
def search_c(spec: str, runs_dir: str, run_id: str, summary: Output[Metrics]) -> dsl.ContainerSpec:
    return _step("search", spec, runs_dir, run_id, "--metrics-out", summary.path)


@dsl.container_component
def gate_c(
    spec: str, runs_dir: str, run_id: str, verdict: Output[Metrics], selected: dsl.OutputPath(str)
) -> dsl.ContainerSpec:  # type: ignore[valid-type]
    return _step(
        "gate", spec, runs_dir, run_id, "--metrics-out", verdict.path, "--selected-out", selected
    )


@dsl.container_component
def promote_c(spec: str, runs_dir: str, run_id: str, selected: str) -> dsl.ContainerSpec:
    return _step("promote", spec, runs_dir, run_id, "--expect", selected)


@dsl.container_component
def report_c(spec: str, runs_dir: str, run_id: str, page: Output[HTML]) -> dsl.ContainerSpec:
    return _step("report", spec, runs_dir, run_id, "--html-out", page.path)


CONTAINER = {"prepare_data": prepare_data_c, "baseline": baseline_c, "candidate": candidate_c,
             "search": search_c, "gate": gate_c, "promote": promote_c, "report": report_c}  # fmt: skip


# --- the pipeline --------------------------------------------------------------------------------


def build_pipeline(form: Literal["lightweight", "container"] = "lightweight") -> Any:
    """The pipeline, with its steps as lightweight or as container components."""
    c = LIGHTWEIGHT if form == "lightweight" else CONTAINER

    @dsl.pipeline(name="slimgate", description="compress a model and gate its release")
    def slimgate(spec: str, runs_dir: str = DEFAULT_RUNS_DIR) -> None:
        run = {"spec": spec, "runs_dir": runs_dir, "run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER}
        prep = c["prepare_data"](**run)
        names = prep.outputs["Output" if form == "lightweight" else "names"]
        base = c["baseline"](**run, dataset=prep.outputs["dataset"])
        with dsl.ParallelFor(names) as name:
            cand = c["candidate"](**run, name=name, baseline_model=base.outputs["model"])
        # after the fixed candidates, so that benchmarks never overlap; a no-op without a search
        searched = c["search"](**run).after(cand)
        judged = c["gate"](**run).after(searched)
        selected = judged.outputs["Output" if form == "lightweight" else "selected"]
        c["report"](**run).set_display_name("report").after(judged)
        with dsl.If(selected != "", name="a-candidate-passed"):
            promoted = c["promote"](**run, selected=selected)
            c["report"](**run).set_display_name("report-after-promote").after(promoted)

    return slimgate


def compile_pipeline(path: Path, form: Literal["lightweight", "container"] = "container") -> None:
    compiler.Compiler().compile(build_pipeline(form), str(path))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "compile":
        sys.exit("usage: python dags/slimgate_kfp.py compile OUTPUT.yaml")
    compile_pipeline(Path(sys.argv[2]))
