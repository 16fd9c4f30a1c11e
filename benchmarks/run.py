"""`make bench`: the built-in example end to end (every technique and a chain on the CNN), the
same spec again unchanged (what the content-addressed cache saves), the search example (a size
goal no fixed recipe meets), the tabular example (feature selection and PCA too), every
candidate measured, and how repeatable the measurements are on this machine.

Prints, for the baseline and every candidate: p50, p95 with its upper confidence bound,
throughput at each batch size, size, MACs, the share of the machine's nominal compute peak the
model reaches, and the speedup over the baseline with its interval. Then two repeatability
checks: the same model benchmarked twice in a row (medians within 5%?), and the same model
compared against itself (does the speedup interval contain 1?).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

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


def main() -> int:
    console = Console(highlight=False, width=190)
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
    failed = [name for name, ok in (("re-run under a fifth of the first", ratio < 0.2),
                                    ("baseline twice within 5%", diff <= 0.05),
                                    ("self-comparison interval contains 1", contains)) if not ok]  # fmt: skip
    if failed:
        console.print(f"[red]repeatability checks failed[/]: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
