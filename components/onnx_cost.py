"""The work an ONNX graph does per inference, read from the graph: MACs, parameters, weight bytes.

Shapes come from ONNX shape inference with the batch axis fixed. Convolutions and matrix
products (float, integer and QDQ-quantized) account for the MACs; element-wise work is left out,
so the count is a lower bound, and nodes whose shapes cannot be inferred are listed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GraphCost", "graph_cost"]

_CONV = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
_MATMUL = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "Gemm": (0, 1)}
_INTEGER = {"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul"}


@dataclass(frozen=True)
class GraphCost:
    batch: int
    macs_fp: int
    macs_int8: int
    parameters: int
    weight_bytes: int
    unknown_nodes: list[str] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return self.macs_fp + self.macs_int8

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "macs": self.macs}


def graph_cost(path: Path, batch: int = 1) -> GraphCost:  # noqa: PLR0912 - one pass over ops
    """MACs at ``batch``, stored parameters and their bytes, for the model in ``path``."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    inferred = shape_inference.infer_shapes(model, data_prop=True).graph

    shapes: dict[str, tuple[int, ...]] = {}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    weights = {t.name: numpy_helper.to_array(t) for t in inferred.initializer}
    for name, arr in weights.items():
        shapes[name] = arr.shape
    producers = {out: node for node in inferred.node for out in node.output}

    def dequantized(name: str) -> bool:
        node = producers.get(name)
        return node is not None and node.op_type == "DequantizeLinear"

    macs_fp = macs_int8 = 0
    unknown = []
    for node in inferred.node:
        op = node.op_type
        if op not in _CONV and op not in _MATMUL:
            continue
        x_idx, w_idx = (_CONV | _MATMUL)[op]
        x = shapes.get(node.input[x_idx])
        w = shapes.get(node.input[w_idx])
        y = shapes.get(node.output[0])
        if x is None or w is None or y is None:
            unknown.append(node.name or op)
            continue
        if op in _CONV:
            per_output = int(np.prod(w[1:]))  # in_channels/group * kernel
        elif op == "Gemm":
            trans_a = any(a.name == "transA" and a.i for a in node.attribute)
            per_output = x[0] if trans_a else x[-1]
        else:
            per_output = x[-1]
        macs = int(np.prod(y)) * int(per_output)
        integer = op in _INTEGER or (
            dequantized(node.input[x_idx]) and dequantized(node.input[w_idx])
        )
        if integer:
            macs_int8 += macs
        else:
            macs_fp += macs
    arrays = list(weights.values())
    return GraphCost(
        batch=batch,
        macs_fp=macs_fp,
        macs_int8=macs_int8,
        parameters=int(sum(a.size for a in arrays)),
        weight_bytes=int(sum(a.nbytes for a in arrays)),
        unknown_nodes=unknown,
    )
