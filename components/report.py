"""The report step: ``report.json`` and a self-contained ``report.html``, whatever the outcome."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from components.layout import ModelDir, RunLayout, read_json, write_json
from components.spec import Spec

__all__ = ["collect", "render_report", "report"]


def _maybe(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def _model_row(name: str, recipe: str, mdir: ModelDir, base_p50: float | None) -> dict[str, Any]:
    metrics = _maybe(mdir.metrics) or {}
    bench = _maybe(mdir.benchmark) or {}
    batches = {
        int(b): {k: v for k, v in r.items() if k != "samples_ms"}
        for b, r in bench.get("batches", {}).items()
    }
    first = batches[min(batches)] if batches else {}
    p50 = first.get("p50_ms")
    error = _maybe(mdir.root / "error.json")
    return {
        "name": name,
        "recipe": recipe,
        "accuracy": metrics.get("accuracy"),
        "agreement": metrics.get("agreement"),
        "size_bytes": metrics.get("size_bytes"),
        "parameters": metrics.get("parameters"),
        "batch": first.get("batch"),
        "p50_ms": p50,
        "p95_ms": first.get("p95_ms"),
        "speedup": (base_p50 / p50) if base_p50 and p50 else None,
        "batches": batches,
        "error": error["error"] if error else None,
    }


def collect(spec: Spec, run_dir: Path) -> dict[str, Any]:
    """Everything the run produced so far, as one JSON-ready dict; missing parts are None."""
    run = RunLayout(run_dir)
    base_bench = _maybe(run.baseline.benchmark) or {}
    batches = base_bench.get("batches", {})
    base_p50 = batches[min(batches, key=int)]["p50_ms"] if batches else None
    baseline = _model_row("baseline", "", run.baseline, base_p50)
    verdict = _maybe(run.verdict)
    outcomes = {c["name"]: c for c in verdict["candidates"]} if verdict else {}
    candidates = []
    for cand in spec.candidate_names():
        row = _model_row(cand.name, cand.label(), run.candidate(cand.name), base_p50)
        judged = outcomes.get(cand.name)
        row["outcome"] = judged["outcome"] if judged else None
        row["goals"] = judged["goals"] if judged else []
        candidates.append(row)
    promotion = _maybe(run.promotion)
    status = "running"
    if promotion:
        status = promotion["status"]
    elif verdict:
        status = "promoting" if verdict["selected"] else "rejected"
    return {
        "run_id": run.run_id,
        "model": spec.name,
        "status": status,
        "dataset": _maybe(run.dataset),
        "environment": base_bench.get("environment"),
        "baseline": baseline,
        "candidates": candidates,
        "verdict": verdict,
        "promotion": promotion,
        "error": (_maybe(run.root / "error.json") or {}).get("error"),
    }


def render_report(spec: Spec, run_dir: Path) -> dict[str, Any]:
    run = RunLayout(run_dir)
    data = collect(spec, run_dir)
    write_json(run.report_json, data)
    run.report_html.write_text(_html(data))
    return data


def report(spec: Spec, run_dir: Path) -> dict[str, Any]:
    """Write ``report.json`` and ``report.html`` into the run directory."""
    return render_report(spec, run_dir)


# --- HTML --------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;width:100%}
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:right}
th:first-child,td:first-child,td.l,th.l{text-align:left}
td:first-child{white-space:nowrap}
.pass{color:#17692b;font-weight:600}.fail{color:#b3261e;font-weight:600}
.inconclusive{color:#a35a00;font-weight:600}.muted{color:#777}
code{background:#f4f4f4;padding:1px 4px}
"""


def _f(value: Any, fmt: str = ".4g", suffix: str = "") -> str:
    if value is None:
        return '<span class="muted">—</span>'
    if isinstance(value, float | int):
        return f"{value:{fmt}}{suffix}"
    return html.escape(str(value))


