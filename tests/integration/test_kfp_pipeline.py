"""The Kubeflow pipeline: run whole with kfp.local, the committed IR kept in step with the code,
and the container form's compiled commands run as subprocesses (no container engine here)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("kfp", reason="install slimgate[kfp] to test the pipeline")

ROOT = Path(__file__).parents[2]
COMMITTED_IR = ROOT / "infra" / "kfp" / "slimgate-pipeline.yaml"

RUNNER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import slimgate_kfp
    from kfp import local
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=sys.argv[4],
               raise_on_error=False)
    slimgate_kfp.build_pipeline("lightweight")(spec=sys.argv[2], runs_dir=sys.argv[3])
""")


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kfp")
    spec: dict[str, Any] = {
        "name": "cancer-mlp",
        "model": {"builtin": "tabular_mlp"},
        "data": {"builtin": "breast_cancer"},
        "training": {"epochs": 3},
        "target": {"threads": 1, "batch_sizes": [1]},
        "benchmark": {"warmup": 2, "min_runs": 20, "min_seconds": 0.05, "compare_rounds": 4,
                      "compare_seconds": 0.02, "compare_min_runs": 10},
        "goals": {"size": {"max_ratio": 0.5}, "accuracy": {"max_drop": 0.05}},
        "candidates": [["quantization.dynamic_int8"], [{"quantization.dynamic_int8": {"per_channel": True}}]],
        "select": "smallest",
        "registry": str(root / "registry"),
    }  # fmt: skip
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    searching = spec | {"search": {"trials": 2, "sampler": "random", "recipes": [{"name": "prune-int8", "steps": [
        {"pruning.structured": {"ratio": {"choices": [0.5, 0.75]}, "fine_tune_epochs": 1}},
        "quantization.dynamic_int8"]}]}}  # fmt: skip
    (root / "search.yaml").write_text(yaml.safe_dump(searching))
    spec["goals"] = {"size": {"max_mb": 0.00001}}
    (root / "impossible.yaml").write_text(yaml.safe_dump(spec))
    return {"root": root, "ok": root / "spec.yaml", "search": root / "search.yaml",
            "impossible": root / "impossible.yaml"}  # fmt: skip


def run_local(specs: dict[str, Path], spec: Path, name: str) -> tuple[str, Path]:
    runs = specs["root"] / f"runs-{name}"
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(ROOT / "dags"), str(spec), str(runs), str(specs["root"] / f"root-{name}")],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    log = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    assert proc.returncode == 0 and "Pipeline 'slimgate' finished" in log, log[-4000:]
    (run_dir,) = [p for p in runs.iterdir() if p.name != ".cache"]
    return log, run_dir


def test_the_pipeline_runs_locally_and_promotes(specs: dict[str, Path]) -> None:
    log, run_dir = run_local(specs, specs["search"], "ok")
    assert "Task 'promote' finished with status SUCCESS" in log
    assert "Task 'search' finished with status SUCCESS" in log
    assert json.loads((run_dir / "search" / "search.json").read_text())["distinct"] == 2
    for name in ("c0-dynamic-int8", "c1-dynamic-int8"):  # both branches of the ParallelFor ran
        assert (run_dir / "candidates" / name / "comparison.json").is_file()
    assert "Pipeline 'slimgate' finished with status SUCCESS" in log
    promotion = json.loads((run_dir / "promotion.json").read_text())
    assert promotion["status"] == "promoted" and promotion["version"] == 1
    assert json.loads((run_dir / "report.json").read_text())["status"] == "promoted"


def test_unreachable_goals_fail_the_run_and_keep_the_report(specs: dict[str, Path]) -> None:
    log, run_dir = run_local(specs, specs["impossible"], "impossible")
    assert "Task 'gate' finished with status SUCCESS" in log
    assert "Task 'promote' finished with status FAILURE" in log
    assert "Task 'report' finished with status SUCCESS" in log  # the exit handler
    assert "Pipeline 'slimgate' finished with status FAILURE" in log
    assert json.loads((run_dir / "promotion.json").read_text())["status"] == "rejected"
    assert json.loads((run_dir / "verdict.json").read_text())["selected"] is None
    assert json.loads((run_dir / "report.json").read_text())["status"] == "rejected"


def compiled(tmp_path: Path) -> Path:
    out = tmp_path / "pipeline.yaml"
    subprocess.run(
        [sys.executable, str(ROOT / "dags" / "slimgate_kfp.py"), "compile", str(out)], check=True
    )
    return out


SDK_VERSION = re.compile(r"^sdkVersion: kfp-(\S+)$", re.MULTILINE)


def sdk_version(ir: str) -> str:
    match = SDK_VERSION.search(ir)
    assert match, "the compiled IR records no sdkVersion"
    return match.group(1)


def test_the_committed_ir_is_up_to_date(tmp_path: Path) -> None:
    """The pipeline the code compiles to today is the committed one, whatever kfp patch release
    compiled either: the SDK version line is compared by the test below, against the lock."""
    import kfp

    fresh, committed = compiled(tmp_path).read_text(), COMMITTED_IR.read_text()
    assert SDK_VERSION.sub("", committed) == SDK_VERSION.sub("", fresh), (
        f"infra/kfp/slimgate-pipeline.yaml (compiled by kfp {sdk_version(committed)}) differs "
        f"from what the code compiles to with kfp {kfp.__version__}: run `make kfp`"
    )


def test_the_committed_ir_was_compiled_by_the_locked_kfp() -> None:
    from packaging.requirements import Requirement

    lock = ROOT / "infra" / "requirements" / "main.txt"
    (pin,) = [
        Requirement(line) for line in lock.read_text().splitlines() if line.startswith("kfp==")
    ]
    locked = str(pin.specifier).removeprefix("==")
    assert sdk_version(COMMITTED_IR.read_text()) == locked, (
        f"infra/kfp/slimgate-pipeline.yaml was compiled by kfp "
        f"{sdk_version(COMMITTED_IR.read_text())}, the lock holds kfp {locked}: run `make kfp`"
    )


def test_every_container_step_is_slimgate_step_in_the_versioned_image(tmp_path: Path) -> None:
    """The commands themselves run in tests/integration/test_conformance.py (kfp-container-ir)."""
    ir = yaml.safe_load(compiled(tmp_path).read_text())
    containers = [e["container"] for e in ir["deploymentSpec"]["executors"].values()]
    assert {c["image"] for c in containers} == {"ghcr.io/slimgate/slimgate:0.1.0"}
    assert all(c["command"] == ["slimgate", "step"] for c in containers)
