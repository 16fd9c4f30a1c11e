"""The whole pipeline through the command line, on the built-in example.

Goals on latency live in `make bench` and `make demo`, not here: these runs gate on size,
accuracy and agreement and select the smallest passing candidate, all deterministic, so the
tests are too. (Selecting the fastest of two near-tied candidates is not.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.cli import demo_spec_path, main
from components.errors import PromotionRefused
from components.layout import RunLayout, read_json, write_json
from components.promote import promote
from components.registry import FileRegistry, open_registry
from components.spec import load_spec

pytestmark = pytest.mark.system

# The pipeline is under test here, not the machine: short measurements keep it quick.
QUICK_BENCHMARK = {"warmup": 5, "min_runs": 50, "min_seconds": 0.1, "compare_rounds": 4,
                   "compare_seconds": 0.05, "compare_min_runs": 20}  # fmt: skip
# Three int8 variants, quick to make. The example itself tries every technique: that run is
# `make demo` (and `make bench`), too long for a test of the pipeline's plumbing.
INT8_CANDIDATES = [
    {"name": "int8-dynamic", "steps": ["quantization.dynamic_int8"]},
    {"name": "int8-dynamic-per-channel",
     "steps": [{"quantization.dynamic_int8": {"per_channel": True}}]},
    {"name": "int8-dynamic-with-conv",
     "steps": [{"quantization.dynamic_int8": {"op_types": ["Conv", "MatMul"]}}]},
]  # fmt: skip
DETERMINISTIC_GOALS = {
    "size": {"max_ratio": 0.5},
    "accuracy": {"max_drop": 0.01, "confidence": 0.95},
    "agreement": {"min": 0.97},
}


def write(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pipeline")


@pytest.fixture(scope="module")
def promoted(work: Path) -> RunLayout:
    """One full run of the built-in example (it trains the CNN), shared by the tests below."""
    spec = yaml.safe_load(demo_spec_path().read_text())
    spec.update(goals=DETERMINISTIC_GOALS, select="smallest", registry=str(work / "registry"),
                benchmark=QUICK_BENCHMARK, candidates=INT8_CANDIDATES)  # fmt: skip
    code = main(["run", str(write(work / "digits.yaml", spec)), "--runs-dir", str(work / "runs"),
                 "--run-id", "first"])  # fmt: skip
    assert code == 0
    return RunLayout(work / "runs" / "first")


def onnx_spec(work: Path, run: RunLayout, name: str, **changes: Any) -> Path:
    """The example spec on the first run's exported baseline: no training needed."""
    spec = yaml.safe_load(demo_spec_path().read_text())
    spec.update({"model": {"onnx": str(run.baseline.model)}, "goals": DETERMINISTIC_GOALS,
                 "select": "smallest", "registry": str(work / "registry"),
                 "benchmark": QUICK_BENCHMARK, "candidates": INT8_CANDIDATES, **changes})  # fmt: skip
    return write(work / f"{name}.yaml", spec)


def test_the_example_trains_well_and_promotes_a_quantized_model(
    promoted: RunLayout, work: Path
) -> None:
    base = read_json(promoted.baseline.metrics)
    assert base["accuracy"] >= 0.97
    verdict = read_json(promoted.verdict)
    assert verdict["selected"] is not None
    reg = FileRegistry(work / "registry")
    assert reg.versions("digits-cnn") == [1]
    pointer = reg.pointer("digits-cnn")
    assert pointer is not None and (pointer.version, pointer.previous) == (1, None)
    reg.verify("digits-cnn", 1)
    card = reg.card("digits-cnn", 1)
    assert card["candidate"] == verdict["selected"]
    assert card["lineage"]["recipe"][0]["key"] == "quantization.dynamic_int8"
    assert card["lineage"]["data_fingerprint"] == read_json(promoted.dataset)["fingerprint"]
    assert card["lineage"]["parent_model_sha256"] == base["sha256"]
    assert card["lineage"]["spec_sha256"] == read_json(promoted.spec)["digest"]
    assert card["metrics"]["size_bytes"] < 0.35 * base["size_bytes"]
    assert all(g["outcome"] == "pass" for g in card["verdict"]["goals"])
    assert (work / "registry" / "digits-cnn" / "versions" / "1" / "report.html").is_file()
    events = reg.events("digits-cnn")
    assert [e["action"] for e in events] == ["publish", "move_alias"]
    assert all(e["run_id"] == "first" for e in events)


