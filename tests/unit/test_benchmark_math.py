from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from components.benchmark import disturbance, summarize
from components.hardware import Cpu, LoadMeter, peak_macs_per_second, simd
from components.spec import BenchmarkSettings
from validation.stats import median_interval, ratio_interval


def test_summary_has_percentiles_with_upper_bounds() -> None:
    rng = np.random.default_rng(0)
    out = summarize(list(rng.lognormal(0, 0.3, 2000)), 0.95)
    for p in (50, 90, 95, 99):
        assert out[f"p{p}_upper_ms"] >= out[f"p{p}_ms"]
    low, high = out["median_interval_ms"]
    assert low <= out["p50_ms"] <= high and out["runs"] == 2000


def test_median_interval_covers_the_median_at_its_confidence() -> None:
    rng = np.random.default_rng(1)
    true_median = 1.0  # lognormal(0, s) has median e^0
    hits = []
    for _ in range(400):
        interval = median_interval(rng.lognormal(0, 0.5, 60), 0.9)
        assert interval is not None
        hits.append(interval[0] <= true_median <= interval[1])
    assert 0.86 <= np.mean(hits) <= 0.96


def test_ratio_interval_finds_a_real_speedup() -> None:
    rng = np.random.default_rng(2)
    base = 1.0 * rng.lognormal(0, 0.02, 7)
    cand = 0.5 * rng.lognormal(0, 0.02, 7)
    speedup, low, high = ratio_interval(base, cand, 0.95)
    assert low is not None and high is not None
    assert 1.9 < speedup < 2.1 and 1 < low <= speedup <= high


def test_ratio_interval_of_a_model_against_itself_contains_one() -> None:
    rng = np.random.default_rng(3)
    contains = []
    for _ in range(300):
        _, low, high = ratio_interval(rng.lognormal(0, 0.05, 7), rng.lognormal(0, 0.05, 7), 0.95)
        assert low is not None and high is not None
        contains.append(low <= 1 <= high)
    assert np.mean(contains) >= 0.93


def test_one_disturbed_process_does_not_stretch_the_interval() -> None:
    base = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0]
    cand = [0.5, 0.51, 0.49, 0.5, 0.5, 0.49, 0.9]  # one process ran while something else did
    _, low, _ = ratio_interval(base, cand, 0.95)
    assert low is not None and low > 1.9


def test_too_few_processes_give_no_interval() -> None:
    assert ratio_interval([1.0, 1.0, 1.0], [0.5, 0.5, 0.5], 0.95)[1:] == (None, None)


@pytest.mark.parametrize(
    ("flags", "name", "lanes", "vnni"),
    [
        ({"avx512f", "avx512_vnni", "avx2", "fma"}, "AVX-512", 16, True),
        ({"avx2", "fma"}, "AVX2+FMA", 8, False),
        ({"avx2", "fma", "avx_vnni"}, "AVX2+FMA", 8, True),
        ({"asimd", "asimddp"}, "NEON", 4, True),
        (set(), "SSE", 4, False),
    ],
)
def test_simd_from_flags(flags: set[str], name: str, lanes: int, vnni: bool) -> None:
    assert simd(frozenset(flags)) == (name, lanes, vnni)


def test_nominal_peak_follows_the_instruction_set() -> None:
    cpu = Cpu("test", frozenset({"avx2", "fma"}), logical_cores=8, mhz=2000.0)
    fp32, how = peak_macs_per_second(cpu, threads=2, int8=False)
    assert fp32 == 8 * 2 * 2000e6 * 2 and "AVX2+FMA" in how
    int8, _ = peak_macs_per_second(cpu, threads=2, int8=True)
    assert int8 == 2 * fp32  # no VNNI: about twice the fp32 rate
    assert (
        peak_macs_per_second(cpu, threads=64, int8=False)[0] == 8 * 2 * 2000e6 * 8
    )  # capped at cores
    assert peak_macs_per_second(Cpu("x", frozenset(), 2, None), 2, int8=False)[0] is None


def _load(competing: float | None, wall: float = 1.0, steal: float = 0.0) -> dict[str, Any]:
    return {"competing_cores": competing, "steal_cores": steal, "wall_s": wall}


def test_a_measurement_is_disturbed_only_above_the_limit() -> None:
    settings = BenchmarkSettings(max_competing_cores=0.3)
    assert disturbance([_load(0.3)], settings) is None  # at the limit: kept
    assert disturbance([_load(0.2, steal=0.1)], settings) is None
    note = disturbance([_load(0.3001)], settings)
    assert note == ("other processes kept 0.30 cores busy while it was measured "
                    "(at most 0.3 allowed: benchmark.max_competing_cores)")  # fmt: skip
    assert disturbance([_load(0.2, steal=0.2)], settings) is not None  # other guests count too
    assert disturbance([_load(None)], settings) is None and disturbance([], settings) is None


def test_one_disturbed_round_of_many_is_averaged_by_its_wall_time() -> None:
    settings = BenchmarkSettings(max_competing_cores=0.3)
    rounds = [_load(1.5, wall=0.25)] + [_load(0.0, wall=0.25)] * 13  # one 1.5-core spike
    assert disturbance(rounds, settings) is None  # 0.11 cores over the comparison
    assert disturbance(rounds[:3], settings) is not None  # 0.5 cores over three rounds


def test_the_load_meter_counts_other_processes_cpu_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import components.hardware as hw

    tick = os.sysconf("SC_CLK_TCK")
    jiffies = iter([(1000, 10), (1000 + 3 * tick, 10 + tick // 2)])  # 3 s busy, 0.5 s stolen
    own = iter([5.0, 6.0])  # of which this process and its worker used 1 s
    clock = iter([100.0, 102.0])  # over 2 s of wall time
    monkeypatch.setattr(hw, "_cpu_jiffies", lambda: next(jiffies))
    monkeypatch.setattr(hw, "_own_cpu_seconds", lambda: next(own))
    monkeypatch.setattr(hw, "monotonic", lambda: next(clock))
    monkeypatch.setattr(hw, "_loadavg", lambda: 0.5)
    with LoadMeter() as meter:
        pass
    assert meter.result == {"wall_s": 2.0, "own_cpu_s": 1.0, "loadavg_1m": [0.5, 0.5],
                            "competing_cores": 1.0, "steal_cores": 0.25}  # fmt: skip


def test_an_unreadable_proc_stat_is_said_not_guessed(monkeypatch: pytest.MonkeyPatch) -> None:
    import components.hardware as hw

    monkeypatch.setattr(hw, "_cpu_jiffies", lambda: None)
    with LoadMeter() as meter:
        pass
    assert meter.result["competing_cores"] is None and "not readable" in meter.result["note"]


def test_no_wait_for_quiet_looks_at_nothing() -> None:
    from components.benchmark import settle

    assert settle(BenchmarkSettings(settle_seconds=0)) == {
        "settle_s": 0.0, "quiet": None, "competing_cores": None}  # fmt: skip


def test_an_unreadable_proc_stat_settles_at_once_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import components.hardware as hw
    from components.benchmark import settle

    monkeypatch.setattr(hw, "_cpu_jiffies", lambda: None)
    settled = settle(BenchmarkSettings(settle_seconds=30))
    assert settled["quiet"] is None and settled["settle_s"] < 5
