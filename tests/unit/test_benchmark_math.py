from __future__ import annotations

import numpy as np
import pytest

from components.benchmark import summarize
from components.hardware import Cpu, peak_macs_per_second, simd
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
