from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from components.errors import SpecError
from components.spec import OnnxModel, load_spec, spec_json_schema


def errors_of(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return info.value.lines


def test_the_demo_spec_is_valid(demo_spec: dict[str, Any], write_spec: Any) -> None:
    spec = load_spec(write_spec(demo_spec))
    assert spec.name == "digits-cnn"
    assert spec.candidate_names()[0].name == "int8-dynamic"
    assert [g.name for g in spec.goals.active()] == [
        "latency", "speedup", "size", "accuracy", "agreement"
    ]  # fmt: skip


def test_a_step_may_be_a_key_or_a_key_with_config(
    demo_spec: dict[str, Any], write_spec: Any
) -> None:
    demo_spec["candidates"] = [
        ["quantization.dynamic_int8"],
        [{"quantization.dynamic_int8": {"per_channel": True}}],
    ]
    spec = load_spec(write_spec(demo_spec))
    steps = [c.steps[0] for c in spec.candidates]
    assert steps[0].config == {} and steps[1].config == {"per_channel": True}
    assert [c.name for c in spec.candidate_names()] == ["c0-dynamic-int8", "c1-dynamic-int8"]


def test_unknown_key_names_the_path_and_allowed_fields(
    demo_spec: dict[str, Any], write_spec: Any
) -> None:
    demo_spec["goals"]["latncy"] = demo_spec["goals"].pop("latency")
    (line,) = errors_of(write_spec(demo_spec))
    assert "goals: unknown field 'latncy'" in line
    assert (
        "allowed: accuracy, agreement, champion, error, fidelity, latency, neighbours, per_class, size, speedup"
        in line
    )


def test_wrong_type_names_the_field_and_the_value(
    demo_spec: dict[str, Any], write_spec: Any
) -> None:
    demo_spec["goals"]["latency"]["max_ms"] = "fast"
    (line,) = errors_of(write_spec(demo_spec))
    assert "goals.latency.max_ms" in line and "'fast'" in line and "number" in line


def test_out_of_range_value(demo_spec: dict[str, Any], write_spec: Any) -> None:
    demo_spec["goals"]["accuracy"]["confidence"] = 1.5
    (line,) = errors_of(write_spec(demo_spec))
    assert "goals.accuracy.confidence" in line and "less than 1" in line and "1.5" in line


def test_unknown_optimizer_lists_the_known_ones(demo_spec: dict[str, Any], write_spec: Any) -> None:
    demo_spec["candidates"] = [["quantization.dynamic_int4"]]
    (line,) = errors_of(write_spec(demo_spec))
    assert "candidates[0].steps[0]" in line
    assert "unknown optimizer 'quantization.dynamic_int4'" in line
    assert "quantization.dynamic_int8" in line


def test_bad_optimizer_config_names_the_optimizer_field(
    demo_spec: dict[str, Any], write_spec: Any
) -> None:
    demo_spec["candidates"] = [[{"quantization.dynamic_int8": {"op_types": ["Softmax"]}}]]
    (line,) = errors_of(write_spec(demo_spec))
    assert "candidates[0].steps[0]" in line
    assert "quantization.dynamic_int8: op_types[0]" in line and "'Softmax'" in line


def test_goal_batch_must_be_benchmarked(demo_spec: dict[str, Any], write_spec: Any) -> None:
    demo_spec["goals"]["latency"]["batch"] = 8
    (line,) = errors_of(write_spec(demo_spec))
    assert "goals.latency.batch = 8 is not among target.batch_sizes [1, 32]" in line


def test_no_goal_at_all_is_refused(demo_spec: dict[str, Any], write_spec: Any) -> None:
    demo_spec["goals"] = {}
    (line,) = errors_of(write_spec(demo_spec))
    assert "goals: no goal is set" in line


def test_model_source_needs_exactly_one_kind(demo_spec: dict[str, Any], write_spec: Any) -> None:
    demo_spec["model"] = {"builtin": "digits_cnn", "onnx": "m.onnx"}
    (line,) = errors_of(write_spec(demo_spec))
    assert "model: expected exactly one of 'builtin', 'onnx', 'factory' or 'huggingface'" in line


def test_duplicate_candidate_names(demo_spec: dict[str, Any], write_spec: Any) -> None:
    demo_spec["candidates"] = [
        {"name": "same", "steps": ["quantization.dynamic_int8"]},
        {"name": "same", "steps": [{"quantization.dynamic_int8": {"per_channel": True}}]},
    ]
    (line,) = errors_of(write_spec(demo_spec))
    assert "names ['same'] appear more than once" in line


def test_every_problem_gets_its_own_line(demo_spec: dict[str, Any], write_spec: Any) -> None:
    demo_spec["select"] = "cheapest"
    demo_spec["target"]["threads"] = 0
    lines = errors_of(write_spec(demo_spec))
    assert len(lines) == 2
    assert any("target.threads" in line for line in lines)
    assert any("select" in line and "'fastest', 'smallest' or 'knee'" in line for line in lines)


def test_registry_uri_forms(demo_spec: dict[str, Any], write_spec: Any) -> None:
    demo_spec["registry"] = "s3://my-models/team/"
    assert load_spec(write_spec(demo_spec)).registry_uri() == "s3://my-models/team"
    demo_spec["registry"] = "s3://Bad_Bucket/x"
    (line,) = errors_of(write_spec(demo_spec))
    assert "registry" in line and "'Bad_Bucket' is not a valid S3 bucket name" in line
    demo_spec["registry"] = "gs://elsewhere"
    (line,) = errors_of(write_spec(demo_spec))
    assert "expected s3://BUCKET/PREFIX, mlflow://HOST:PORT (MLflow's Model Registry), " in line
    demo_spec["registry"] = "mlflow://tracking.internal:5000"
    assert load_spec(write_spec(demo_spec)).registry_uri() == "mlflow://tracking.internal:5000"
    demo_spec["tracking"] = {"mlflow": "ftp://x"}
    (line,) = errors_of(write_spec(demo_spec))
    assert "tracking.mlflow" in line and "expected mlflow://HOST:PORT" in line


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmodel: {builtin: digits_cnn\ngoals: {}\n")
    (line,) = errors_of(path)
    assert line.startswith(f"{path}:") and "not valid YAML" in line


def test_missing_spec_file(tmp_path: Path) -> None:
    (line,) = errors_of(tmp_path / "nope.yaml")
    assert "spec file not found" in line


def test_relative_paths_resolve_against_the_spec_file(
    demo_spec: dict[str, Any], write_spec: Any, tmp_path: Path
) -> None:
    demo_spec["model"] = {"onnx": "models/m.onnx"}
    spec = load_spec(write_spec(demo_spec))
    assert isinstance(spec.model, OnnxModel)
    assert spec.resolve(spec.model.onnx) == tmp_path / "models" / "m.onnx"
    assert spec.registry_uri() == f"file://{tmp_path / 'registry'}"


def test_digest_is_stable_and_tracks_content(demo_spec: dict[str, Any], write_spec: Any) -> None:
    a = load_spec(write_spec(demo_spec, "a.yaml")).digest()
    b = load_spec(write_spec(demo_spec, "b.yaml")).digest()
    demo_spec["goals"]["speedup"]["min"] = 1.3
    c = load_spec(write_spec(demo_spec, "c.yaml")).digest()
    assert a == b != c


def test_json_schema_describes_every_optimizer() -> None:
    schema = spec_json_schema()
    json.dumps(schema)  # serializable
    assert set(schema["required"]) >= {"name", "model", "data", "goals"}
    assert {"candidates", "search", "cache"} <= set(schema["properties"])
    step = schema["$defs"]["RecipeStep"]
    assert "quantization.dynamic_int8" in step["anyOf"][0]["enum"]
    assert "per_channel" in json.dumps(step["anyOf"][1]["properties"]["quantization.dynamic_int8"])


def test_provider_must_fit_the_device(demo_spec: dict[str, Any], write_spec: Any) -> None:
    demo_spec["target"]["provider"] = "tensorrt"
    (line,) = errors_of(write_spec(demo_spec))
    assert "target: provider 'tensorrt' does not run on device 'cpu'" in line


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ({"huggingface": "bert", "output": 3}, "model.output"),
        ({"factory": "m:build", "path": 3}, "model.path"),
        ({"onnx": "m.onnx", "output": 3}, "model.output"),
    ],
)
def test_an_error_in_a_model_source_names_the_field_as_written(
    demo_spec: dict[str, Any], write_spec: Any, model: dict[str, Any], field: str
) -> None:
    demo_spec["model"] = model
    (line,) = errors_of(write_spec(demo_spec))
    assert f": {field}: " in line, line


def test_the_init_tool_knows_every_builtin_dataset() -> None:
    import typing

    from components.init import BUILTIN_DATA
    from components.spec import BuiltinData

    assert set(BUILTIN_DATA) == set(typing.get_args(BuiltinData.model_fields["builtin"].annotation))
