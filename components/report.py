"""The report step: ``report.json`` and a self-contained ``report.html``, whatever the outcome."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from components.layout import ModelDir, RunLayout, read_json, write_json
from components.spec import Spec

__all__ = ["collect", "render_report", "report"]


def _maybe(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def _model_row(name: str, recipe: str, mdir: ModelDir) -> dict[str, Any]:
    metrics = _maybe(mdir.metrics) or {}
    bench = _maybe(mdir.benchmark) or {}
    batches = {
        int(b): {k: v for k, v in r.items() if k != "samples_ms"}
        for b, r in bench.get("batches", {}).items()
    }
    first = batches[min(batches)] if batches else {}
    p50 = first.get("p50_ms")
    error = _maybe(mdir.error)
    comparison = _maybe(mdir.comparison)
    samples = {b: r["samples_ms"] for b, r in bench.get("batches", {}).items()}
    disturbed = [f"{what}: {rec['disturbed']}" for what, rec in
                 (("benchmark", bench), ("comparison", comparison or {})) if rec.get("disturbed")]  # fmt: skip
    return {
        "name": name,
        "recipe": recipe,
        "accuracy": metrics.get("accuracy"),
        "mae": metrics.get("mae"),  # a regression's error, where accuracy would be
        "rmse": metrics.get("rmse"),
        "cosine": metrics.get("cosine"),  # an embedding's, to the baseline's
        "agreement": metrics.get("agreement"),
        "size_bytes": metrics.get("size_bytes"),
        "parameters": metrics.get("parameters"),
        "batch": first.get("batch"),
        "p50_ms": p50,
        "p95_ms": first.get("p95_ms"),
        "p95_upper_ms": first.get("p95_upper_ms"),
        "limit_fraction": (first.get("limit") or {}).get("fraction_of_p50"),
        "speedup": comparison["speedup"]
        if comparison
        else (1.0 if name == "baseline" and p50 else None),
        "speedup_interval": comparison["interval"] if comparison else None,
        "comparison": {k: v for k, v in comparison.items() if k not in ("candidate", "baseline")}
        if comparison
        else None,
        "batches": batches,
        "samples_ms": samples,
        "error": error["error"] if error else None,
        "disturbed": disturbed,
    }


def collect(spec: Spec, run_dir: Path) -> dict[str, Any]:
    """Everything the run produced so far, as one JSON-ready dict; missing parts are None."""
    run = RunLayout(run_dir)
    base_bench = _maybe(run.baseline.benchmark) or {}
    baseline = _model_row("baseline", "", run.baseline)
    verdict = _maybe(run.verdict)
    outcomes = {c["name"]: c for c in verdict["candidates"]} if verdict else {}
    from components.evidence import gated_candidates

    candidates = []
    for cand in gated_candidates(spec, run):
        row = _model_row(cand.name, cand.label(), run.candidate(cand.name))
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
        "search": _maybe(run.search_result),
        "reused": _reused(run, [baseline["name"], *[c["name"] for c in candidates]]),
        "error": (_maybe(run.error) or {}).get("error"),
    }


def _reused(run: RunLayout, names: list[str]) -> dict[str, list[str]]:
    """Which models and measurements this run took from the cache instead of making them."""
    out: dict[str, list[str]] = {"models": [], "measurements": []}
    for name in names:
        mdir = run.baseline if name == "baseline" else run.candidate(name)
        record = _maybe(mdir.cache_record) or {}
        if (record.get("model") or {}).get("hit"):
            out["models"].append(name)
        if (record.get("measurements") or {}).get("hit"):
            out["measurements"].append(name)
    return out


def render_report(spec: Spec, run_dir: Path) -> dict[str, Any]:
    run = RunLayout(run_dir)
    data = collect(spec, run_dir)
    slim = {**data, "baseline": _without_samples(data["baseline"]),
            "candidates": [_without_samples(c) for c in data["candidates"]]}  # fmt: skip
    write_json(run.report_json, slim)
    run.report_html.write_text(_html(data))
    return data


def _without_samples(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "samples_ms"}


QUALITY_HEADERS = {"accuracy": "accuracy", "mae": "MAE", "cosine": "cosine to baseline"}


def quality_column(baseline: dict[str, Any]) -> str:
    """What a model table shows for quality: accuracy, a regression's MAE, or an embedding's
    cosine to the baseline."""
    if baseline.get("accuracy") is not None:
        return "accuracy"
    return "mae" if baseline.get("mae") is not None else "cosine"


def speedup_text(row: dict[str, Any]) -> str:
    """``1.56x [1.41, 1.70]``: the comparison's estimate and interval, or what is known."""
    if row.get("speedup") is None:
        return "-"
    text = f"{row['speedup']:.2f}x"
    low, high = row.get("speedup_interval") or (None, None)
    if low is not None and high is not None:
        text += f" [{low:.2f}, {high:.2f}]"
    return text


