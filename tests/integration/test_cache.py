"""The content-addressed cache: unchanged inputs reuse finished work, changed ones do not."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from components.cache import ArtifactCache
from components.errors import InputError
from components.layout import RunLayout, read_json
from components.runner import run
from components.spec import load_spec
from components.stores import FileStore
from components.testing import QUICK_BENCHMARK, write_quick_spec

# these tests are about reuse: a busy moment of a shared machine must not turn a hit into a
# miss (the test of disturbed measurements sets its own limit)
BENCHMARK = QUICK_BENCHMARK | {"max_competing_cores": 8.0}
DEFAULTS = {
    "goals": {"accuracy": {"max_drop": 0.2}},
    "benchmark": BENCHMARK,
    "candidates": [
        {"name": "int8", "steps": ["quantization.dynamic_int8"]},
        {"name": "pruned", "steps": [{"pruning.structured": {"ratio": 0.5, "fine_tune_epochs": 1}}]},
    ],
    "select": "smallest",
}  # fmt: skip


def tabular_spec(tmp_path: Path, **changes: Any) -> Path:
    return write_quick_spec(tmp_path, **(DEFAULTS | changes))


def cache_records(run_dir: Path) -> dict[str, dict[str, bool]]:
    """{model: {"model": hit?, "measurements": hit?}} for the baseline and each candidate."""
    layout = RunLayout(run_dir)
    dirs = {"baseline": layout.baseline.root} | {
        p.name: p for p in sorted((run_dir / "candidates").iterdir())
    }
    return {
        name: {part: rec["hit"] for part, rec in read_json(d / "cache.json").items()}
        for name, d in dirs.items()
    }


ALL_HIT = {"model": True, "measurements": True}
ALL_MISS = {"model": False, "measurements": False}


def test_an_unchanged_rerun_reuses_everything(tmp_path: Path) -> None:
    spec_path = tabular_spec(tmp_path)
    first = run(load_spec(spec_path), tmp_path / "runs", run_id="first")
    assert cache_records(first.run_dir) == {
        "baseline": ALL_MISS,
        "int8": ALL_MISS,
        "pruned": ALL_MISS,
    }
    second = run(load_spec(spec_path), tmp_path / "runs", run_id="second")
    assert cache_records(second.run_dir) == {
        "baseline": ALL_HIT,
        "int8": ALL_HIT,
        "pruned": ALL_HIT,
    }
    record = read_json(second.run_dir / "candidates" / "pruned" / "cache.json")["model"]
    assert record["from_run"] == "first" and record["store"].endswith("runs/.cache")
    # the reused run is a whole run: same models, same verdict, a report
    for name in ("baseline/model.onnx", "candidates/pruned/model.onnx"):
        assert (first.run_dir / name).read_bytes() == (second.run_dir / name).read_bytes()
    one, two = read_json(first.run_dir / "verdict.json"), read_json(second.run_dir / "verdict.json")
    assert one["selected"] == two["selected"] and one["selected"] is not None
    assert (second.run_dir / "report.html").is_file()
    assert (first.status, second.status) == ("promoted", "promoted")


def test_measurements_taken_under_competing_load_are_flagged_and_never_reused(
    tmp_path: Path, competing_load: Any
) -> None:
    spec_path = tabular_spec(
        tmp_path,
        candidates=[{"name": "int8", "steps": ["quantization.dynamic_int8"]}],
        benchmark=QUICK_BENCHMARK | {"max_competing_cores": 0.3, "settle_seconds": 0.5},
    )
    with competing_load():
        loaded = run(load_spec(spec_path), tmp_path / "runs", run_id="loaded")
    for name in ("baseline", "candidates/int8"):
        record: dict[str, Any] = read_json(loaded.run_dir / name / "cache.json")["measurements"]
        assert record["stored"] is False and "cores busy" in record["not_stored"], record
        assert record["not_stored"].startswith("benchmark.json: other processes kept")
    report = (loaded.run_dir / "report.html").read_text()
    assert "Disturbed measurements" in report and "never stored in the cache" in report
    # the model itself was cached; its measurements are taken again
    quiet = run(load_spec(spec_path), tmp_path / "runs", run_id="quiet")
    assert cache_records(quiet.run_dir) == {
        "baseline": {"model": True, "measurements": False},
        "int8": {"model": True, "measurements": False},
    }


def test_a_changed_input_misses_only_what_it_determines(tmp_path: Path) -> None:
    run(load_spec(tabular_spec(tmp_path)), tmp_path / "runs", run_id="first")
    # a different pruning ratio: only that candidate is rebuilt
    changed = tabular_spec(tmp_path, candidates=[
        {"name": "int8", "steps": ["quantization.dynamic_int8"]},
        {"name": "pruned", "steps": [{"pruning.structured": {"ratio": 0.25, "fine_tune_epochs": 1}}]},
    ])  # fmt: skip
    second = run(load_spec(changed), tmp_path / "runs", run_id="recipe")
    records = cache_records(second.run_dir)
    assert records["baseline"] == ALL_HIT and records["int8"] == ALL_HIT
    assert records["pruned"] == ALL_MISS
    # other benchmark settings: every model reused, every measurement taken again
    slower = tabular_spec(tmp_path, benchmark=BENCHMARK | {"min_runs": 40})
    third = run(load_spec(slower), tmp_path / "runs", run_id="benchmark")
    assert set(map(json.dumps, cache_records(third.run_dir).values())) == {
        json.dumps({"model": True, "measurements": False})
    }
    # other training settings: everything again (every candidate's parent changed)
    retrained = tabular_spec(tmp_path, training={"epochs": 6})
    fourth = run(load_spec(retrained), tmp_path / "runs", run_id="training")
    assert set(map(json.dumps, cache_records(fourth.run_dir).values())) == {json.dumps(ALL_MISS)}


def test_a_corrupted_entry_is_ignored_and_the_work_redone(tmp_path: Path) -> None:
    spec_path = tabular_spec(tmp_path)
    run(load_spec(spec_path), tmp_path / "runs", run_id="first")
    cached_models = [p for p in (tmp_path / "runs" / ".cache" / "candidate").rglob("model.onnx")]
    assert len(cached_models) == 2
    for path in cached_models:
        path.write_bytes(path.read_bytes()[:-10] + b"corrupted!")
    second = run(load_spec(spec_path), tmp_path / "runs", run_id="second")
    records = cache_records(second.run_dir)
    assert records["int8"]["model"] is False and records["pruned"]["model"] is False
    assert second.status == "promoted"


def test_caching_can_be_turned_off(tmp_path: Path) -> None:
    spec_path = tabular_spec(tmp_path, cache={"enabled": False})
    run(load_spec(spec_path), tmp_path / "runs", run_id="first")
    second = run(load_spec(spec_path), tmp_path / "runs", run_id="second")
    assert cache_records(second.run_dir)["pruned"] == ALL_MISS
    assert (
        read_json(second.run_dir / "candidates" / "int8" / "cache.json")["model"]["cache"] == "off"
    )
    assert not (tmp_path / "runs" / ".cache").exists()


def test_a_shared_s3_cache_serves_another_machine(s3_endpoint: str, tmp_path: Path) -> None:
    """Two runs with nothing local in common (other runs dirs) share the cache through S3."""
    uri = f"s3://models/cache-{uuid.uuid4().hex[:8]}"
    spec_path = tabular_spec(tmp_path, cache={"uri": uri})
    run(load_spec(spec_path), tmp_path / "machine-a", run_id="a")
    second = run(load_spec(spec_path), tmp_path / "machine-b", run_id="b")
    assert cache_records(second.run_dir) == {
        "baseline": ALL_HIT,
        "int8": ALL_HIT,
        "pruned": ALL_HIT,
    }
    record = read_json(second.run_dir / "candidates" / "int8" / "cache.json")["model"]
    assert record["store"] == uri and record["from_run"] == "a"


def test_the_first_writer_of_a_key_wins_and_its_entry_stays_whole(tmp_path: Path) -> None:
    cache = ArtifactCache(FileStore(tmp_path / "cache"))
    for who in ("a", "b"):
        (tmp_path / who).mkdir()
        (tmp_path / who / "model.onnx").write_bytes(f"model from {who}".encode())
    key = "ab" * 32
    assert cache.save("candidate", key, tmp_path / "a", ["model.onnx"], run_id="a", inputs={})
    assert not cache.save("candidate", key, tmp_path / "b", ["model.onnx"], run_id="b", inputs={})
    hit = cache.restore("candidate", key, tmp_path / "restored")
    assert hit is not None and hit.run_id == "a"
    assert (tmp_path / "restored" / "model.onnx").read_bytes() == b"model from a"
    assert cache.restore("candidate", "cd" * 32, tmp_path / "missing") is None


def test_an_unreachable_cache_is_bad_input_found_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    spec_path = tabular_spec(tmp_path, cache={"uri": "s3://models/cache"},
                             candidates=[["quantization.dynamic_int8"]])  # fmt: skip
    with pytest.raises(InputError, match=r"cache\.uri: cannot reach the S3 endpoint"):
        run(load_spec(spec_path), tmp_path / "runs", run_id="first")
    assert not (tmp_path / "runs").exists()


def test_a_cache_that_fails_during_the_run_does_not_fail_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_endpoint: str
) -> None:
    """Reachable at the preflight, then every connection to it reset: a cache is a shortcut,
    and a run goes on without it."""
    from faultproxy import FaultProxy

    with FaultProxy(s3_endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        spec_path = tabular_spec(tmp_path, cache={"uri": "s3://models/flaky-cache"},
                                 registry=str(tmp_path / "registry"),
                                 candidates=[["quantization.dynamic_int8"]])  # fmt: skip
        # the preflight's probe goes through; nothing else does
        proxy.plan = lambda method, path, i: "pass" if ".slimgate-probe-" in path else "reset"
        result = run(load_spec(spec_path), tmp_path / "runs", run_id="first")
    assert result.status == "promoted" and proxy.fates("reset")
    record = read_json(result.run_dir / "baseline" / "cache.json")["model"]
    assert record["hit"] is False and record["stored"] is False


def test_the_cache_can_be_listed_and_pruned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from components.cli import main

    spec_path = tabular_spec(tmp_path, candidates=[["quantization.dynamic_int8"]])
    run(load_spec(spec_path), tmp_path / "runs", run_id="first")
    runs = str(tmp_path / "runs")
    assert main(["cache", "list", "--runs-dir", runs]) == 0
    assert "4 entries" in capsys.readouterr().out  # baseline, candidate, two measurements
    assert main(["cache", "prune", "--runs-dir", runs, "--older-than-days", "30"]) == 0
    assert "removed 0 entries" in capsys.readouterr().out
    assert main(["cache", "prune", "--runs-dir", runs, "--older-than-days", "0"]) == 0
    assert "removed 4 entries" in capsys.readouterr().out
    again = run(load_spec(spec_path), tmp_path / "runs", run_id="again")
    assert cache_records(again.run_dir)["baseline"] == ALL_MISS
