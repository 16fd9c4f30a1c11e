"""`make bench`: the built-in example end to end (every technique and a chain on the CNN), the
same spec again unchanged (what the content-addressed cache saves), the search example (a size
goal no fixed recipe meets), the tabular example (feature selection and PCA too), every
candidate measured, and how repeatable the measurements are on this machine.

Prints, for the baseline and every candidate: p50, p95 with its upper confidence bound,
throughput at each batch size, size, MACs, the share of the machine's nominal compute peak the
model reaches, and the speedup over the baseline with its interval. Then two repeatability
checks: the same model benchmarked twice in a row (medians within 5%?), and the same model
compared against itself (does the speedup interval contain 1?). Last, what the host's lock
does when an orchestrator starts three candidates' benchmarks at once: the same three
measurements with one shared lock (as slimgate runs them) and with none shared (as they ran
before it), interleaved.

    python benchmarks/run.py            # everything (make bench)
    python benchmarks/run.py overlap    # only the last part
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from components.benchmark import benchmark
from components.cli import demo_spec_path
from components.compare import compare
from components.report import collect, speedup_text
from components.runner import run
from components.spec import Spec, load_spec


def measure(spec_path: Path, root: Path, name: str, console: Console) -> tuple[Spec, Path, float]:
    """Run one spec end to end and print every model's measurements; returns its run dir and
    the run's wall-clock seconds."""
    spec = load_spec(spec_path, {"registry": str(root / "registry" / name)})
    start = time.perf_counter()
    result = run(spec, root / "runs", run_id=name)
    seconds = time.perf_counter() - start
    console.print(f"\n{spec_path.name}: {result.status} in {seconds:.0f} s")
    data = collect(spec, result.run_dir)
    env = data["environment"]
    console.print(f"{env['cpu']} ({env['simd']}, {env['cpu_mhz']:.0f} MHz), "
                  f"{env['threads']} threads, onnxruntime {env['onnxruntime']}")  # fmt: skip
    rows = [data["baseline"], *data["candidates"]]
    batches = sorted({b for r in rows for b in r["batches"]})
    table = Table(title=f"{spec.name}: every model", title_justify="left")
    for col in ("model", "p50 ms", "p95 ms", "p95 bound", *[f"inf/s @{b}" for b in batches],
                "size MB", "params", "M MACs", "of limit", "accuracy", "speedup [95% interval]", "verdict"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("model", "verdict") else "right")
    for r in rows:
        if not r["batches"]:
            table.add_row(r["name"], *["-"] * (10 + len(batches)), "error")
            continue
        first = r["batches"][min(r["batches"])]
        table.add_row(
            r["name"], f"{first['p50_ms']:.3f}", f"{first['p95_ms']:.3f}", f"{first['p95_upper_ms']:.3f}",
            *[f"{r['batches'][b]['throughput_per_s']:,.0f}" for b in batches],
            f"{r['size_bytes'] / 1e6:.2f}", f"{r['parameters']:,}",
            "unknown" if first["macs"] is None else f"{first['macs'] / first['batch'] / 1e6:.1f}",
            "-" if not first["limit"] else f"{first['limit']['fraction_of_p50']:.0%}", f"{r['accuracy']:.4f}", speedup_text(r),
            r.get("outcome") or "",
        )  # fmt: skip
    console.print(table)
    found = data.get("search")
    if found:
        budget = found["budget"]
        console.print(
            f"search: {found['distinct']} distinct trials of a budget of {budget['trials']} "
            f"(timeout {budget['timeout_s']} s) in {found['seconds']:.0f} s, "
            f"{found['screened_out']} stopped at the screen, {len(found['feasible'])} met every "
            f"goal; front: {', '.join(found['front']) or 'empty'}"
        )
    return spec, result.run_dir, seconds


MEASURE = """
import sys
from pathlib import Path
from components.benchmark import benchmark
from components.hostlock import host_lock
from components.spec import BenchmarkSettings, Target
model, data, out, threads, settle = sys.argv[1:]
settings = BenchmarkSettings(settle_seconds=float(settle))
with host_lock().shared():  # as a candidate step holds it
    benchmark(Path(model), Path(data), Path(out), Target(threads=int(threads)), settings)
"""


