"""The gate and promote steps on run directories written by hand: what they decide from the
evidence files, and what they refuse. (The pipeline writes these files in the system tests;
here each decision is pinned down at its boundary, fast enough for mutation testing.)"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from components.errors import AliasRefused, PromotionRefused, Rejected
from components.gate import gate
from components.layout import ModelDir, RunLayout, read_json
from components.promote import promote
from components.records import Promotion, Verdict
from components.registry import open_registry
from components.spec import Spec, load_spec
from components.testing import write_quick_spec

N = 200
LABELS = np.arange(N) % 4


def write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def model_dir(
    mdir: ModelDir,
    *,
    wrong: int,
    size: int,
    content: bytes,
    p50: float = 2.0,
    speedup: float | None = None,
    interval: tuple[float | None, float | None] = (None, None),
) -> None:
    """One model's evidence as the evaluate and benchmark steps write it."""
    mdir.root.mkdir(parents=True, exist_ok=True)
    mdir.model.write_bytes(content)
    preds = LABELS.copy()
    preds[:wrong] = (LABELS[:wrong] + 1) % 4
    np.savez(mdir.predictions, labels=LABELS, predictions=preds, logits=np.eye(4)[preds])
    write(mdir.metrics, {"size_bytes": size, "accuracy": 1 - wrong / N,
                         "sha256": hashlib.sha256(content).hexdigest(),
                         "per_class_accuracy": {"0": 1.0}})  # fmt: skip
    samples = np.full(100, p50).tolist()
    result = {"samples_ms": samples, "p50_ms": p50, "p95_ms": p50, "throughput_per_s": 1e3 / p50}
    write(mdir.benchmark, {"batches": {"1": result},
                           "environment": {"threads": 1}})  # fmt: skip
    if speedup is not None:
        write(mdir.comparison, {"batch": 1, "speedup": speedup, "interval": list(interval),
                                "confidence": 0.95})  # fmt: skip
    write(mdir.optimize_record, {"recipe": "r", "steps": [{"key": "k", "version": 1}]})


def make_run(
    tmp_path: Path, goals: dict[str, Any], candidates: dict[str, dict[str, Any]], **spec: Any
) -> tuple[Spec, Path]:
    """A spec with one candidate per entry of ``candidates`` and a run directory holding the
    baseline (2 examples wrong, 1 MB) and each candidate's evidence."""
    steps = [{"name": n, "steps": ["quantization.dynamic_int8"]} for n in candidates]
    tmp_path.mkdir(parents=True, exist_ok=True)
    loaded = load_spec(write_quick_spec(tmp_path, goals=goals, candidates=steps, **spec))
    run_dir = tmp_path / "runs" / "run-1"
    run = RunLayout(run_dir)
    model_dir(run.baseline, wrong=2, size=1_000_000, content=b"baseline")
    for name, evidence in candidates.items():
        model_dir(run.candidate(name), content=name.encode(), **evidence)
    write(run.dataset, {"fingerprint": "f" * 64, "rows": N, "n_features": 30, "classes": [0, 1, 2, 3],
                        "rows_per_split": {"test": N}})  # fmt: skip
    return loaded, run_dir


FAST = {"wrong": 2, "size": 250_000, "speedup": 2.0, "interval": (1.8, 2.2)}
GOALS = {"size": {"max_ratio": 0.5}, "accuracy": {"max_drop": 0.01, "confidence": None},
         "speedup": {"min": 1.5}}  # fmt: skip


