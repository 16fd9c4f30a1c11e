"""The work an ONNX graph does per inference, read from the graph: MACs, parameters, weight bytes.

Shapes come from ONNX Runtime's symbolic shape inference, which knows its contrib operators
(``Attention``, ``SkipLayerNormalization``, ``MatMulIntegerToFloat``, ...), with the batch axis
and, where the data gives them, the other symbolic axes fixed; plain ONNX shape inference is the
fallback. Convolutions, matrix products (float, integer and QDQ-quantized) and fused attention
(its projections and its two score products) account for the MACs; element-wise work
(normalisation, activations, softmax) is left out, so the count is a lower bound, and nodes
whose shapes cannot be inferred are listed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GraphCost", "graph_cost"]

Shape = tuple[int, ...]


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


@dataclass(frozen=True)
class _Node:
    """What a cost rule sees of one node: its shapes (None where unknown) and attributes."""

    inputs: list[Shape | None]
    outputs: list[Shape | None]
    attrs: dict[str, Any]
    dequantized: list[bool]  # input i comes out of a DequantizeLinear (QDQ int8)


# A rule returns (float MACs, int8 MACs), or None when a shape it needs is unknown.
_Rule = Callable[[_Node], tuple[int, int] | None]


def _conv(x: int, w: int, integer: bool) -> _Rule:
    def rule(n: _Node) -> tuple[int, int] | None:
        wshape, y = n.inputs[w], n.outputs[0]
        if wshape is None or y is None:
            return None
        macs = _prod(y) * _prod(wshape[1:])  # output elements x (in channels / group x kernel)
        return _split(macs, integer or (n.dequantized[x] and n.dequantized[w]))

    return rule


def _matmul(a: int, b: int, integer: bool) -> _Rule:
    def rule(n: _Node) -> tuple[int, int] | None:
        ashape, y = n.inputs[a], n.outputs[0]
        if ashape is None or y is None:
            return None
        inner = ashape[-2] if n.attrs.get("transA") else ashape[-1]
        if len(ashape) == 1:
            inner = ashape[0]
        return _split(_prod(y) * inner, integer or (n.dequantized[a] and n.dequantized[b]))

    return rule


def _attention(integer_projection: bool) -> _Rule:
    """Attention and QAttention (com.microsoft): input [B, S, Hin], packed weights
    [Hin, Hq + Hk + Hv]; the projections, then Q K^T ([B, heads, S, S] x head size) and
    softmax x V. ONNX Runtime computes the two score products in float in both."""

    def rule(n: _Node) -> tuple[int, int] | None:
        x, w = n.inputs[0], n.inputs[1]
        if x is None or w is None or len(x) != 3:
            return None
        batch, seq, hidden_in = x
        sizes = n.attrs.get("qkv_hidden_sizes") or [w[-1] // 3] * 3
        q, _, v = (int(s) for s in sizes)
        projection = batch * seq * hidden_in * w[-1]
        scores = batch * seq * seq * (q + v)
        if integer_projection:
            return scores, projection
        return projection + scores, 0

    return rule


def _multi_head_attention(n: _Node) -> tuple[int, int] | None:
    """MultiHeadAttention with projected Q [B, S, H], K [B, L, H], V [B, L, Hv]."""
    q, k, v = [*n.inputs, None, None, None][:3]
    if q is None or k is None or v is None or not (len(q) == len(k) == len(v) == 3):
        return None
    return q[0] * q[1] * k[1] * (q[2] + v[2]), 0


_RULES: dict[str, _Rule] = {
    "Conv": _conv(0, 1, integer=False),
    "FusedConv": _conv(0, 1, integer=False),
    "ConvInteger": _conv(0, 1, integer=True),
    "QLinearConv": _conv(0, 3, integer=True),
    "MatMul": _matmul(0, 1, integer=False),
    "FusedMatMul": _matmul(0, 1, integer=False),
    "Gemm": _matmul(0, 1, integer=False),
    "FusedGemm": _matmul(0, 1, integer=False),
    "MatMulInteger": _matmul(0, 1, integer=True),
    "MatMulIntegerToFloat": _matmul(0, 1, integer=True),
    "DynamicQuantizeMatMul": _matmul(0, 1, integer=True),
    "QLinearMatMul": _matmul(0, 3, integer=True),
    "QGemm": _matmul(0, 3, integer=True),
    "Attention": _attention(integer_projection=False),
    "QAttention": _attention(integer_projection=True),
    "MultiHeadAttention": _multi_head_attention,
}


def graph_cost(
    path: Path, batch: int = 1, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> GraphCost:
    """MACs at ``batch``, stored parameters and their bytes, for the model in ``path``.

    ``input_shapes`` gives one row's shape of an input (without the batch axis), for models
    whose other axes are symbolic too, e.g. ``{"input_ids": (128,)}`` (``"*"``: any input not
    named); the benchmark passes the shapes of the rows it feeds.
    """
    import onnx
    from onnx import numpy_helper

    from optimizers.onnx_utils import infer_shapes

    model = onnx.load(str(path))
    rows = dict(input_shapes or {})
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        row = rows.get(value.name, rows.get("*"))
        for i, dim in enumerate(dims):
            if dim.HasField("dim_value"):
                continue
            if i == 0:
                dim.dim_value = batch
            elif row is not None and len(row) == len(dims) - 1:
                dim.dim_value = int(row[i - 1])
    inferred = infer_shapes(model).graph

    shapes: dict[str, Shape] = {}
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    weights = {t.name: numpy_helper.to_array(t) for t in inferred.initializer}
    for name, arr in weights.items():
        shapes[name] = arr.shape
    producers = {out: node.op_type for node in inferred.node for out in node.output}

    macs_fp = macs_int8 = 0
    unknown = []
    for node in inferred.node:
        rule = _RULES.get(node.op_type)
        if rule is None:
            continue
        seen = _Node(
            inputs=[shapes.get(name) if name else None for name in node.input],
            outputs=[shapes.get(name) for name in node.output],
            attrs={a.name: onnx.helper.get_attribute_value(a) for a in node.attribute},
            dequantized=[producers.get(name) == "DequantizeLinear" for name in node.input],
        )
        counted = rule(seen)
        if counted is None:
            unknown.append(node.name or node.op_type)
            continue
        macs_fp += counted[0]
        macs_int8 += counted[1]
    arrays = list(weights.values())
    return GraphCost(
        batch=batch,
        macs_fp=macs_fp,
        macs_int8=macs_int8,
        parameters=int(sum(a.size for a in arrays)),
        weight_bytes=int(sum(a.nbytes for a in arrays)),
        unknown_nodes=unknown,
    )


def _prod(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _split(macs: int, integer: bool) -> tuple[int, int]:
    return (0, macs) if integer else (macs, 0)