def _html(d: dict[str, Any]) -> str:
    e = html.escape
    status = d["status"]
    verdict = d.get("verdict") or {}
    promo = d.get("promotion") or {}
    parts = [
        f"<!doctype html><meta charset=utf-8><title>slimgate: {e(d['model'])}</title>",
        f"<style>{_CSS}</style>",
        f"<h1>slimgate run <code>{e(d['run_id'])}</code></h1>",
    ]
    headline = (
        f"<p>Model <b>{e(d['model'])}</b>: "
        f"<b class={e(status) if status != 'promoted' else 'pass'}>{e(status)}</b>"
    )
    if promo.get("version"):
        headline += f" as version {promo['version']} ({e(promo.get('alias', ''))})"
    if verdict.get("reason"):
        headline += f": {e(verdict['reason'])}."
    parts.append(headline)
    if d.get("error"):
        parts.append(f'<p class="fail">Error: {e(d["error"])}</p>')
    parts.append("</p><h2>Models</h2><table><tr><th>model</th><th class=l>recipe</th><th>accuracy</th>"
                 "<th>agreement</th><th>size MB</th><th>parameters</th><th>batch</th>"
                 "<th>p50 ms</th><th>p95 ms</th><th>speedup</th><th>verdict</th></tr>")  # fmt: skip
    for row in [d["baseline"], *d["candidates"]]:
        outcome = row.get("outcome")
        cell = f'<span class="{e(outcome)}">{e(outcome)}</span>' if outcome else ""
        if row.get("error"):
            cell = f'<span class="fail">error</span> {e(row["error"])}'
        size = row["size_bytes"] / 1e6 if row.get("size_bytes") else None
        parts.append(
            f"<tr><td>{e(row['name'])}</td><td class=l>{e(row['recipe'])}</td>"
            f"<td>{_f(row['accuracy'], '.4f')}</td><td>{_f(row['agreement'], '.4f')}</td>"
            f"<td>{_f(size, '.3f')}</td><td>{_f(row['parameters'], ',')}</td>"
            f"<td>{_f(row['batch'])}</td><td>{_f(row['p50_ms'], '.3f')}</td>"
            f"<td>{_f(row['p95_ms'], '.3f')}</td><td>{_f(row['speedup'], '.2f', 'x')}</td>"
            f"<td class=l>{cell}</td></tr>"
        )
    parts.append("</table>")
    parts.append(_scatter([d["baseline"], *d["candidates"]]))
    for row in d["candidates"]:
        if not row["goals"]:
            continue
        parts.append(f"<h3>{e(row['name'])}: <span class={e(row['outcome'])}>"
                     f"{e(row['outcome'])}</span></h3><table><tr><th>goal</th><th>metric</th>"
                     "<th>value</th><th>bound</th><th>confidence</th><th>threshold</th>"
                     "<th>outcome</th><th class=l>reason</th></tr>")  # fmt: skip
        for g in row["goals"]:
            parts.append(
                f"<tr><td>{e(g['goal'])}</td><td class=l>{e(g['metric'])}</td>"
                f"<td>{_f(g['value'])}</td><td>{_f(g['bound'])}</td><td>{_f(g['confidence'])}</td>"
                f"<td>{e(g['comparison'])} {_f(g['threshold'])}</td>"
                f"<td class={e(g['outcome'])}>{e(g['outcome'])}</td><td class=l>{e(g['reason'])}</td></tr>"
            )
        parts.append("</table>")
    env = d.get("environment") or {}
    if env:
        parts.append("<h2>Environment</h2><table>")
        parts += [f"<tr><td>{e(k)}</td><td class=l>{e(str(v))}</td></tr>" for k, v in env.items()]
        parts.append("</table>")
    ds = d.get("dataset") or {}
    if ds:
        parts.append(
            f"<h2>Data</h2><p>{ds['rows']} rows, {ds['n_features']} features, "
            f"{len(ds['classes'])} classes; split {e(str(ds['rows_per_split']))}; "
            f"fingerprint <code>{e(ds['fingerprint'][:16])}</code></p>"
        )
    return "\n".join(parts) + "\n"


def _scatter(rows: list[dict[str, Any]]) -> str:
    """Latency (x) against accuracy (y), one dot per model, as inline SVG."""
    pts = [(r["p50_ms"], r["accuracy"], r["name"], r.get("outcome")) for r in rows
           if r.get("p50_ms") and r.get("accuracy") is not None]  # fmt: skip
    if len(pts) < 2:
        return ""
    w, h, pad, label_room = 800, 300, 50, 160
    xs, ys = [float(p[0]) for p in pts], [float(p[1]) for p in pts]
    x0, x1 = 0.0, max(xs) * 1.1
    y0, y1 = min(ys) - 0.01, min(1.0, max(ys) + 0.005)

    def sx(v: float) -> float:
        return pad + (v - x0) / (x1 - x0) * (w - 2 * pad - label_room)

    def sy(v: float) -> float:
        return h - pad - (v - y0) / ((y1 - y0) or 1) * (h - 2 * pad)

    color = {"pass": "#17692b", "fail": "#b3261e", "inconclusive": "#a35a00"}
    out = [f'<h2>Latency and accuracy</h2><svg width="{w}" height="{h}" '
           f'xmlns="http://www.w3.org/2000/svg" font-size="11">',
           f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad - label_room}" y2="{h - pad}" stroke="#999"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#999"/>',
           f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">p50 latency, ms (batch '
           f'{rows[0].get("batch")})</text>',
           f'<text x="12" y="{h / 2}" transform="rotate(-90 12 {h / 2})" '
           f'text-anchor="middle">accuracy</text>',
           f'<text x="{pad}" y="{h - pad + 14}" text-anchor="middle">0</text>',
           f'<text x="{w - pad - label_room}" y="{h - pad + 14}" text-anchor="middle">{x1:.3g}</text>',
           f'<text x="{pad - 4}" y="{h - pad}" text-anchor="end">{y0:.3f}</text>',
           f'<text x="{pad - 4}" y="{pad + 4}" text-anchor="end">{y1:.3f}</text>']  # fmt: skip
    for i, (x, y, name, outcome) in enumerate(pts):
        fill = color.get(outcome or "", "#1f5fbf")
        # stagger the labels: models of equal accuracy would otherwise print over each other
        lx, ly = sx(x) + 10, sy(y) + 18 + 13 * i
        out.append(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{fill}"/>'
            f'<line x1="{sx(x):.1f}" y1="{sy(y):.1f}" x2="{lx - 2:.1f}" y2="{ly - 4:.1f}" stroke="#bbb"/>'
            f'<text x="{lx:.1f}" y="{ly:.1f}">{html.escape(name)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)