def overlap(model: Path, split: Path, threads: int, root: Path, console: Console) -> None:
    """Three benchmarks started together, with the host's lock shared (and waiting for quiet),
    and as before both existed (a lock each, no wait), alternating (3 rounds of each); prints
    their latency, the load they saw and the wall time."""
    import os
    import subprocess

    import numpy as np

    def together(shared: bool, round_: int) -> tuple[list[dict[str, Any]], float]:
        outs = [root / f"overlap-{shared}-{round_}-{i}.json" for i in range(3)]
        procs = []
        start = time.perf_counter()
        for i, out in enumerate(outs):
            lock = root / ("host.lock" if shared else f"own-{round_}-{i}.lock")
            env = {**os.environ, "SLIMGATE_HOST_LOCK": str(lock)}
            settle = "10" if shared else "0"  # before: no lock shared and no wait for quiet
            procs.append(subprocess.Popen([sys.executable, "-c", MEASURE, str(model), str(split),
                                           str(out), str(threads), settle], env=env))  # fmt: skip
        assert all(p.wait(timeout=900) == 0 for p in procs)
        records = [json.loads(out.read_text()) for out in outs]
        return records, time.perf_counter() - start

    results: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    walls: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(3):
        for shared in (True, False) if round_ % 2 == 0 else (False, True):
            records, wall = together(shared, round_)
            results[shared] += records
            walls[shared].append(wall)
    table = Table(title=f"three benchmarks started at once ({threads} threads each, "
                  "3 interleaved rounds of each)", title_justify="left")  # fmt: skip
    for col in ("host lock", "p50 ms", "p95 ms", "p99 ms", "others' cores (max)", "disturbed",
                "wall s per round"):  # fmt: skip
        table.add_column(col, justify="left" if col == "host lock" else "right")
    for shared, label in ((False, "none shared, no wait (before)"), (True, "shared (slimgate)")):
        batch = [r["batches"]["1"] for r in results[shared]]
        busy = max(b["load"]["competing_cores"] or 0 for b in batch)
        table.add_row(label, f"{np.median([b['p50_ms'] for b in batch]):.3f}",
                      f"{np.median([b['p95_ms'] for b in batch]):.3f}",
                      f"{np.median([b['p99_ms'] for b in batch]):.3f}", f"{busy:.2f}",
                      f"{sum(r['disturbed'] is not None for r in results[shared])} of {len(batch)}",
                      f"{np.median(walls[shared]):.1f}")  # fmt: skip
    console.print()
    console.print(table)


def main() -> int:
    console = Console(highlight=False, width=190)
    if sys.argv[1:] == ["overlap"]:
        with tempfile.TemporaryDirectory() as tmp:
            spec = load_spec(demo_spec_path())
            run_dir = run(spec.model_copy(update={"candidates": []}), Path(tmp) / "runs").run_dir
            overlap(run_dir / "baseline" / "model.onnx", run_dir / "data" / "test.npz",
                    spec.target.threads, Path(tmp), console)  # fmt: skip
        return 0
    examples = Path(__file__).parents[1] / "examples"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec, run_dir, first = measure(demo_spec_path(), root, "demo", console)
        _, again_dir, again = measure(demo_spec_path(), root, "demo-again", console)
        reused = collect(spec, again_dir)["reused"]
        ratio = again / first
        console.print(f"\nre-run of the unchanged spec: {again:.1f} s against {first:.1f} s, "
                      f"{ratio:.1%} of the first run "
                      + ("(under a fifth)" if ratio < 0.2 else "[red](NOT under a fifth)[/]")
                      + f"; reused {len(reused['models'])} models and "
                      f"{len(reused['measurements'])} measurements")  # fmt: skip
        measure(examples / "digits-search.yaml", root, "search", console)
        measure(examples / "breast-cancer.yaml", root, "tabular", console)

        base = run_dir / "baseline" / "model.onnx"
        split = run_dir / "data" / "test.npz"
        one = spec.target.model_copy(update={"batch_sizes": (1,)})
        a = benchmark(base, split, root / "a.json", one, spec.benchmark)["batches"]["1"]["p50_ms"]
        b = benchmark(base, split, root / "b.json", one, spec.benchmark)["batches"]["1"]["p50_ms"]
        diff = abs(a - b) / min(a, b)
        console.print(f"\nrepeatability: baseline benchmarked twice in a row: p50 {a:.4f} ms and "
                      f"{b:.4f} ms, {diff:.1%} apart: "
                      + ("within 5%" if diff <= 0.05 else "[red]NOT within 5%[/]"))  # fmt: skip
        same = compare(base, base, split, 1, target=one, settings=spec.benchmark)
        low, high = same["interval"]
        contains = low is not None and low <= 1 <= high
        console.print(f"self-comparison: baseline against itself: {same['speedup']:.3f}x, "
                      f"95% interval [{low:.3f}, {high:.3f}]: "
                      + ("contains 1" if contains else "[red]does NOT contain 1[/]"))  # fmt: skip
        overlap(base, split, one.threads, root, console)
    failed = [name for name, ok in (("re-run under a fifth of the first", ratio < 0.2),
                                    ("baseline twice within 5%", diff <= 0.05),
                                    ("self-comparison interval contains 1", contains)) if not ok]  # fmt: skip
    if failed:
        console.print(f"[red]repeatability checks failed[/]: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
