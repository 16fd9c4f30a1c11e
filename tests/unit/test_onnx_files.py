"""Which files an ONNX model keeps its tensors in: every place ONNX itself reads external data
from (initializers, constants, subgraphs), and how much the model weighs with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from components.errors import ModelError
from optimizers.onnx_utils import external_files, model_bytes, onnx_stats


def _branching_model() -> Any:
    """y = x + c, where c is a Constant node in the main graph, and an If whose branch holds
    an initializer each: tensors in the three places besides the main graph's initializers."""
    from onnx import TensorProto, helper, numpy_helper

    big = np.arange(256, dtype=np.float32)

    def branch(weight: str) -> Any:
        return helper.make_graph(
            [helper.make_node("Identity", [weight], ["out"])], weight, [],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, [256])],
            [numpy_helper.from_array(big * 2, weight)],
        )  # fmt: skip

    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(big, "c_value")),
        helper.make_node("Add", ["x", "c"], ["y"]),
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["positive"]),
        helper.make_node(
            "If", ["positive"], ["z"], then_branch=branch("w"), else_branch=branch("v")
        ),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [256]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [256])],
        [numpy_helper.from_array(np.array(0, np.float32), "zero")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_single_file_model_has_none(tmp_path: Path) -> None:
    import onnx

    onnx.save(_branching_model(), str(tmp_path / "m.onnx"))
    assert external_files(tmp_path / "m.onnx") == []
    assert model_bytes(tmp_path / "m.onnx") == (tmp_path / "m.onnx").stat().st_size


def test_constants_and_subgraph_tensors_are_found(tmp_path: Path) -> None:
    import onnx

    onnx.save(_branching_model(), str(tmp_path / "m.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=False, size_threshold=512, convert_attribute=True)  # fmt: skip
    files = external_files(tmp_path / "m.onnx")
    assert {f.name for f in files} == {"c_value", "w", "v"}  # the constant, the branches' weights
    data = sum(f.stat().st_size for f in files)
    assert data == 3 * 256 * 4
    assert model_bytes(tmp_path / "m.onnx") == (tmp_path / "m.onnx").stat().st_size + data
    assert onnx_stats(tmp_path / "m.onnx")["bytes"] == model_bytes(tmp_path / "m.onnx")


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/hostname", "sub/../../x.bin"])
def test_a_location_outside_the_folder_is_refused(tmp_path: Path, location: str) -> None:
    import onnx

    onnx.save(_branching_model(), str(tmp_path / "m.onnx"), save_as_external_data=True,
              location="data.bin", size_threshold=512, convert_attribute=True)  # fmt: skip
    model = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    constant = model.graph.node[0].attribute[0].t
    next(e for e in constant.external_data if e.key == "location").value = location
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(ModelError, match=rf"tensor 'c_value' has its data at '{location}'; "
                                         r"expected a relative path inside"):  # fmt: skip
        external_files(tmp_path / "m.onnx")


def test_bytes_that_are_not_onnx_are_named(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelError, match=r"m\.onnx: not an ONNX model"):
        external_files(tmp_path / "m.onnx")
