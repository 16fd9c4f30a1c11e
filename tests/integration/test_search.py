"""Recipe search: Optuna over chains and their parameters, goals as constraints, a budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from components.errors import SpecError
from components.layout import RunLayout, read_json
from components.runner import run
from components.search import search
from components.spec import load_spec
from components.testing import write_quick_spec

PRUNE_THEN_INT8 = {
    "name": "prune-int8",
    "steps": [
        {"pruning.structured": {"ratio": {"low": 0.3, "high": 0.8, "step": 0.1}, "fine_tune_epochs": 2}},
        "quantization.dynamic_int8",
    ],
}  # fmt: skip
STUDENT = {
    "name": "student",
    "steps": [{"distillation.student": {"builtin": "tabular_mlp", "width": {"choices": [0.125, 0.25]},
                                        "epochs": 3}}],
}  # fmt: skip


# One fixed recipe (int8) that is too big for the size goal, and a search.
DEFAULTS = {
    "goals": {"size": {"max_ratio": 0.15}, "accuracy": {"max_drop": 0.06}},
    "candidates": [{"name": "int8", "steps": ["quantization.dynamic_int8"]}],
    "search": {"trials": 6, "recipes": [PRUNE_THEN_INT8, STUDENT]},
    "select": "smallest",
}


def write_spec(tmp_path: Path, **changes: Any) -> Path:
    return write_quick_spec(tmp_path, **(DEFAULTS | changes))


def summary(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = read_json(run_dir / "search" / "search.json")
    return data


def test_the_search_meets_a_goal_no_fixed_recipe_meets(tmp_path: Path) -> None:
    result = run(load_spec(write_spec(tmp_path)), tmp_path / "runs", run_id="first")
    verdict = read_json(result.run_dir / "verdict.json")
    fixed = next(c for c in verdict["candidates"] if c["name"] == "int8")
    assert fixed["outcome"] == "fail"  # int8 alone is 0.35 of the baseline's size
    assert result.status == "promoted" and verdict["selected"].startswith("search-")
    found = summary(result.run_dir)
    assert found["distinct"] == 6 and found["stopped_by"] == "trials"
    repeats = [t for t in found["trials"] if t["duplicate_of"]]
    assert len(found["trials"]) == 6 + len(repeats)  # repeats are answered, not counted
    assert found["front"] and set(found["front"]) <= set(found["feasible"])
    by_name = {t["name"]: t for t in found["trials"]}
    for name in found["front"]:  # every front member met every goal, in the gate too
        assert by_name[name]["stage"] == "full" and not by_name[name]["blocked_by"]
        gated = next(c for c in verdict["candidates"] if c["name"] == name)
        assert gated["passed"] and gated["recipe"] == by_name[name]["label"]
    # no member of the front is beaten on every objective by another feasible trial
    objectives = [by_name[n]["objectives"] for n in found["feasible"]]
    for name in found["front"]:
        mine = by_name[name]["objectives"]
        assert not any(
            o["latency_p50_ms"] <= mine["latency_p50_ms"] and o["size_bytes"] <= mine["size_bytes"]
            and o["accuracy"] >= mine["accuracy"] and o != mine
            for o in objectives
        )  # fmt: skip
    # the study is stored with the run
    assert (result.run_dir / "search" / "study.journal").stat().st_size > 0
    html = (result.run_dir / "report.html").read_text()
    assert "Search" in html and verdict["selected"] in html


def test_clear_misses_stop_at_the_cheap_screen(tmp_path: Path) -> None:
    """With an impossible size goal every trial is discarded before the full measurement, and
    the result says which goal blocked each."""
    spec = write_spec(tmp_path, goals={"size": {"max_ratio": 0.01}, "accuracy": {"max_drop": 0.06}},
                      search={"trials": 6, "sampler": "random", "recipes": [PRUNE_THEN_INT8, STUDENT]})  # fmt: skip
    result = run(load_spec(spec), tmp_path / "runs", run_id="tight")
    assert result.status == "rejected"
    found = summary(result.run_dir)
    assert found["front"] == [] and found["feasible"] == []
    assert found["screened_out"] == found["distinct"] == 6
    assert found["blocked_by_goal"]["size"] == 6
    for trial in found["trials"]:
        assert trial["blocked_by"][0].startswith("size: ")
        if trial["duplicate_of"]:
            continue
        cand = RunLayout(result.run_dir).candidate(trial["name"])
        assert (cand.root / "screen.json").is_file()
        assert not cand.comparison.is_file()  # the expensive interleaved comparison never ran
        # the screen's model trained as little as each step allows
        steps = read_json(cand.root / "optimize.json")["steps"]
        if "pruning" in trial["label"]:
            assert "fine_tune_epochs=0" in trial["screen_recipe"]
            assert steps[0]["details"]["fine_tune"]["epochs"] == 0
        else:
            assert "epochs=1" in trial["screen_recipe"]


def test_the_grid_sampler_tries_exactly_the_grid(tmp_path: Path) -> None:
    # list-valued choices too (what to quantize): Optuna stores them as JSON text
    recipe = {"name": "int8", "steps": [{"quantization.dynamic_int8": {
        "per_channel": {"choices": [False, True]}, "op_types": {"choices": [["MatMul"], ["Conv", "MatMul"]]}}}]}  # fmt: skip
    spec = write_spec(tmp_path, search={"trials": 10, "sampler": "grid", "recipes": [recipe]},
                      model={"builtin": "tabular_mlp", "width": 0.5}, candidates=[])  # fmt: skip
    result = run(load_spec(spec), tmp_path / "runs", run_id="grid")
    found = summary(result.run_dir)
    points = {tuple(sorted(t["params"].items())) for t in found["trials"]}
    assert len(points) == 4 == len(found["trials"]) == found["distinct"]
    labels = {t["label"] for t in found["trials"]}
    assert "quantization.dynamic_int8(per_channel=True, op_types=['Conv', 'MatMul'])" in labels


def test_the_wall_clock_budget_stops_the_search(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, search={"trials": 50, "timeout_s": 0.01, "recipes": [STUDENT]})
    result = run(load_spec(spec), tmp_path / "runs", run_id="budget")
    found = summary(result.run_dir)
    assert found["stopped_by"] == "timeout" and 1 <= found["distinct"] < 50


def test_a_search_resumes_its_stored_study_and_a_rerun_reuses_its_trials(tmp_path: Path) -> None:
    small = load_spec(
        write_spec(tmp_path, search={"trials": 3, "recipes": [PRUNE_THEN_INT8, STUDENT]})
    )
    first = run(small, tmp_path / "runs", run_id="first")
    before = [(t["number"], t["label"]) for t in summary(first.run_dir)["trials"]]
    assert summary(first.run_dir)["distinct"] == 3
    # the same run directory, a bigger budget: the stored trials stay, three more are added
    bigger = small.model_copy(update={"search": small.search.model_copy(update={"trials": 6})})  # type: ignore[union-attr]
    search(bigger, first.run_dir)
    after = [(t["number"], t["label"]) for t in summary(first.run_dir)["trials"]]
    assert after[: len(before)] == before and summary(first.run_dir)["distinct"] == 6
    # an unchanged spec in a new run: the seeded sampler proposes the same trials, all cached
    again = run(small, tmp_path / "runs", run_id="again")
    assert [(t["number"], t["label"]) for t in summary(again.run_dir)["trials"]] == before
    for trial in summary(again.run_dir)["trials"]:
        if trial["duplicate_of"]:
            continue  # answered from the first trial of the same recipe: no files of its own
        record = read_json(RunLayout(again.run_dir).candidate(trial["name"]).root / "cache.json")
        assert record["model"]["hit"] is True


@pytest.mark.parametrize(
    ("recipe", "sampler", "message"),
    [
        ({"name": "r", "steps": [{"pruning.structured": {"ratio": {"low": 0.9, "high": 0.2}}}]},
         "tpe", "r.steps[0].pruning.structured.ratio: low 0.9 is above high 0.2"),
        ({"name": "r", "steps": [{"pruning.structured": {"ratoi": {"low": 0.1, "high": 0.2}}}]},
         "tpe", "ratoi"),
        ({"name": "r", "steps": [{"pruning.structured": {"ratio": {"low": 0.1, "hihg": 0.2}}}]},
         "tpe", "r.steps[0].pruning.structured.ratio: expected {choices: [...]} or {low, high"),
        ({"name": "r", "steps": ["quantization.dynamic_int8", {"pruning.structured": {}}]},
         "tpe", "pruning.structured"),
        ({"name": "r", "steps": [{"pruning.structured": {"ratio": {"low": 0.1, "high": 0.5}}}]},
         "grid", "recipes.r: 0.pruning.structured.ratio is a continuous range"),
    ],
)  # fmt: skip
def test_bad_search_specs_name_the_field(
    tmp_path: Path, recipe: dict[str, Any], sampler: str, message: str
) -> None:
    spec = write_spec(tmp_path, search={"sampler": sampler, "recipes": [recipe]})
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    assert message in str(info.value) and "search" in str(info.value)


def test_trials_are_judged_against_the_production_champion_like_the_gate(tmp_path: Path) -> None:
    first = run(load_spec(write_spec(tmp_path)), tmp_path / "runs", run_id="first")
    assert first.status == "promoted"
    goals = {"size": {"max_ratio": 0.15}, "accuracy": {"max_drop": 0.06},
             "champion": {"max_accuracy_drop": 0.1}}  # fmt: skip
    second = run(load_spec(write_spec(tmp_path, goals=goals)), tmp_path / "runs", run_id="second")
    found = summary(second.run_dir)
    # judged without the champion's evidence, every trial would fail first_release: no front
    assert found["front"], found["blocked_by_goal"]
    verdict = read_json(second.run_dir / "verdict.json")
    for name in found["front"]:
        gated = next(c for c in verdict["candidates"] if c["name"] == name)
        assert {g["goal"]: g["outcome"] for g in gated["goals"]}["champion"] == "pass"
