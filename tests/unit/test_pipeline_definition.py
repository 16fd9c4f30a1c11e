"""The pipeline definition: its order, its conditions, its failure semantics and its evidence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components.evidence import champion_evidence
from components.layout import RunLayout
from components.pipeline import STEPS, Failure, StepRecord, Trace, run_step, step, step_arguments
from components.spec import load_spec
from components.testing import write_quick_spec
from validation.goals import ChampionGoal, Evidence, NoEvidence, Outcome


def test_the_steps_in_order_with_their_semantics() -> None:
    assert [s.name for s in STEPS] == ["prepare_data", "baseline", "champion", "candidate",
                                       "search", "gate", "promote", "report"]  # fmt: skip
    assert [s.name for s in STEPS if s.on_failure is Failure.CONTINUE] == ["candidate", "search"]
    assert [s.name for s in STEPS if s.always] == ["report"]
    assert [s.name for s in STEPS if s.when is not None] == ["champion", "search"]
    assert step("candidate").fan_out == "prepare_data"
    assert step("promote").inputs == (("expect", "gate"),)


def test_an_unknown_step_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown step 'pubilsh'; steps: prepare_data, baseline"):
        step("pubilsh")


def test_a_step_whose_condition_is_false_is_recorded_as_skipped(tmp_path: Path) -> None:
    spec = load_spec(write_quick_spec(tmp_path))  # no champion goal, no search
    for name, reason in (("champion", "the spec has no champion goal"),
                         ("search", "the spec has no search")):  # fmt: skip
        record, result = run_step(name, spec, tmp_path / "run")
        assert (record.status, record.reason, result) == ("skipped", reason, None)
        assert StepRecord.read(RunLayout(tmp_path / "run").step_record(name)) == record
    assert not RunLayout(tmp_path / "run").champion_record.exists()


def test_a_continue_failure_is_recorded_and_a_stop_failure_raised(tmp_path: Path) -> None:
    spec = load_spec(write_quick_spec(tmp_path))
    run = RunLayout(tmp_path / "run")
    # no data was prepared: the candidate cannot be built, the baseline cannot be trained
    record, result = run_step("candidate", spec, run.root, item="int8")
    assert record.status == "failed" and result is None
    assert run.candidate("int8").error.is_file()
    with pytest.raises(Exception, match=r"dataset\.json|No such file"):
        run_step("baseline", spec, run.root)
    assert StepRecord.read(run.step_record("baseline")).status == "failed"
    assert Trace.read(run.root).sequence() == [("candidate", "failed"), ("baseline", "failed")]


def test_a_fan_out_step_needs_its_item(tmp_path: Path) -> None:
    spec = load_spec(write_quick_spec(tmp_path))
    with pytest.raises(ValueError, match="runs once per candidate"):
        run_step("candidate", spec, tmp_path / "run")


def test_step_arguments_are_the_command_line_of_slimgate_step() -> None:
    assert step_arguments("candidate", "s.yaml", "runs", "r1", item="c0",
                          outputs={"model": "m.onnx"}) == [
        "candidate", "--spec", "s.yaml", "--runs-dir", "runs", "--run-id", "r1",
        "--candidate", "c0", "--model-out", "m.onnx"]  # fmt: skip
    assert step_arguments("promote", "s", "d", "r", inputs={"expect": "c0"})[-2:] == [
        "--expect",
        "c0",
    ]
    with pytest.raises(ValueError, match="step gate has no output 'html'"):
        step_arguments("gate", "s", "d", "r", outputs={"html": "x"})


def test_a_missing_champion_record_is_no_evidence_never_no_champion(tmp_path: Path) -> None:
    goals = {"accuracy": {"max_drop": 0.1}, "champion": {"first_release": "pass"}}
    spec = load_spec(write_quick_spec(tmp_path, goals=goals))
    run = RunLayout(tmp_path / "run")
    champion = champion_evidence(spec, run)
    assert isinstance(champion, NoEvidence) and "the champion step did not run" in champion.reason
    labels = np.array([0, 1, 1, 0])
    ev = Evidence(accuracy=1.0, labels=labels, predictions=labels)
    result = ChampionGoal(first_release="pass").check(ev, ev, champion)
    assert result.outcome is Outcome.FAIL
    assert result.reason.startswith("no evidence for goal champion: ")
    # without a champion goal nothing is looked up
    assert champion_evidence(load_spec(write_quick_spec(tmp_path)), run) is None