def test_a_candidate_passes_only_when_every_goal_passes(tmp_path: Path) -> None:
    spec, run_dir = make_run(tmp_path, GOALS, {
        "good": FAST,
        "at-the-limits": {**FAST, "wrong": 4, "size": 500_000, "interval": (1.5, 2.2)},
        "too-big": {**FAST, "size": 500_001},
        "too-wrong": {**FAST, "wrong": 5},
        "noisy": {**FAST, "interval": (1.4, 2.2)},
        "slow": {**FAST, "speedup": 1.4, "interval": (1.3, 1.5)},
    })  # fmt: skip
    verdict = gate(spec, run_dir)
    outcomes = {c.name: c.outcome for c in verdict.candidates}
    assert outcomes == {"good": "pass", "at-the-limits": "pass", "too-big": "fail",
                        "too-wrong": "fail", "noisy": "inconclusive", "slow": "fail"}  # fmt: skip
    assert {c.name for c in verdict.candidates if c.passed} == {"good", "at-the-limits"}
    entry = verdict.entry("good")
    assert entry is not None
    assert (entry.size_bytes, entry.accuracy, entry.latency_p50_ms, entry.speedup) == (
        250_000,
        0.99,
        2.0,
        2.0,
    )
    assert entry.sha256 == hashlib.sha256(b"good").hexdigest()
    assert [g.goal for g in entry.goals] == ["speedup", "size", "accuracy"]
    assert Verdict.read(RunLayout(run_dir).verdict) == verdict
    assert verdict.goals == spec.goals.model_dump(exclude_none=True)
    assert verdict.champion is None


def test_the_fastest_passing_candidate_is_selected_ties_by_name(tmp_path: Path) -> None:
    spec, run_dir = make_run(tmp_path, GOALS, {
        "b-fast": {**FAST, "speedup": 3.0, "interval": (2.5, 3.5)},
        "a-fast": {**FAST, "speedup": 3.0, "interval": (2.5, 3.5)},
        "c-faster-but-fails": {**FAST, "speedup": 4.0, "interval": (3.5, 4.5), "wrong": 9},
        "d-slower": FAST,
    })  # fmt: skip
    verdict = gate(spec, run_dir)
    assert verdict.selected == "a-fast"
    assert verdict.reason.startswith("3 of 4 candidates met every goal; a-fast is the fastest")


def test_the_smallest_policy_and_none_passing(tmp_path: Path) -> None:
    spec, run_dir = make_run(tmp_path, GOALS, {
        "big": FAST, "small": {**FAST, "size": 100_000}, "tiny-wrong": {**FAST, "size": 1, "wrong": 9},
    }, select="smallest")  # fmt: skip
    assert gate(spec, run_dir).selected == "small"
    spec, run_dir = make_run(tmp_path / "none", GOALS, {"wrong": {**FAST, "wrong": 9}})
    verdict = gate(spec, run_dir)
    assert verdict.selected is None
    assert verdict.reason == "none of 1 candidates met every goal"


def test_a_failed_step_or_missing_files_fail_the_candidate(tmp_path: Path) -> None:
    spec, run_dir = make_run(tmp_path, GOALS, {"crashed": FAST, "gone": FAST, "fine": FAST})
    run = RunLayout(run_dir)
    write(run.candidate("crashed").error, {"error": "boom", "type": "RuntimeError"})
    (run.candidate("gone").predictions).unlink()
    verdict = gate(spec, run_dir)
    crashed, gone = verdict.entry("crashed"), verdict.entry("gone")
    assert crashed is not None and gone is not None
    assert (crashed.outcome, crashed.passed, crashed.error) == ("fail", False, "boom")
    assert (gone.outcome, gone.passed) == ("fail", False)
    assert verdict.selected == "fine"


def test_a_candidate_without_metrics_benchmark_or_comparison_fails_without_a_crash(
    tmp_path: Path,
) -> None:
    spec, run_dir = make_run(tmp_path, GOALS, {"no-metrics": FAST, "no-bench": FAST, "ok": FAST})
    run = RunLayout(run_dir)
    run.candidate("no-metrics").metrics.unlink()
    run.candidate("no-bench").benchmark.unlink()
    run.candidate("no-bench").comparison.unlink()
    verdict = gate(spec, run_dir)
    no_metrics, no_bench = verdict.entry("no-metrics"), verdict.entry("no-bench")
    assert no_metrics is not None and no_bench is not None
    assert (no_metrics.sha256, no_metrics.size_bytes, no_metrics.outcome) == (None, None, "fail")
    assert (no_bench.latency_p50_ms, no_bench.speedup, no_bench.outcome) == (None, None, "fail")
    assert verdict.selected == "ok"


