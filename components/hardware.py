"""What the machine can do: CPU model and flags, a nominal compute peak, memory bandwidth, energy.

The peak is nominal, read from the instruction set the CPU reports (its widest FMA vectors,
two FMA units per core, the reported clock): an upper bound on throughput, so the time it gives
is a lower bound that no kernel beats.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from time import monotonic
from typing import Any

import numpy as np

__all__ = [
    "Cpu",
    "EnergyMeter",
    "LoadMeter",
    "cpu_info",
    "environment",
    "peak_macs_per_second",
    "simd",
]

FMA_UNITS = 2  # nominal: most server cores since Haswell / Zen have two FMA pipes
RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


@dataclass(frozen=True)
class Cpu:
    model: str
    flags: frozenset[str]
    logical_cores: int
    mhz: float | None


@cache
def cpu_info() -> Cpu:
    model, flags, mhz = platform.processor() or platform.machine(), frozenset[str](), None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    speeds = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name":
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
        elif key == "cpu MHz":
            speeds.append(float(value))
    if speeds:
        mhz = max(speeds)
    else:
        max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        if max_freq.is_file():
            mhz = int(max_freq.read_text()) / 1000
    return Cpu(model, flags, os.cpu_count() or 1, mhz)


def simd(flags: frozenset[str]) -> tuple[str, int, bool]:
    """(name, fp32 lanes per FMA, has int8 dot-product instructions) from the CPU flags."""
    vnni = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})
    if "avx512f" in flags:
        return "AVX-512", 16, vnni
    if "avx2" in flags and "fma" in flags:
        return "AVX2+FMA", 8, vnni
    if "avx" in flags:
        return "AVX", 8, vnni
    if "asimd" in flags or "neon" in flags:
        return "NEON", 4, vnni
    return "SSE", 4, vnni


def peak_macs_per_second(cpu: Cpu, threads: int, *, int8: bool) -> tuple[float | None, str]:
    """Nominal peak multiply-accumulates per second on ``threads`` cores, and how it was derived.

    int8 dot-product instructions (VNNI) do four int8 MACs per fp32 lane; without them, int8
    kernels reach about twice the fp32 rate.
    """
    if cpu.mhz is None:
        return None, "the CPU clock is not reported; no peak can be derived"
    name, lanes, vnni = simd(cpu.flags)
    factor = (4 if vnni else 2) if int8 else 1
    cores = min(threads, cpu.logical_cores)
    peak = lanes * FMA_UNITS * factor * cpu.mhz * 1e6 * cores
    kind = "int8" + (" (VNNI)" if vnni else "") if int8 else "fp32"
    how = (
        f"{kind}: {lanes} fp32 lanes ({name}) x {FMA_UNITS} FMA units"
        + (f" x {factor}" if factor > 1 else "")
        + f" x {cpu.mhz:.0f} MHz x {cores} cores"
    )
    return peak, how


class EnergyMeter:
    """Package energy from RAPL where the kernel exposes it; ``available`` says whether it does."""

    def __init__(self) -> None:
        self.available = RAPL.is_file() and os.access(RAPL, os.R_OK)
        self._start = 0

    def start(self) -> None:
        if self.available:
            self._start = int(RAPL.read_text())

    def joules(self) -> float | None:
        if not self.available:
            return None
        return (int(RAPL.read_text()) - self._start) / 1e6


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, steal) clock ticks of all CPUs since boot, from /proc/stat; None where unreadable."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
    except (OSError, ValueError, IndexError):
        return None
    return user + nice + system + irq + softirq, steal


def _own_cpu_seconds() -> float:
    t = os.times()  # this process, and its children once waited for (the benchmark worker)
    return t.user + t.system + t.children_user + t.children_system


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class LoadMeter:
    """What else the machine ran while a measurement ran: the CPU time of every other process.

    The host's busy CPU time (/proc/stat, which a container sees unchanged) less this process's
    and its waited-for children's, per second of wall time: ``competing_cores``, in cores kept
    busy by others. Time the hypervisor gave to other guests (steal) and the 1-minute load
    average before and after are recorded beside it.
    """

    def __enter__(self) -> LoadMeter:
        self._jiffies = _cpu_jiffies()
        self._own = _own_cpu_seconds()
        self._load = _loadavg()
        self._start = monotonic()
        self.result: dict[str, Any] = {}
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(monotonic() - self._start, 1e-9)
        end = _cpu_jiffies()
        own = _own_cpu_seconds() - self._own
        self.result = {"wall_s": round(wall, 4), "own_cpu_s": round(own, 4),
                       "loadavg_1m": [self._load, _loadavg()]}  # fmt: skip
        if self._jiffies is None or end is None:
            self.result.update(competing_cores=None, steal_cores=None,
                               note="/proc/stat is not readable here")  # fmt: skip
            return
        tick = os.sysconf("SC_CLK_TCK")
        busy = (end[0] - self._jiffies[0]) / tick
        steal = (end[1] - self._jiffies[1]) / tick
        # ticks are sampled, so a short window can read a little less than this process used
        self.result.update(competing_cores=round(max(busy - own, 0.0) / wall, 4),
                           steal_cores=round(steal / wall, 4))  # fmt: skip


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(threads: int, provider_requested: str, providers_used: list[str]) -> dict[str, Any]:
    """The fingerprint stored with every measurement."""
    cpu = cpu_info()
    name, _, vnni = simd(cpu.flags)
    return {
        "cpu": cpu.model,
        "cpu_mhz": cpu.mhz,
        "simd": name,
        "int8_dot_product": vnni,
        "cpu_flags": sorted(cpu.flags),
        "logical_cores": cpu.logical_cores,
        "threads": threads,
        "provider_requested": provider_requested,
        "providers_used": providers_used,
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "torch": _version("torch"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
