from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from components.errors import SpecError
from components.spec import load_spec
from optimizers import registry
from optimizers.base import OptimizeContext, OptimizerConfig, TorchOptimizer
from optimizers.quantization import DynamicInt8Quantization


class _IdentityConfig(OptimizerConfig):
    pass


class _Identity(TorchOptimizer[_IdentityConfig]):
    key: ClassVar[str] = "test.identity"
    config_class: ClassVar[type[OptimizerConfig]] = _IdentityConfig
    description: ClassVar[str] = "returns the module unchanged"

    def _apply(self, model: Any, ctx: OptimizeContext) -> tuple[Any, dict[str, Any]]:
        return model, {}


@pytest.fixture
def identity() -> Iterator[type[_Identity]]:
    registry.register(_Identity)
    yield _Identity
    registry.unregister(_Identity.key)


def test_builtin_is_registered_under_its_stable_key() -> None:
    assert registry.get("quantization.dynamic_int8") is DynamicInt8Quantization
    assert "quantization.dynamic_int8" in registry.available()


def test_unknown_key_lists_the_known_keys() -> None:
    with pytest.raises(
        registry.OptimizerRegistryError,
        match=r"unknown optimizer 'nope\.x'; known optimizers: .*quantization\.dynamic_int8",
    ):
        registry.get("nope.x")


def test_a_duplicate_key_raises() -> None:
    class Impostor(DynamicInt8Quantization):
        pass

    with pytest.raises(registry.OptimizerRegistryError, match="already registered"):
        registry.register(Impostor)


def test_a_malformed_key_raises() -> None:
    class Bad(_Identity):
        key: ClassVar[str] = "NoNamespace"

    with pytest.raises(registry.OptimizerRegistryError, match="namespaced lowercase key"):
        registry.register(Bad)


def test_torch_steps_must_come_before_onnx_steps(
    identity: type[_Identity], demo_spec: dict[str, Any], write_spec: Any
) -> None:
    demo_spec["candidates"] = [["quantization.dynamic_int8", "test.identity"]]
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(demo_spec))
    (line,) = info.value.lines
    assert "candidates[0]" in line
    assert (
        "'test.identity' works on the PyTorch model but comes after 'quantization.dynamic_int8'"
        in line
    )


def test_torch_steps_are_refused_for_an_onnx_model(
    identity: type[_Identity], demo_spec: dict[str, Any], write_spec: Any
) -> None:
    demo_spec["model"] = {"onnx": "model.onnx"}
    demo_spec["candidates"] = [["test.identity", "quantization.dynamic_int8"]]
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(demo_spec))
    (line,) = info.value.lines
    assert (
        "candidates[0]: ['test.identity'] need a PyTorch model, but model is an ONNX file" in line
    )


def test_in_order_recipe_is_accepted(
    identity: type[_Identity], demo_spec: dict[str, Any], write_spec: Any
) -> None:
    demo_spec["candidates"] = [["test.identity", "quantization.dynamic_int8"]]
    spec = load_spec(write_spec(demo_spec))
    assert spec.candidates[0].label() == "test.identity -> quantization.dynamic_int8"


def test_a_broken_plugin_raises_instead_of_being_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real distribution on sys.path whose entry point cannot be imported.
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[slimgate.optimizers]\nbroken.thing = no_such_module_xyz:Thing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_loaded", False)
    with pytest.raises(registry.OptimizerRegistryError, match=r"'broken\.thing'.*failed to import"):
        registry.available()
    monkeypatch.setattr(registry, "_loaded", True)


# --- what `slimgate optimizers show` and `list --configs` print -------------------------------


@pytest.mark.parametrize("key", sorted(registry.available()))
def test_show_documents_every_field_of_every_builtin(
    key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from components.cli import main
    from optimizers.describe import config_fields

    assert main(["optimizers", "show", key]) == 0
    out = capsys.readouterr().out
    cls = registry.get(key)
    assert out.startswith(f"{key} (stage {cls.stage.value}, version {cls.version})")
    for field in config_fields(cls.config_class):
        assert field.description, f"{key}: config field {field.name} has no description"
        assert f"    {field.name}: {field.type}" in out and field.description in out


def test_show_reads_types_bounds_and_defaults_from_the_config_class() -> None:
    from pydantic import Field

    from optimizers.describe import config_fields

    class Config(OptimizerConfig):
        mode: Literal["fast", "exact"] = Field(default="fast", description="how")
        share: float = Field(default=0.25, gt=0, le=1, description="of what")
        rounds: int | None = None
        names: tuple[str, ...] = Field(default=("a", "b"), min_length=1)
        required: int

    docs = {f.name: f for f in config_fields(Config)}
    assert (docs["mode"].type, docs["mode"].default, docs["mode"].description) == (
        "one of: fast, exact", "fast", "how",
    )  # fmt: skip
    assert (docs["share"].type, docs["share"].bounds, docs["share"].default) == (
        "float", "> 0, <= 1", "0.25",
    )  # fmt: skip
    assert (docs["rounds"].type, docs["rounds"].default) == ("int or null", "null")  # as YAML
    assert (docs["names"].type, docs["names"].bounds, docs["names"].default) == (
        "list of text", "at least 1 items", "[a, b]",
    )  # fmt: skip
    assert docs["required"].default == "required"


def test_a_plugin_is_listed_and_shown_like_a_builtin(
    identity: type[_Identity], capsys: pytest.CaptureFixture[str]
) -> None:
    from components.cli import main

    assert main(["optimizers", "list", "--configs"]) == 0
    listed = capsys.readouterr().out
    assert "test.identity" in listed and "returns the module unchanged" in listed
    assert "    ratio = 0.5  (float, > 0, < 1)" in listed  # pruning.structured's first field
    assert main(["optimizers", "show", "test.identity"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("test.identity (stage torch, version 1)")
    assert "no config fields" in shown


def test_show_of_an_unknown_key_exits_2_naming_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from components.cli import main

    assert main(["optimizers", "show", "quantization.int4"]) == 2
    err = capsys.readouterr().err
    assert "unknown optimizer 'quantization.int4'; known optimizers: distillation.student" in err
    assert main(["optimizers", "show"]) == 2
    assert "optimizers show needs a KEY" in capsys.readouterr().err