def test_a_passing_candidate_without_a_checksum_is_never_selected(tmp_path: Path) -> None:
    spec, run_dir = make_run(tmp_path, GOALS, {"a": FAST, "b": FAST})
    metrics = RunLayout(run_dir).candidate("a").metrics
    write(metrics, {**read_json(metrics), "sha256": None})
    verdict = gate(spec, run_dir)
    assert verdict.entry("a").passed  # type: ignore[union-attr]
    assert verdict.selected == "b"
    assert verdict.reason.startswith("1 of 2 candidates met every goal")


def test_a_failed_search_is_named_in_the_reason(tmp_path: Path) -> None:
    spec, run_dir = make_run(tmp_path, GOALS, {"a": FAST})
    write(RunLayout(run_dir).step_error("search"), {"error": "study lost", "type": "E"})
    assert gate(spec, run_dir).reason == (
        "1 of 1 candidates met every goal; a is the fastest (speedup 2x) "
        "(the search failed and added none: study lost)"
    )


def test_the_champion_goal_reads_the_champion_step_record(tmp_path: Path) -> None:
    goals = {"champion": {"max_accuracy_drop": 0.0, "confidence": None}}
    spec, run_dir = make_run(tmp_path, goals, {"a": FAST})
    run = RunLayout(run_dir)
    verdict = gate(spec, run_dir)  # no record: the champion step did not run
    assert verdict.entry("a").outcome == "fail"  # type: ignore[union-attr]
    assert "champion step did not run" in verdict.entry("a").goals[0].reason  # type: ignore[union-attr]
    write(run.champion_record, {"version": None})  # no production model yet
    assert gate(spec, run_dir).entry("a").outcome == "fail"  # type: ignore[union-attr]
    write(run.champion_record, {"version": 3, "serial": 5})
    model_dir(run.champion, wrong=2, size=1, content=b"champion")
    verdict = gate(spec, run_dir)
    assert (verdict.champion, verdict.selected) == (3, "a")
    model_dir(run.champion, wrong=1, size=1, content=b"champion")
    assert gate(spec, run_dir).selected is None


# --- promote -----------------------------------------------------------------------------------


def gated(tmp_path: Path, **candidates: dict[str, Any]) -> tuple[Spec, Path]:
    spec, run_dir = make_run(tmp_path, GOALS, candidates or {"good": FAST})
    gate(spec, run_dir)
    return spec, run_dir


def registry_versions(spec: Spec) -> list[int]:
    return open_registry(spec.registry_uri()).versions(spec.name)


def test_promote_publishes_the_selected_candidate_and_moves_production(tmp_path: Path) -> None:
    spec, run_dir = gated(tmp_path)
    result = promote(spec, run_dir, expect="good")
    assert (result.status, result.version, result.created, result.alias, result.candidate) == (
        "promoted",
        1,
        True,
        "production",
        "good",
    )
    assert result.previous is None
    assert Promotion.read(RunLayout(run_dir).promotion) == result
    reg = open_registry(spec.registry_uri())
    pointer = reg.pointer(spec.name, "production")
    assert pointer is not None and pointer.version == 1
    card = reg.card(spec.name, 1)
    assert card["candidate"] == "good" and card["verdict"]["outcome"] == "pass"
    # the card keeps the figures, not the per-class table or the raw timings
    assert card["metrics"]["size_bytes"] == 250_000 and "per_class_accuracy" not in card["metrics"]
    assert card["baseline_metrics"]["size_bytes"] == 1_000_000
    assert "per_class_accuracy" not in card["baseline_metrics"]
    assert card["benchmark"]["1"] == {"p50_ms": 2.0, "p95_ms": 2.0, "throughput_per_s": 500.0}
    assert card["lineage"]["parent_model_sha256"] == hashlib.sha256(b"baseline").hexdigest()
    assert card["lineage"]["data_fingerprint"] == "f" * 64
    # the same bytes again are the same version; production stays where it is
    again = promote(spec, run_dir)
    assert (again.status, again.version, again.created) == ("promoted", 1, False)
    assert reg.pointer(spec.name, "production") == pointer
    assert reg.versions(spec.name) == [1]


def test_a_verdict_that_selects_nothing_is_a_rejection(tmp_path: Path) -> None:
    spec, run_dir = gated(tmp_path, bad={**FAST, "wrong": 9})
    with pytest.raises(Rejected, match="none of 1 candidates met every goal"):
        promote(spec, run_dir)
    assert Promotion.read(RunLayout(run_dir).promotion).status == "rejected"
    assert registry_versions(spec) == []


