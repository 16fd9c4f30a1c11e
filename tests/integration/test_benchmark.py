"""The benchmark and the comparison, measured for real in worker processes."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import pytest
import torch

from components.benchmark import BenchmarkError, benchmark, request, run_worker
from components.compare import compare
from components.hostlock import HostLock
from components.layout import read_json
from components.onnx_cost import graph_cost
from components.spec import BenchmarkSettings, Target
from optimizers.torch_utils import export_onnx

FAST = BenchmarkSettings(warmup=2, min_runs=20, min_seconds=0.05, compare_rounds=4,
                         compare_seconds=0.02, compare_min_runs=10)  # fmt: skip
AVAILABLE = ort.get_available_providers()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    small = torch.nn.Linear(64, 10)
    layers: list[torch.nn.Module] = [torch.nn.Linear(64, 1024)]
    for _ in range(8):
        layers += [torch.nn.ReLU(), torch.nn.Linear(1024, 1024)]
    big = torch.nn.Sequential(*layers, torch.nn.Linear(1024, 10))  # ~1300x the MACs of small
    export_onnx(small, 64, root / "small.onnx")
    export_onnx(big, 64, root / "big.onnx")
    return {"small": root / "small.onnx", "big": root / "big.onnx"}


def test_a_benchmark_records_samples_memory_work_and_environment(
    models: dict[str, Path], tmp_path: Path
) -> None:
    target = Target(threads=1, batch_sizes=(1, 4))
    record = benchmark(models["small"], None, tmp_path / "b.json", target, FAST)
    assert read_json(tmp_path / "b.json")["batches"].keys() == {"1", "4"}
    one = record["batches"]["1"]
    assert one["runs"] >= 20 and len(one["samples_ms"]) == one["runs"]
    assert one["stop_reason"] == "min_runs and min_seconds"
    assert one["p95_upper_ms"] >= one["p95_ms"] >= one["p50_ms"] > 0
    assert one["session_create_ms"] > 0 and one["first_inference_ms"] > 0
    # the worker's own peak, not the parent's (which holds torch and is far larger)
    assert 10 < one["peak_rss_mb"] < 400
    assert one["cpu_seconds_per_inference"] > 0 and one["macs"] == 640
    assert record["batches"]["4"]["macs"] == 4 * 640
    env = record["environment"]
    assert env["providers_used"] == ["CPUExecutionProvider"] and env["threads"] == 1
    assert env["cpu_flags"] and env["onnxruntime"] == ort.__version__ and env["torch"]
    assert record["energy_source"].startswith(("RAPL", "none: no readable energy counter"))
    if one["limit"] and "min_ms" in one["limit"]:
        assert 0 < one["limit"]["fraction_of_p50"] < 1  # a true lower bound is never beaten


def test_a_slower_candidate_is_reported_slower_with_its_interval(models: dict[str, Path]) -> None:
    result = compare(
        models["big"], models["small"], None, 1, target=Target(threads=1), settings=FAST
    )
    low, high = result["interval"]
    assert result["verdict"] == "slower" and high < 1 and low <= result["speedup"] <= high
    assert result["order"][:4] == ["baseline", "candidate", "candidate", "baseline"]
    assert len(result["medians_ms"]["candidate"]) == FAST.compare_rounds


@pytest.mark.skipif("CUDAExecutionProvider" in AVAILABLE, reason="CUDA is available here")
def test_an_unavailable_provider_fails_instead_of_falling_back(models: dict[str, Path]) -> None:
    target = Target(device="cuda", provider="cuda", threads=1)
    with pytest.raises(
        BenchmarkError,
        match="asked for CUDAExecutionProvider, but ONNX Runtime runs this model on CPUExecutionProvider",
    ):
        run_worker(request(models["small"], None, 1, target, FAST))


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in AVAILABLE,
    reason="needs onnxruntime-gpu and an NVIDIA GPU: CUDAExecutionProvider is not available here",
)
def test_cuda_provider_runs_the_model(models: dict[str, Path], tmp_path: Path) -> None:
    target = Target(device="cuda", provider="cuda", threads=1)
    record = benchmark(models["big"], None, tmp_path / "b.json", target, FAST)
    assert record["environment"]["providers_used"][0] == "CUDAExecutionProvider"


@pytest.mark.skipif(
    "TensorrtExecutionProvider" not in AVAILABLE,
    reason="needs onnxruntime-gpu with TensorRT and an NVIDIA GPU: TensorrtExecutionProvider is not available here",
)
def test_tensorrt_provider_runs_the_model(models: dict[str, Path], tmp_path: Path) -> None:
    target = Target(device="cuda", provider="tensorrt", threads=1)
    record = benchmark(models["big"], None, tmp_path / "b.json", target, FAST)
    assert record["environment"]["providers_used"][0] == "TensorrtExecutionProvider"


def slimgate(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("slimgate")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_bench_command_measures_and_compares(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = slimgate("bench", str(models["small"]), "--against", str(models["big"]),
                      "--seconds", "0.05", "--rounds", "4", "--threads", "1", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "M MACs per example" in result.stdout and "95% interval" in result.stdout
    assert "faster: the whole interval lies above 1" in result.stdout
    assert read_json(out)["comparison"]["verdict"] == "faster"


def test_bench_command_with_a_missing_file(tmp_path: Path) -> None:
    result = slimgate("bench", str(tmp_path / "nope.onnx"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"slimgate: error: {tmp_path / 'nope.onnx'}: file not found"


def test_a_narrow_median_interval_can_end_the_timed_runs_early(models: dict[str, Path]) -> None:
    settings = FAST.model_copy(update={"min_runs": 100, "min_seconds": 20.0, "target_rel_ci": 0.5})
    raw = run_worker(request(models["small"], None, 1, Target(threads=1), settings))
    assert raw["stop_reason"] == "median CI narrow enough" and raw["wall_seconds"] < 20


def test_fused_nodes_are_counted_like_the_nodes_they_replace(
    models: dict[str, Path], tmp_path: Path
) -> None:
    from optimizers.base import OptimizeContext
    from optimizers.graph import GraphOptimization

    fused = tmp_path / "fused.onnx"
    GraphOptimization({"level": "extended"}).run(
        models["big"], fused, OptimizeContext(workdir=tmp_path, threads=1)
    )
    assert {"FusedGemm"} <= {n.op_type for n in onnx.load(str(fused)).graph.node}
    record = benchmark(fused, None, tmp_path / "b.json", Target(threads=1), FAST)
    one = record["batches"]["1"]
    plain = graph_cost(models["big"], 1)
    assert plain.macs > 0 and one["uncounted_nodes"] == []
    assert one["macs"] == record["macs_per_example"] == plain.macs and one["limit"] is not None
    result = slimgate("bench", str(fused), "--seconds", "0.05", "--threads", "1")
    assert result.returncode == 0 and f"{plain.macs / 1e6:.1f} M MACs" in result.stdout


MEASURE = """
import sys
from pathlib import Path
from components.benchmark import benchmark
from components.spec import BenchmarkSettings, Target
settings = BenchmarkSettings(warmup=2, min_runs=20, min_seconds=0.3)
benchmark(Path(sys.argv[1]), None, Path(sys.argv[2]), Target(threads=1), settings)
"""


def test_measurements_started_together_take_turns(models: dict[str, Path], tmp_path: Path) -> None:
    # what an orchestrator does with mapped candidates: start their benchmarks at once, here
    # while the test holds the host so that all three are sure to queue
    lock = HostLock(tmp_path / "host.lock")
    env = {**os.environ, "SLIMGATE_HOST_LOCK": str(lock.path)}
    outs = [tmp_path / f"bench{i}.json" for i in range(3)]
    with lock.exclusive("test"):
        procs = [subprocess.Popen([sys.executable, "-c", MEASURE, str(models["small"]), str(out)],
                                  env=env) for out in outs]  # fmt: skip
        deadline = time.monotonic() + 120
        while lock.waiters() < 3:
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.05)
        released = time.time()
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    holds = sorted((read_json(out)["host_lock"] for out in outs), key=lambda h: h["acquired"])
    assert holds[0]["acquired"] >= released and all(h["waited_s"] > 0 for h in holds)
    for before, after in itertools.pairwise(holds):
        assert before["released"] <= after["acquired"], holds  # never two at once
    for out in outs:
        load = read_json(out)["batches"]["1"]["load"]
        assert load["competing_cores"] is not None and load["wall_s"] > 0


def test_a_measurement_under_competing_load_is_flagged(
    models: dict[str, Path], tmp_path: Path, competing_load: Any
) -> None:
    with competing_load():
        record = benchmark(models["small"], None, tmp_path / "b.json", Target(threads=1),
                           FAST.model_copy(update={"min_seconds": 0.5, "settle_seconds": 0.5}))  # fmt: skip
    load = record["batches"]["1"]["load"]
    assert load["competing_cores"] > FAST.max_competing_cores
    busy = load["competing_cores"] + load["steal_cores"]
    assert record["disturbed"].startswith(f"other processes kept {busy:.2f} cores busy")
    assert "benchmark.max_competing_cores" in record["disturbed"]
    assert read_json(tmp_path / "b.json")["disturbed"] == record["disturbed"]


def test_a_measurement_waits_for_other_processes_to_finish(
    models: dict[str, Path], tmp_path: Path
) -> None:
    # a process that is not slimgate's, busy for 1.5 s: say a task's interpreter starting up
    burn = "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2)]
    record = benchmark(models["small"], None, tmp_path / "b.json", Target(threads=1),
                       FAST.model_copy(update={"settle_seconds": 60}))  # fmt: skip
    assert all(b.wait(timeout=60) == 0 for b in burners)
    settled = record["host_lock"]["settled"]
    assert settled["quiet"] is True and 0.5 <= settled["settle_s"] < 60, settled


def test_waiting_for_quiet_gives_up_at_its_limit(
    models: dict[str, Path], tmp_path: Path, competing_load: Any
) -> None:
    with competing_load():
        record = benchmark(models["small"], None, tmp_path / "b.json", Target(threads=1),
                           FAST.model_copy(update={"settle_seconds": 1.0}))  # fmt: skip
    settled = record["host_lock"]["settled"]
    assert settled["quiet"] is False and settled["settle_s"] >= 1.0
    assert settled["competing_cores"] > FAST.max_competing_cores and record["disturbed"]