def test_the_report_shows_every_model(promoted: RunLayout) -> None:
    report = read_json(promoted.report_json)
    assert report["status"] == "promoted"
    names = [c["name"] for c in report["candidates"]]
    assert names == ["int8-dynamic", "int8-dynamic-per-channel", "int8-dynamic-with-conv"]
    page = promoted.report_html.read_text()
    assert all(name in page for name in names) and "<svg" in page
    bench = read_json(promoted.baseline.benchmark)
    assert set(bench["batches"]) == {"1", "32"}
    assert bench["batches"]["1"]["runs"] >= 50 and bench["environment"]["threads"] == 2
    assert len(bench["batches"]["1"]["samples_ms"]) == bench["batches"]["1"]["runs"]
    assert bench["macs_per_example"] > 20_000_000  # the CNN's convolutions and classifier
    for row in report["candidates"]:
        comparison = read_json(promoted.candidate(row["name"]).comparison)
        assert comparison["rounds"] == 4 and len(comparison["order"]) == 8
        assert row["speedup"] == comparison["speedup"] and row["speedup_interval"] is not None
    assert "Latency distribution" in page and "Throughput" in page


def test_unreachable_goals_reject_write_nothing_and_keep_the_report(
    promoted: RunLayout, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = work / "registry"
    before = sorted(p.relative_to(registry) for p in registry.rglob("*"))
    spec = onnx_spec(work, promoted, "impossible", goals={"size": {"max_mb": 0.001}})
    code = main(["run", str(spec), "--runs-dir", str(work / "runs"), "--run-id", "rejected"])
    assert code == 3
    assert sorted(p.relative_to(registry) for p in registry.rglob("*")) == before
    run = RunLayout(work / "runs" / "rejected")
    assert read_json(run.promotion)["status"] == "rejected"
    assert read_json(run.report_json)["status"] == "rejected"
    assert "rejected" in run.report_html.read_text()
    out = capsys.readouterr().out
    assert "rejected: none of 3 candidates met every goal; nothing was promoted" in out
    # each candidate names the goal that blocked it
    assert out.count("size_mb") == 0 and out.count("int8-dynamic: size ") == 1


def test_promote_refuses_without_a_passing_verdict(promoted: RunLayout, work: Path) -> None:
    run = RunLayout(work / "runs" / "rejected")
    spec = load_spec(work / "impossible.yaml")
    with pytest.raises(PromotionRefused, match="none of 3 candidates met every goal"):
        promote(spec, run.root)

    # A verdict edited by hand to select a failing candidate is refused too.
    verdict = read_json(run.verdict)
    verdict["selected"] = verdict["candidates"][0]["name"]
    write_json(run.verdict, verdict)
    with pytest.raises(PromotionRefused, match="did not pass every goal"):
        promote(spec, run.root)
    assert FileRegistry(work / "registry").versions("digits-cnn") == [1]


def test_promote_refuses_a_model_changed_after_the_gate(promoted: RunLayout, work: Path) -> None:
    copy = work / "runs" / "tampered"
    shutil.copytree(promoted.root, copy)
    run = RunLayout(copy)
    selected = read_json(run.verdict)["selected"]
    run.candidate(selected).model.write_bytes(run.baseline.model.read_bytes())
    spec = load_spec(work / "digits.yaml")
    with pytest.raises(PromotionRefused, match="changed since the gate judged it"):
        promote(spec, run.root)


def test_promote_keeps_the_alias_policy(promoted: RunLayout, work: Path, tmp_path: Path) -> None:
    """A run whose version is older than production's is published but does not move it; nor
    does a run that looked at production before a rollback."""
    run = RunLayout(tmp_path / "run")
    shutil.copytree(promoted.root, run.root)
    registry = tmp_path / "registry"
    shutil.copytree(work / "registry", registry)
    reg = FileRegistry(registry)
    newer = tmp_path / "newer.onnx"
    newer.write_bytes(promoted.baseline.model.read_bytes())  # another model, released since
    v2 = reg.publish("digits-cnn", {"model.onnx": newer}, {}).version
    reg.move_alias("digits-cnn", v2, seen_serial=1, reason="a later release")
    step = ["step", "promote", "--spec", str(work / "digits.yaml"), "--run-dir", str(run.root),
            "--registry", str(registry)]  # fmt: skip
    assert main(step) == 3
    record = read_json(run.promotion)
    assert record["status"] == "refused" and record["version"] == 1
    assert "production is at version 2, newer than 1" in record["reason"]
    assert reg.pointer("digits-cnn").version == 2  # type: ignore[union-attr]
    refused = [e for e in reg.events("digits-cnn") if e["action"] == "alias_refused"]
    assert [e["run_id"] for e in refused] == [run.run_id]

    # A registry whose production this run's champion step scored at serial 2 (v2), and which
    # an operator rolled back to v1 since: the run's own version is refused.
    other = FileRegistry(tmp_path / "other")
    for content in (b"first", b"second"):
        (tmp_path / "m.onnx").write_bytes(promoted.baseline.model.read_bytes() + content)
        v = other.publish("digits-cnn", {"model.onnx": tmp_path / "m.onnx"}, {}).version
        other.move_alias("digits-cnn", v, seen_serial=v - 1, reason="earlier releases")
    write_json(run.champion_record, {"model": "digits-cnn", "version": 2, "serial": 2})
    other.rollback("digits-cnn", reason="v2 misbehaves")
    step[-1] = str(tmp_path / "other")
    assert main(step) == 3
    record = read_json(run.promotion)
    assert record["status"] == "refused" and record["version"] == 3
    assert (
        "rolled back (pointer serial 3) after this run looked at it (serial 2)" in record["reason"]
    )
    # a run that looked after the rollback goes through
    write_json(run.champion_record, {"model": "digits-cnn", "version": 1, "serial": 3})
    assert main(step) == 0 and other.pointer("digits-cnn").version == 3  # type: ignore[union-attr]


def test_steps_run_one_by_one_like_an_orchestrator_would(promoted: RunLayout, work: Path) -> None:
    spec = onnx_spec(work, promoted, "stepwise")
    run_dir = work / "runs" / "stepwise"
    common = ["--spec", str(spec), "--run-dir", str(run_dir)]
    for step in ("prepare_data", "baseline"):
        assert main(["step", step, *common]) == 0
    for name in ("int8-dynamic", "int8-dynamic-per-channel", "int8-dynamic-with-conv"):
        assert main(["step", "candidate", *common, "--candidate", name]) == 0
    for step in ("gate", "promote", "report"):
        assert main(["step", step, *common]) == 0
    promotion = read_json(RunLayout(run_dir).promotion)
    # The same baseline and recipe give the same bytes: no second version.
    assert promotion["version"] == 1 and promotion["created"] is False
    assert FileRegistry(work / "registry").versions("digits-cnn") == [1]


def test_registry_commands(
    promoted: RunLayout, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["registry", "list", "--registry", str(work / "registry")]) == 0
    assert "digits-cnn\tv1 production" in capsys.readouterr().out
    assert main(["registry", "show", "digits-cnn", "--registry", str(work / "registry")]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["version"] == 1 and "lineage" in card
    reg = ["--registry", str(work / "registry")]
    assert main(["registry", "download", "digits-cnn", str(work / "downloaded"), *reg]) == 0
    assert (work / "downloaded" / "model.onnx").is_file() and (
        work / "downloaded" / "report.html"
    ).is_file()
    assert main(["registry", "diff", "digits-cnn", "1", "1", *reg]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 3)[-1])["files"] == {}
    # one version only: there is nothing to roll back to, and the alias stays
    assert main(["registry", "rollback", "digits-cnn", "--reason", "test", *reg]) == 2
    assert "nothing to roll back to" in capsys.readouterr().err


def slimgate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("slimgate")
    return subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"goals": {"latency": {"max_ms": "fast"}}},
            "goals.latency.max_ms: Input should be a valid number",
        ),
        (
            {"data": {"path": "missing.csv"}, "model": {"builtin": "tabular_mlp"}},
            "data.path: file not found:",
        ),
        (
            {"candidates": [["pruning.magic"]]},
            "unknown optimizer 'pruning.magic'; known optimizers:",
        ),
    ],
    ids=["malformed", "missing-data", "unknown-optimizer"],
)
def test_bad_input_gives_one_clear_error_line(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    spec = yaml.safe_load(demo_spec_path().read_text())
    spec.update(change)
    result = slimgate("run", str(write(tmp_path / "bad.yaml", spec)), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("slimgate: error:")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "registry").exists()


def test_schema_and_optimizers_commands(tmp_path: Path) -> None:
    schema = slimgate("schema", cwd=tmp_path)
    assert schema.returncode == 0 and json.loads(schema.stdout)["title"] == "Spec"
    listing = slimgate("optimizers", "list", cwd=tmp_path)
    assert "quantization.dynamic_int8" in listing.stdout and "onnx" in listing.stdout


def test_a_tiny_test_split_is_refused_and_a_small_one_is_inconclusive(
    promoted: RunLayout, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = work / "registry"
    before = sorted(p.relative_to(registry) for p in registry.rglob("*"))
    # 36 test examples: even all correct, 95% confidence cannot put accuracy above 0.97, so the
    # run is refused before anything is built, saying how many rows it would need
    spec = onnx_spec(work, promoted, "tiny", split={"test": 0.02, "calibration": 0.1, "seed": 0},
                     goals={"accuracy": {"min": 0.97}})  # fmt: skip
    code = main(["run", str(spec), "--runs-dir", str(work / "runs"), "--run-id", "tiny"])
    assert code == 2
    assert "cannot pass on 36 test rows even with every example right; it needs at least 99" in (
        capsys.readouterr().err
    )
    # 108: enough if nearly all are right, but the candidates' few mistakes keep the bound low
    spec = onnx_spec(work, promoted, "small", split={"test": 0.06, "calibration": 0.1, "seed": 0},
                     goals={"accuracy": {"min": 0.97}})  # fmt: skip
    code = main(["run", str(spec), "--runs-dir", str(work / "runs"), "--run-id", "small"])
    assert code == 3
    verdict = read_json(RunLayout(work / "runs" / "small").verdict)
    for cand in verdict["candidates"]:
        (goal,) = cand["goals"]
        assert goal["outcome"] == "inconclusive" and goal["value"] >= 0.97 and goal["bound"] < 0.97
        assert "examples would decide it" in goal["reason"]
    assert sorted(p.relative_to(registry) for p in registry.rglob("*")) == before
    assert "accuracy" in capsys.readouterr().out


def test_champion_challenger_against_the_production_version(
    promoted: RunLayout, work: Path
) -> None:
    goals = {**DETERMINISTIC_GOALS, "champion": {"max_accuracy_drop": 0.0}}
    spec = onnx_spec(work, promoted, "challenger", goals=goals)
    assert main(["run", str(spec), "--runs-dir", str(work / "runs"), "--run-id", "challenger"]) == 0
    run = RunLayout(work / "runs" / "challenger")
    assert read_json(run.champion.root / "champion.json")["version"] == 1
    verdict = read_json(run.verdict)
    assert verdict["champion"] == 1
    champion_goals = [
        g for c in verdict["candidates"] for g in c["goals"] if g["goal"] == "champion"
    ]
    assert len(champion_goals) == 3 and all(
        "from production" in g["reason"] for g in champion_goals
    )

    # a fresh registry has no champion: the goal blocks unless the first release is allowed
    fresh = onnx_spec(work, promoted, "first", goals=goals, registry=str(work / "fresh-registry"))
    assert (
        main(["run", str(fresh), "--runs-dir", str(work / "runs"), "--run-id", "first-release"])
        == 3
    )
    assert not (work / "fresh-registry").exists()


def test_the_same_run_promotes_to_s3_by_changing_only_the_registry_uri(
    promoted: RunLayout, work: Path, s3_endpoint: str
) -> None:
    spec = onnx_spec(work, promoted, "to-s3", registry="s3://models/pipelines")
    assert main(["run", str(spec), "--runs-dir", str(work / "runs"), "--run-id", "s3"]) == 0
    reg = open_registry("s3://models/pipelines")
    pointer = reg.pointer("digits-cnn")
    assert reg.versions("digits-cnn") == [1] and pointer is not None and pointer.version == 1
    reg.verify("digits-cnn", 1)
    card = reg.card("digits-cnn", 1)
    assert set(card["files"]) == {"model.onnx", "report.html"} and card["lineage"]["data_profile"]
    assert (
        read_json(RunLayout(work / "runs" / "s3").promotion)["registry"] == "s3://models/pipelines"
    )
    # and the registry commands read it over the same URI
    assert main(["registry", "list", "--registry", "s3://models/pipelines"]) == 0


def test_candidates_running_in_parallel_do_not_share_files(promoted: RunLayout, work: Path) -> None:
    """Orchestrators fan candidates out in parallel; each must work on files of its own."""
    from concurrent.futures import ThreadPoolExecutor

    from components.optimize import candidate

    spec = load_spec(onnx_spec(work, promoted, "parallel"))
    run_dir = work / "runs" / "parallel"
    shutil.copytree(promoted.root, run_dir)
    names = [c.name for c in spec.candidate_names()] * 2  # the same recipes, twice at once
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: candidate(spec, run_dir, n), names[:3]))
    assert not list((run_dir / "baseline").glob("*inferred*"))
    for name in names[:3]:
        assert RunLayout(run_dir).candidate(name).model.is_file()


PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "acme-slimgate"
version = "0.1.0"

[project.entry-points."slimgate.optimizers"]
"acme.stamp" = "acme_slimgate:Stamp"
"""

PLUGIN_MODULE = '''
"""A platform team's optimizer, in a package of its own."""
from pathlib import Path
from typing import Any, ClassVar

from optimizers import OnnxOptimizer, OptimizeContext, OptimizerConfig


class StampConfig(OptimizerConfig):
    owner: str = "acme"


class Stamp(OnnxOptimizer[StampConfig]):
    key: ClassVar[str] = "acme.stamp"
    config_class: ClassVar[type[OptimizerConfig]] = StampConfig
    description: ClassVar[str] = "record the owning team in the model's metadata"

    def _apply(self, src: Path, dst: Path, ctx: OptimizeContext) -> dict[str, Any]:
        import onnx

        model = onnx.load(str(src))
        onnx.helper.set_model_props(model, {"owner": self.config.owner})
        onnx.save(model, str(dst))
        return {"owner": self.config.owner}
'''


def test_a_plugin_package_adds_an_optimizer_through_the_entry_point_group(
    promoted: RunLayout, work: Path
) -> None:
    source, site = work / "acme-plugin", work / "acme-site"
    source.mkdir()
    (source / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (source / "acme_slimgate.py").write_text(PLUGIN_MODULE)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)], check=True, capture_output=True, timeout=300)  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(site)}
    exe = str(Path(sys.executable).with_name("slimgate"))
    listing = subprocess.run(
        [exe, "optimizers", "list"], env=env, capture_output=True, text=True, check=True
    )
    assert "acme.stamp" in listing.stdout and "record the owning team" in listing.stdout

    spec = onnx_spec(
        work,
        promoted,
        "plugin",
        candidates=[[{"acme.stamp": {"owner": "vision"}}, "quantization.dynamic_int8"]],
    )
    proc = subprocess.run([exe, "run", str(spec), "--runs-dir", str(work / "runs"), "--run-id", "plugin"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    steps = read_json(
        work / "runs" / "plugin" / "candidates" / "c0-stamp-dynamic-int8" / "optimize.json"
    )["steps"]
    assert [s["key"] for s in steps] == ["acme.stamp", "quantization.dynamic_int8"]
    assert steps[0]["details"] == {"owner": "vision"}
    # without the plugin installed, the same spec fails before any work, naming the key
    bare = subprocess.run([exe, "validate", str(spec)], capture_output=True, text=True, check=False)
    assert bare.returncode == 2 and "unknown optimizer 'acme.stamp'" in bare.stderr