def refused(spec: Spec, run_dir: Path, match: str, expect: str | None = None) -> None:
    with pytest.raises(PromotionRefused, match=match):
        promote(spec, run_dir, expect=expect)
    record = Promotion.read(RunLayout(run_dir).promotion)
    assert record.status == "refused" and record.reason is not None
    assert registry_versions(spec) == []


def edit_verdict(run_dir: Path, **entry: Any) -> None:
    path = RunLayout(run_dir).verdict
    data = read_json(path)
    data["candidates"][0].update(entry)
    write(path, data)


def test_promote_refuses_without_a_verdict_or_with_a_broken_one(tmp_path: Path) -> None:
    spec, run_dir = make_run(tmp_path, GOALS, {"good": FAST})
    refused(spec, run_dir, "the gate step has not run")
    write(RunLayout(run_dir).verdict, {"selected": "good"})
    refused(spec, run_dir, "is not a verdict the gate wrote")


def test_promote_refuses_a_selection_other_than_the_gate_handed_on(tmp_path: Path) -> None:
    spec, run_dir = gated(tmp_path)
    verdict = RunLayout(run_dir).verdict
    refused(spec, run_dir, f"the gate selected 'other', but {verdict} now selects 'good'",
            expect="other")  # fmt: skip
    refused(spec, run_dir, f"the gate selected 'no candidate', but {verdict} now selects 'good'",
            expect="")  # fmt: skip


def test_promote_refuses_an_entry_that_did_not_pass_every_goal(tmp_path: Path) -> None:
    spec, run_dir = gated(tmp_path)
    edit_verdict(run_dir, passed=False)
    refused(spec, run_dir, r"good did not pass every goal \(not passed: all\)")
    spec, run_dir = gated(tmp_path / "2")
    data = read_json(RunLayout(run_dir).verdict)
    goals = data["candidates"][0]["goals"]
    goals[1]["outcome"] = "inconclusive"
    edit_verdict(run_dir, goals=goals)
    refused(spec, run_dir, r"not passed: \['size'\]")
    edit_verdict(run_dir, goals=[])
    refused(spec, run_dir, "did not pass every goal")
    spec, run_dir = gated(tmp_path / "3")
    edit_verdict(run_dir, name="renamed")
    refused(spec, run_dir, "has no entry for it")


def test_promote_refuses_a_verdict_on_other_goals_or_a_changed_model(tmp_path: Path) -> None:
    spec, run_dir = gated(tmp_path)
    looser = spec.model_copy(update={"goals": spec.goals.model_copy(update={"size": None})})
    refused(looser, run_dir, "reached on other goals than this spec's")
    RunLayout(run_dir).candidate("good").model.write_bytes(b"tampered")
    refused(spec, run_dir, "is missing or changed since the gate judged it")
    RunLayout(run_dir).candidate("good").model.unlink()
    refused(spec, run_dir, "is missing or changed since the gate judged it")


def test_a_promotion_judged_before_a_rollback_is_refused_and_kept(tmp_path: Path) -> None:
    spec, run_dir = gated(tmp_path)
    reg = open_registry(spec.registry_uri())
    for content in (b"v1", b"v2"):
        src = tmp_path / "m.onnx"
        src.write_bytes(content)
        published = reg.publish(spec.name, {"model.onnx": src}, {"model": spec.name}, run_id="x")
        reg.move_alias(spec.name, published.version, reason="earlier")
    pointer = reg.pointer(spec.name, "production")
    assert pointer is not None
    write(RunLayout(run_dir).champion_record, {"version": 2, "serial": pointer.serial})
    reg.rollback(spec.name, reason="bad release")
    with pytest.raises(AliasRefused, match="rolled back"):
        promote(spec, run_dir)
    record = Promotion.read(RunLayout(run_dir).promotion)
    assert (record.status, record.version) == ("refused", 3)
    assert registry_versions(spec) == [1, 2, 3]
    after = reg.pointer(spec.name, "production")
    assert after is not None and after.version == 1