def report(spec: Spec, run_dir: Path) -> dict[str, Any]:
    """Write ``report.json`` and ``report.html`` into the run directory, and log the run to
    MLflow tracking where the spec asks for it (``tracking.json`` says how that went)."""
    from components.tracking import track

    data = render_report(spec, run_dir)
    track(spec, run_dir, data)
    return data


# --- HTML --------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1240px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;width:100%}
th,td{border-bottom:1px solid #ddd;padding:4px 8px;text-align:right}
th:first-child,td:first-child,td.l,th.l{text-align:left}
td{white-space:nowrap}td.l{white-space:normal}
table:not(.legend) td:first-child{white-space:normal;overflow-wrap:anywhere;min-width:9em}
.pass{color:#17692b;font-weight:600}.fail{color:#b3261e;font-weight:600}
.inconclusive{color:#a35a00;font-weight:600}.muted{color:#777}
code{background:#f4f4f4;padding:1px 4px}
.wide{overflow-x:auto;max-width:100%}svg{max-width:100%;height:auto}
table.legend{width:auto;font-size:12px}
"""

#: distinct colours for many series (Tableau 10), then the same with dashes
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac")  # fmt: skip
DASHES = ("", "6 3", "2 2", "8 3 2 3")


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
    quality = quality_column(d["baseline"])
    parts.append("</p><h2>Models</h2><table><tr><th>model</th><th class=l>recipe</th>"
                 f"<th>{QUALITY_HEADERS[quality]}</th>"
                 "<th>agreement</th><th>size MB</th><th>parameters</th><th>batch</th>"
                 "<th>p50 ms</th><th>p95 ms (bound)</th><th>speedup [interval]</th>"
                 "<th>of limit</th><th>verdict</th></tr>")  # fmt: skip
    for row in [d["baseline"], *d["candidates"]]:
        outcome = row.get("outcome")
        cell = f'<span class="{e(outcome)}">{e(outcome)}</span>' if outcome else ""
        if row.get("error"):
            cell = f'<span class="fail">error</span> {e(row["error"])}'
        size = row["size_bytes"] / 1e6 if row.get("size_bytes") else None
        parts.append(
            f"<tr><td>{e(row['name'])}</td><td class=l>{e(row['recipe'])}</td>"
            f"<td>{_f(row[quality], '.4f')}</td><td>{_f(row['agreement'], '.4f')}</td>"
            f"<td>{_f(size, '.3f')}</td><td>{_f(row['parameters'], ',')}</td>"
            f"<td>{_f(row['batch'])}</td><td>{_f(row['p50_ms'], '.3f')}</td>"
            f"<td>{_f(row['p95_ms'], '.3f')} ({_f(row['p95_upper_ms'], '.3f')})</td>"
            f"<td>{e(speedup_text(row))}</td><td>{_f(row['limit_fraction'], '.0%')}</td>"
            f"<td class=l>{cell}</td></tr>"
        )
    parts.append("</table>")
    parts.append(
        "<p class=muted>p95 bound: one-sided upper confidence bound on the 95th percentile. "
        "Speedup: baseline over candidate median time, from processes alternating between the "
        "two models, with its interval. Of limit: the time the graph's MACs need at the CPU's "
        "nominal peak, as a share of the measured p50.</p>"
    )
    rows = [d["baseline"], *d["candidates"]]
    disturbed = [(row["name"], note) for row in rows for note in row.get("disturbed") or []]
    if disturbed:
        parts.append(
            '<h3 class="inconclusive">Disturbed measurements</h3><p>Other processes loaded the '
            "machine while these were measured; their timings, and the speed goals decided on "
            "them, are in doubt. They are never stored in the cache: run again on a quiet machine.</p><ul>"
            + "".join(f"<li>{e(name)}: {e(note)}</li>" for name, note in disturbed)
            + "</ul>"
        )
    parts.append(_throughput(rows))
    parts.append(_cdf(rows))
    parts.append(_scatter(rows))
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
    parts.append(_search(d.get("search")))
    reused = d.get("reused") or {}
    if reused.get("models") or reused.get("measurements"):
        parts.append(
            "<h2>Reused</h2><p>From the cache (unchanged inputs, see each model's cache.json): "
            f"models of {e(', '.join(reused['models']) or 'none')}; "
            f"measurements of {e(', '.join(reused['measurements']) or 'none')}.</p>"
        )
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
    page = "\n".join(parts) + "\n"
    # wide tables scroll inside their own box instead of running off a laptop's screen
    return page.replace("<table", '<div class="wide"><table').replace("</table>", "</table></div>")


def _search(found: dict[str, Any] | None) -> str:
    """The search's trials: what each tried, how far it got, what blocked it."""
    if not found:
        return ""
    e = html.escape
    budget = found["budget"]
    limit = f", {budget['timeout_s']:g} s" if budget.get("timeout_s") else ""
    blocked = ", ".join(f"{g} {n}" for g, n in sorted(found["blocked_by_goal"].items())) or "none"
    out = [
        f"<h2>Search</h2><p>{found['distinct']} distinct trials, "
        f"{len(found['trials']) - found['distinct']} repeated proposals answered from the first "
        f"({e(budget['sampler'])}, budget "
        f"{budget['trials']} trials{limit}; stopped by the {e(found['stopped_by'])} limit after "
        f"{found['seconds']:.0f} s): {found['screened_out']} stopped at the cheap screen, "
        f"{len(found['feasible'])} met every goal, Pareto front: "
        f"{e(', '.join(found['front']) or 'empty')}. Trials blocked per goal: {e(blocked)}.</p>",
        "<table><tr><th>trial</th><th class=l>recipe</th><th>stage</th><th>p50 ms</th>"
        "<th>size MB</th><th>accuracy</th><th class=l>blocked by</th></tr>",
    ]
    for t in found["trials"]:
        obj = t["objectives"] or {}
        size = obj["size_bytes"] / 1e6 if obj.get("size_bytes") is not None else None
        mark = " (front)" if t["name"] in found["front"] else ""
        why = t["error"] or "; ".join(t["blocked_by"] or []) or "meets every goal"
        if t["duplicate_of"]:
            why = f"repeats {t['duplicate_of']}"
        out.append(
            f"<tr><td>{e(t['name'])}{mark}</td><td class=l>{e(t['label'] or '')}</td>"
            f"<td>{e(t['stage'] or t['state'])}</td><td>{_f(obj.get('latency_p50_ms'), '.3f')}</td>"
            f"<td>{_f(size, '.3f')}</td><td>{_f(obj.get('accuracy'), '.4f')}</td>"
            f"<td class=l>{e(why)}</td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def _scatter(rows: list[dict[str, Any]]) -> str:
    """Latency (x) against accuracy (y), one numbered dot per model, as inline SVG, and a table
    naming the numbers: labels of models at one spot cannot print over each other."""
    pts = [(r["p50_ms"], r["accuracy"], r["name"], r.get("outcome")) for r in rows
           if r.get("p50_ms") and r.get("accuracy") is not None]  # fmt: skip
    if len(pts) < 2:
        return ""
    w, h, pad = 800, 300, 50
    xs, ys = [float(p[0]) for p in pts], [float(p[1]) for p in pts]
    x0, x1 = 0.0, max(xs) * 1.1
    y0, y1 = min(ys) - 0.01, min(1.0, max(ys) + 0.005)

    def sx(v: float) -> float:
        return pad + (v - x0) / (x1 - x0) * (w - 2 * pad)

    def sy(v: float) -> float:
        return h - pad - (v - y0) / ((y1 - y0) or 1) * (h - 2 * pad)

    color = {"pass": "#17692b", "fail": "#b3261e", "inconclusive": "#a35a00"}
    # the Pareto front: no other model is both faster and more accurate
    front = sorted(
        (p for p in pts if not any(q[0] <= p[0] and q[1] >= p[1] and q[:2] != p[:2] for q in pts)),
        key=lambda p: p[0],
    )
    out = [f'<h2>Latency and accuracy</h2><div class="wide"><svg width="{w}" height="{h}" '
           f'viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg" font-size="11">',
           f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#999"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#999"/>',
           f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">p50 latency, ms (batch '
           f'{rows[0].get("batch")})</text>',
           f'<text x="12" y="{h / 2}" transform="rotate(-90 12 {h / 2})" '
           f'text-anchor="middle">accuracy</text>',
           f'<text x="{pad}" y="{h - pad + 14}" text-anchor="middle">0</text>',
           f'<text x="{w - pad}" y="{h - pad + 14}" text-anchor="middle">{x1:.3g}</text>',
           f'<text x="{pad - 4}" y="{h - pad}" text-anchor="end">{y0:.3f}</text>',
           f'<text x="{pad - 4}" y="{pad + 4}" text-anchor="end">{y1:.3f}</text>']  # fmt: skip
    if len(front) > 1:
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _, _ in front)
        out.append(f'<polyline fill="none" stroke="#888" stroke-dasharray="4 3" points="{line}"/>')
    # models within a few pixels of each other share one label: "2, 5"
    spots: dict[tuple[int, int], list[int]] = {}
    for i, (x, y, _, outcome) in enumerate(pts, start=1):
        fill = color.get(outcome or "", "#1f5fbf")
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{fill}" '
                   f'fill-opacity="0.8"/>')  # fmt: skip
        spots.setdefault((round(sx(x) / 8), round(sy(y) / 8)), []).append(i)
    for (gx, gy), numbers in spots.items():
        text = ", ".join(map(str, numbers))
        # near the right edge the label goes to the left of its point
        left = gx * 8 + 7 + 7 * len(text) > w - 4
        anchor = f'x="{gx * 8 - 7}" text-anchor="end"' if left else f'x="{gx * 8 + 7}"'
        out.append(f'<text {anchor} y="{gy * 8 - 7}" font-weight="600">{text}</text>')
    out.append("</svg></div>")
    out.append('<table class="legend"><tr><th>#</th><th class=l>model</th><th>p50 ms</th>'
               "<th>accuracy</th><th class=l>verdict</th></tr>")  # fmt: skip
    on_front = {p[2] for p in front}
    for i, (x, y, name, outcome) in enumerate(pts, start=1):
        mark = " (Pareto front)" if name in on_front and len(front) > 1 else ""
        out.append(f"<tr><td>{i}</td><td class=l>{html.escape(name)}{mark}</td>"
                   f"<td>{x:.3f}</td><td>{y:.4f}</td>"
                   f'<td class="l {html.escape(outcome or "")}">{html.escape(outcome or "-")}</td></tr>')  # fmt: skip
    out.append("</table>")
    return "\n".join(out)


def _throughput(rows: list[dict[str, Any]]) -> str:
    batches = sorted({b for r in rows for b in r.get("batches", {})})
    if not batches:
        return ""
    best = {b: max((r["batches"][b]["throughput_per_s"] for r in rows if b in r["batches"]), default=1)
            for b in batches}  # fmt: skip
    out = ["<h2>Throughput</h2><table><tr><th>model</th>"]
    out += [f"<th class=l>batch {b}: inferences/s</th>" for b in batches]
    out.append("</tr>")
    for r in rows:
        out.append(f"<tr><td>{html.escape(r['name'])}</td>")
        for b in batches:
            res = r["batches"].get(b)
            if res is None:
                out.append("<td></td>")
                continue
            tp = res["throughput_per_s"]
            width = 200 * tp / best[b]
            out.append(
                f'<td class=l><span style="display:inline-block;width:{width:.0f}px;height:10px;'
                f'background:#1f5fbf"></span> {tp:,.0f}</td>'
            )
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _cdf(rows: list[dict[str, Any]]) -> str:
    """Empirical latency distribution per model at the first batch size, as inline SVG."""
    series = []
    for r in rows:
        samples = r.get("samples_ms") or {}
        if samples:
            first = min(samples, key=int)
            series.append((r["name"], np.sort(np.asarray(samples[first])), first))
    if not series:
        return ""
    pad = 50
    # the legend is as wide as the longest name (about 6.5 px a character at 11 px)
    legend = max(190, 40 + int(6.5 * max(len(name) for name, _, _ in series)))
    w = 610 + legend
    h = max(300, int(pad / 2 + 16 * len(series) + pad))  # room for every legend entry
    hi = max(float(np.percentile(s, 99.5)) for _, s, _ in series) * 1.05
    out = [f'<h2>Latency distribution (batch {series[0][2]})</h2><div class="wide">'
           f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           f'xmlns="http://www.w3.org/2000/svg" font-size="11">',
           f'<line x1="{pad}" y1="{h - pad}" x2="{w - legend}" y2="{h - pad}" stroke="#999"/>',
           f'<line x1="{pad}" y1="{pad / 2}" x2="{pad}" y2="{h - pad}" stroke="#999"/>',
           f'<text x="{(w - legend) / 2}" y="{h - 12}" text-anchor="middle">latency, ms</text>',
           f'<text x="{pad}" y="{h - pad + 14}" text-anchor="middle">0</text>',
           f'<text x="{w - legend}" y="{h - pad + 14}" text-anchor="middle">{hi:.3g}</text>',
           f'<text x="{pad - 4}" y="{pad / 2 + 4}" text-anchor="end">1</text>',
           f'<text x="{pad - 4}" y="{h - pad}" text-anchor="end">0</text>']  # fmt: skip
    for i, (name, s, _) in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        dash = DASHES[(i // len(PALETTE)) % len(DASHES)]
        style = f' stroke-dasharray="{dash}"' if dash else ""
        idx = np.unique(np.linspace(0, s.size - 1, min(s.size, 300)).astype(int))
        pts = " ".join(
            f"{pad + min(s[j], hi) / hi * (w - legend - pad):.1f},"
            f"{h - pad - (j + 1) / s.size * (h - 1.5 * pad):.1f}"
            for j in idx
        )
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5"{style} '
                   f'points="{pts}"/>')  # fmt: skip
        y = pad / 2 + 16 * i
        out.append(f'<line x1="{w - legend + 8}" y1="{y - 3}" x2="{w - legend + 24}" y2="{y - 3}" '
                   f'stroke="{colour}" stroke-width="2.5"{style}/>'
                   f'<text x="{w - legend + 30}" y="{y + 1}">{html.escape(name)}</text>')  # fmt: skip
    out.append("</svg></div>")
    return "\n".join(out)
