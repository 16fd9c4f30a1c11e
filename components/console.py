"""What the command line shows: the spinner and step lines of a run, its summary table, the
benchmark table. Rendering only: the steps run through :mod:`components.runner`, the run's
state is read with :func:`components.report.collect`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from components.spec import Spec

__all__ = ["escape", "execute_run", "print_bench", "stderr_console", "summary"]


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


class _StatusHandler(logging.Handler):
    """Shows the latest log line of a step (an epoch's loss, say) next to the spinner."""

    def __init__(self, status: Any) -> None:
        super().__init__(logging.INFO)
        self.status = status
        self.step = ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.name in ("components.search", "components.tuning") and "trial" in message:
            self.status.console.print(f"  [dim]{escape(message)}[/]")  # one line per trial stays
        self.status.update(f"[bold]{self.step}[/] {escape(message)}")


def execute_run(spec: Spec, runs_dir: Path, run_id: str | None, *, resume: bool = False) -> int:
    from components.runner import Phase, run

    console = stderr_console()
    status = console.status("")
    status.start()
    handler = _StatusHandler(status)
    loggers = [logging.getLogger(name) for name in ("components", "optimizers")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    verbose = logging.getLogger().level <= logging.INFO
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = verbose  # without -v, INFO lines only feed the spinner

    def on_step(name: str, phase: Phase, seconds: float | None, error: str | None) -> None:
        if phase == "start":
            handler.step = name
            status.update(f"[bold]{name}[/] ...")
        elif phase == "done":
            console.print(f"[green]✓[/] {name} [dim]{seconds:.1f} s[/]")
        elif phase == "kept":
            console.print(f"[dim]= {name} kept from the interrupted run[/]")
        elif phase == "skipped":
            console.print(f"[dim]- {name} skipped: {escape(error or '')}[/]")
        else:
            console.print(f"[red]✗[/] {name} [dim]{seconds:.1f} s[/]")

    try:
        result = run(spec, runs_dir, run_id=run_id, on_step=on_step, resume=resume)
    finally:
        status.stop()
        for lg, (level, propagate) in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = propagate
    summary(spec, result.run_dir)
    return result.exit_code


def summary(spec: Spec, run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from components.layout import RunLayout
    from components.report import QUALITY_HEADERS, collect, quality_column, speedup_text

    data = collect(spec, run_dir)
    table = Table(title=f"{spec.name}: baseline and candidates", title_justify="left")
    quality = quality_column(data["baseline"])
    for col in (
        "model",
        QUALITY_HEADERS[quality],
        "agreement",
        "size MB",
        "p50 ms",
        "p95 ms",
        "speedup [interval]",
        "verdict",
    ):
        table.add_column(
            col, justify="left" if col in ("model", "verdict") else "right", no_wrap=True
        )

    def fmt(v: Any, spec_: str) -> str:
        return "-" if v is None else format(v, spec_)

    colours = {"pass": "green", "fail": "red", "inconclusive": "yellow", "error": "red"}
    notes = []
    for row in [data["baseline"], *data["candidates"]]:
        verdict = "error" if row.get("error") else row.get("outcome") or ""
        if row.get("error"):
            notes.append(f"{row['name']}: [red]error[/]: {row['error']}")
        for note in row.get("disturbed") or []:
            notes.append(f"{row['name']}: [yellow]disturbed[/] {note} (never cached)")
        for g in row.get("goals", []):
            if g["outcome"] != "pass":
                notes.append(
                    f"{row['name']}: [{colours[g['outcome']]}]{g['goal']}[/] {g['reason']}"
                )
        size = row["size_bytes"] / 1e6 if row.get("size_bytes") else None
        table.add_row(
            row["name"], fmt(row[quality], ".4f"), fmt(row["agreement"], ".4f"),
            fmt(size, ".2f"), fmt(row["p50_ms"], ".3f"), fmt(row["p95_ms"], ".3f"),
            speedup_text(row),
            f"[{colours[verdict]}]{verdict}[/]" if verdict else "",
        )  # fmt: skip
    out = Console(highlight=False, width=max(Console().width, 120))
    out.print(table)
    for note in notes:
        out.print(note)
    found = data.get("search")
    if found:
        blocked = ", ".join(f"{g} {n}" for g, n in sorted(found["blocked_by_goal"].items()))
        out.print(
            f"search: {found['distinct']} distinct trials in {found['seconds']:.0f} s (stopped by the "
            f"{found['stopped_by']} limit), {found['screened_out']} stopped at the screen, "
            f"{len(found['feasible'])} met every goal; front: {', '.join(found['front']) or 'empty'}"
            + (f"; trials blocked per goal: {blocked}" if blocked else "")
        )
    reused = data.get("reused") or {}
    if reused.get("models") or reused.get("measurements"):
        out.print(
            f"reused from the cache: {len(reused['models'])} models, "
            f"{len(reused['measurements'])} measurements (unchanged inputs)"
        )
    promo = data.get("promotion") or {}
    if promo.get("status") == "promoted":
        again = "" if promo.get("created") else " (identical to an existing version)"
        out.print(
            f"[green]promoted[/] {spec.name} version {promo['version']}{again} as "
            f"'{promo['alias']}' in {promo['registry']}"
        )
    elif data["status"] == "rejected":
        out.print(f"[red]rejected[/]: {data['verdict']['reason']}; nothing was promoted")
    out.print(f"report: {RunLayout(run_dir).report_html}")


def print_bench(record: dict[str, Any], comparison: dict[str, Any] | None) -> None:
    from rich.console import Console
    from rich.table import Table

    env = record["environment"]
    out = Console(highlight=False, width=max(Console().width, 120))
    macs = (
        f"{record['macs_per_example'] / 1e6:.1f} M MACs per example"
        if record["macs_per_example"] is not None
        else f"MACs unknown ({len(record['uncounted_nodes'])} nodes whose shapes could not be inferred)"
    )
    out.print(
        f"{record['model']}: {record['size_bytes'] / 1e6:.2f} MB, {record['parameters']:,} parameters, {macs}"
    )
    out.print(
        f"{env['cpu']} ({env['simd']}), {env['threads']} threads, "
        f"{', '.join(env['providers_used'])}, onnxruntime {env['onnxruntime']}"
    )
    table = Table()
    cols = ("batch", "runs", "p50 ms", "p95 ms (bound)", "p99 ms", "throughput/s", "create ms",
            "first ms", "peak RSS MB", "CPU s/inf", "of limit")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="right")
    for batch, r in record["batches"].items():
        limit = (r.get("limit") or {}).get("fraction_of_p50")
        bound = r["p95_upper_ms"]
        table.add_row(
            batch, str(r["runs"]), f"{r['p50_ms']:.3f}",
            f"{r['p95_ms']:.3f} ({'-' if bound is None else f'{bound:.3f}'})", f"{r['p99_ms']:.3f}",
            f"{r['throughput_per_s']:,.0f}", f"{r['session_create_ms']:.1f}",
            f"{r['first_inference_ms']:.2f}", f"{r['peak_rss_mb']:.0f}",
            f"{r['cpu_seconds_per_inference'] * 1e3:.3f} ms", "-" if limit is None else f"{limit:.0%}",
        )  # fmt: skip
    out.print(table)
    out.print(f"energy: {record['energy_source']}")
    if comparison:
        low, high = comparison["interval"]
        interval = (
            "no interval"
            if low is None
            else f"{comparison['confidence']:.0%} interval [{low:.3f}, {high:.3f}]"
        )
        out.print(
            f"against {comparison['baseline']}: {comparison['speedup']:.3f}x ({interval}) over "
            f"{comparison['rounds']} alternating rounds: {comparison['note']}"
        )
    for what, rec in (("benchmark", record), ("comparison", comparison or {})):
        if rec.get("disturbed"):
            out.print(f"[yellow]disturbed[/] {what}: {rec['disturbed']}; measure again when the "
                      "machine is quiet")  # fmt: skip