def publish_and_move(spec: Spec, tmp_path: Path, content: bytes) -> int:
    reg = open_registry(spec.registry_uri())
    src = tmp_path / "m.onnx"
    src.write_bytes(content)
    published = reg.publish(spec.name, {"model.onnx": src}, {"model": spec.name}, run_id="x")
    return reg.move_alias(spec.name, published.version, reason="earlier").serial


def test_a_run_that_looked_after_the_rollback_is_promoted(tmp_path: Path) -> None:
    spec, run_dir = gated(tmp_path)
    publish_and_move(spec, tmp_path, b"v1")
    publish_and_move(spec, tmp_path, b"v2")
    reg = open_registry(spec.registry_uri())
    after = reg.rollback(spec.name, reason="bad release")
    assert after.version == 1
    # without a champion step, the run looks at production when promote starts: after it
    assert promote(spec, run_dir).version == 3
    # a champion step that read production after the rollback: its serial is the one compared
    spec2, run2 = make_run(tmp_path / "second", GOALS, {"good2": FAST},
                           registry=str(tmp_path / "registry"))  # fmt: skip
    gate(spec2, run2)
    pointer = reg.pointer(spec.name)
    assert pointer is not None
    write(RunLayout(run2).champion_record, {"version": pointer.version, "serial": pointer.serial})
    assert promote(spec2, run2).version == 4


def test_a_refused_run_whose_model_was_already_a_version_says_so(tmp_path: Path) -> None:
    spec, run_dir = gated(tmp_path)
    assert promote(spec, run_dir).version == 1
    publish_and_move(spec, tmp_path, b"v2")  # production moved on to version 2
    with pytest.raises(AliasRefused, match=r"^cancer version 1 was published but production did "
                                           r"not move: .*\(this run's model was already version 1\)$"):  # fmt: skip
        promote(spec, run_dir)
    record = Promotion.read(RunLayout(run_dir).promotion)
    assert (record.status, record.version, record.created) == ("refused", 1, False)


# --- the report of such a run ---------------------------------------------------------------


def test_the_report_shows_every_candidate_in_tables_that_scroll_and_plots_that_do_not_collide(
    tmp_path: Path,
) -> None:
    import re
    from html.parser import HTMLParser

    from components.report import render_report

    candidates = {f"cand-{i:02d}": {**FAST, "wrong": 2 + i % 3, "interval": (1.6, 2.4)}
                  for i in range(13)}  # fmt: skip
    spec, run_dir = make_run(tmp_path, GOALS, candidates)
    gate(spec, run_dir)
    render_report(spec, run_dir)
    page = RunLayout(run_dir).report_html.read_text()

    class Structure(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []
            self.tables_outside_a_scroll_box = 0
            self.polylines: list[tuple[str, str]] = []
            self.cells: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "table" and not (self.stack and self.stack[-1] == "div.wide"):
                self.tables_outside_a_scroll_box += 1
            if tag == "polyline" and a.get("stroke") != "#888":  # the Pareto front's line
                self.polylines.append((str(a.get("stroke")), str(a.get("stroke-dasharray", ""))))
            if tag not in ("meta", "circle", "line", "rect", "polyline", "br"):
                self.stack.append(f"{tag}.{a.get('class')}" if a.get("class") else tag)

        def handle_endtag(self, tag: str) -> None:
            while self.stack and self.stack.pop().split(".")[0] != tag:
                pass

        def handle_data(self, data: str) -> None:
            self.cells.append(data.strip())

    found = Structure()
    found.feed(page)
    assert found.tables_outside_a_scroll_box == 0
    # the latency CDF: the baseline and 13 candidates, each line told apart by colour or dash
    assert len(found.polylines) == 14 and len(set(found.polylines)) == 14
    # every candidate is named in the Models table and in the scatter plot's legend
    for name in candidates:
        assert found.cells.count(name) >= 2, name
    # the scatter plot numbers its points; models at one spot share one label
    svg = page[page.index("<h2>Latency and accuracy</h2>") :]
    labels = re.findall(r'font-weight="600">([\d, ]+)</text>', svg)
    numbers = sorted(int(n) for label in labels for n in label.split(", "))
    assert numbers == list(range(1, 15))
    assert any("," in label for label in labels)  # equal latency and accuracy: one spot
