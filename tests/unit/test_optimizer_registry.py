from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

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
