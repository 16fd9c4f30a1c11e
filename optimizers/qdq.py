"""Static int8 of the matrix products only, written as QDQ by slimgate: what the transformer
quantizers in :mod:`optimizers.quantization` build on.

ONNX Runtime's ``quantize_static`` quantizes every operator it can (Add, Softmax inputs, the
attention mask's arithmetic, the embedding lookup) and shares one Q/DQ pair between consumers;
on a BERT-style encoder that destroyed the model (agreement 0.39 on the MiniLM benchmark) and
left the projections as fp32 MatMuls behind DequantizeLinear (slower than fp32). Here only the
inputs of MatMul and Gemm nodes whose second input is a weight are quantized, each with a
dedicated QuantizeLinear/DequantizeLinear pair on the activation and an int8 weight behind a
DequantizeLinear, so that ONNX Runtime's CPU provider fuses each product into one integer kernel
(``MatMulIntegerToFloat``) and everything else stays fp32.

Activation outliers (a few hidden channels carry values 100x the rest in trained encoders) are
migrated into the weights SmoothQuant-style: per input channel k,
``s_k = max|X_k|^alpha / max|W_k|^(1 - alpha)``, the activation divided by ``s`` (one ``Mul``
shared by the products that read it) and the weight rows multiplied by it.

Calibration keeps running per-channel minima and maxima only, so its memory is one batch of
activations whatever the number of calibration rows.
"""

from __future__ import annotations

import resource
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optimizers.tensors import Features, feeds, n_rows, take

__all__ = ["ChannelRanges", "Site", "calibrate", "find_sites", "quantize_sites"]


@dataclass(frozen=True)
class Site:
    """A matrix product with a constant weight: where int8 can go."""

    node: str  # node name
    op: str  # MatMul or Gemm
    activation: str  # the tensor multiplied by the weight
    weight: str  # initializer name
    in_axis: int  # the weight's axis that meets the activation's last axis
    weight_size: int  # elements of the weight


@dataclass
class ChannelRanges:
    """Running per-channel (last axis) minimum and maximum of one activation tensor."""

    low: np.ndarray
    high: np.ndarray

    def update(self, x: np.ndarray) -> None:
        flat = x.reshape(-1, x.shape[-1])
        np.minimum(self.low, flat.min(axis=0), out=self.low)
        np.maximum(self.high, flat.max(axis=0), out=self.high)


@dataclass(frozen=True)
class Calibration:
    ranges: dict[str, ChannelRanges]
    rows: int
    batch_bytes: int  # the activations held at once (one batch)
    peak_rss_mb: float  # the process's peak resident memory after calibrating


def find_sites(model: Any) -> list[Site]:
    """Every MatMul and Gemm (not transposing its first input, unscaled) whose second input is
    a 2-D initializer, i.e. the projections of a network; products of two activations stay
    fp32."""
    from onnx.helper import get_attribute_value as onnx_attribute

    weights = {t.name: t for t in model.graph.initializer}
    sites = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        w = weights.get(node.input[1])
        if w is None or len(w.dims) != 2 or w.data_type != 1 or node.input[0] in weights:
            continue
        attrs = {a.name: onnx_attribute(a) for a in node.attribute}
        if (
            attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0
        ):
            continue
        in_axis = 1 if node.op_type == "Gemm" and attrs.get("transB", 0) else 0
        size = int(np.prod(w.dims))
        sites.append(Site(node.name, node.op_type, node.input[0], node.input[1], in_axis, size))
    names = [s.node for s in sites]
    if len(set(names)) != len(names) or "" in names:
        raise ValueError("the model's matrix products need unique, non-empty node names")
    return sites


def calibrate(
    path: Path, sites: Sequence[Site], x: Features, batch_size: int, threads: int
) -> Calibration:
    """Per-channel ranges of every site's activation over the calibration rows ``x``."""
    import onnx

    from optimizers.onnx_utils import session

    model = onnx.load(str(path))
    tensors = sorted({s.activation for s in sites})
    present = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
    augmented = path.with_name(f"{path.stem}-calibration.onnx")
    onnx.save(model, str(augmented))
    try:
        sess = session(augmented, threads)
        inputs = sess.get_inputs()
        ranges: dict[str, ChannelRanges] = {}
        rows = n_rows(x)
        held = 0
        for start in range(0, rows, batch_size):
            outs = sess.run(tensors, feeds(inputs, take(x, slice(start, start + batch_size)), ""))
            held = max(held, sum(o.nbytes for o in outs))
            for name, value in zip(tensors, outs, strict=True):
                if name not in ranges:
                    width = value.shape[-1]
                    ranges[name] = ChannelRanges(np.full(width, np.inf, np.float32),
                                                 np.full(width, -np.inf, np.float32))  # fmt: skip
                ranges[name].update(value)
            del outs
    finally:
        augmented.unlink(missing_ok=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    return Calibration(ranges, rows, held, peak)


def quantize_sites(
    src: Path,
    dst: Path,
    sites: Iterable[Site],
    calibration: Calibration,
    *,
    alpha: float,
    per_channel: bool,
    symmetric_activations: bool,
    embeddings: bool,
) -> dict[str, Any]:
    """Write ``src`` to ``dst`` with ``sites`` in QDQ int8 (after smoothing with ``alpha``;
    0 leaves activations as they are). Returns what was done, per site and in total."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    if not any(op.domain in ("", "ai.onnx") and op.version >= 13 for op in model.opset_import):
        raise ValueError(f"{src.name}: per-axis QDQ needs opset 13 or newer")
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    nodes = {n.name: n for n in graph.node}
    position = {n.name: i for i, n in enumerate(graph.node)}
    chosen = list(sites)
    by_activation: dict[str, list[Site]] = {}
    for site in chosen:
        by_activation.setdefault(site.activation, []).append(site)

    new_nodes: dict[str, list[Any]] = {}  # node name -> nodes to insert before it
    new_inits: list[Any] = []
    replaced: set[str] = set()
    smoothed_max = 0.0
    for activation, group in by_activation.items():
        rng = calibration.ranges[activation]
        low, high = rng.low.astype(np.float64), rng.high.astype(np.float64)
        arrays = {s.weight: numpy_helper.to_array(weights[s.weight]).astype(np.float64)
                  for s in group}  # fmt: skip
        scale = np.ones_like(low)
        source = activation
        if alpha > 0:
            scale = _smoothing(low, high, [(arrays[g.weight], g.in_axis) for g in group], alpha)
            source = f"{activation}_smoothed"
            inverse = f"{activation}_smooth_inverse"
            new_inits.append(numpy_helper.from_array((1 / scale).astype(np.float32), inverse))
            first = min((g.node for g in group), key=position.__getitem__)
            new_nodes.setdefault(first, []).append(
                helper.make_node(
                    "Mul", [activation, inverse], [source], name=f"{activation}_SmoothQuant"
                )
            )
            smoothed_max = max(smoothed_max, float(np.maximum(-low, high).max()))
            low, high = low / scale, high / scale
        activation_q = _activation_scale(low, high, symmetric_activations)
        for site in group:
            w = arrays[site.weight] * (scale[:, None] if site.in_axis == 0 else scale[None, :])
            _quantize_site(site, nodes[site.node], w, source, activation_q,
                           per_channel=per_channel, new_nodes=new_nodes, new_inits=new_inits)  # fmt: skip
            replaced.add(site.weight)

    tables = _quantize_embeddings(graph, weights, new_nodes, new_inits) if embeddings else []
    replaced.update(tables)

    # a weight another node still reads stays; the others are replaced by their int8 copy
    still_read = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name not in replaced or t.name in still_read]
    ordered = []
    for node in graph.node:
        ordered += new_nodes.get(node.name, [])
        ordered.append(node)
        ordered += new_nodes.get(f"after:{node.name}", [])
    del graph.node[:]
    graph.node.extend(ordered)
    del graph.initializer[:]
    graph.initializer.extend([*kept, *new_inits])
    onnx.save(model, str(dst))
    return {"quantized": len(chosen), "smoothed_tensors": len(by_activation) if alpha > 0 else 0,
            "largest_activation_before_smoothing": round(smoothed_max, 3),
            "embedding_tables": len(tables)}  # fmt: skip


def _activation_scale(
    low: np.ndarray, high: np.ndarray, symmetric: bool
) -> tuple[float, np.integer[Any]]:
    """Per-tensor scale and zero point of an activation from its channels' ranges: int8 around
    0 (symmetric), or uint8 over [min(low, 0), max(high, 0)]."""
    lo, hi = min(float(low.min()), 0.0), max(float(high.max()), 0.0)
    if symmetric:
        return max(-lo, hi) / 127 or 1.0, np.int8(0)
    scale = (hi - lo) / 255 or 1.0
    return scale, np.uint8(np.clip(round(-lo / scale), 0, 255))


def _smoothing(
    low: np.ndarray, high: np.ndarray, weights: list[tuple[np.ndarray, int]], alpha: float
) -> np.ndarray:
    """SmoothQuant's per-channel factors: ``max|X_k|^alpha / max|W_k|^(1 - alpha)``, over every
    weight that reads the activation (given with the axis that meets it)."""
    act_max = np.maximum(np.abs(low), np.abs(high))
    w_max = np.max([np.abs(w).max(axis=1 - axis) for w, axis in weights], axis=0)
    factors = np.power(np.maximum(act_max, 1e-5), alpha) / np.power(
        np.maximum(w_max, 1e-5), 1 - alpha
    )
    clipped: np.ndarray = np.clip(factors, 1e-4, 1e4)
    return clipped


def _quantize_site(
    site: Site,
    node: Any,
    w: np.ndarray,
    source: str,
    activation: tuple[float, np.integer[Any]],
    *,
    per_channel: bool,
    new_nodes: dict[str, list[Any]],
    new_inits: list[Any],
) -> None:
    """Rewire ``node`` to read ``source`` through a dedicated Q/DQ pair with the activation
    scale and zero point, and ``w`` as int8 (symmetric) behind a DequantizeLinear."""
    from onnx import helper, numpy_helper

    out_axis = 1 - site.in_axis
    if per_channel:
        w_scale = np.abs(w).max(axis=site.in_axis) / 127
    else:
        w_scale = np.array(np.abs(w).max() / 127)
    w_scale = np.where(w_scale == 0, 1.0, w_scale)
    shape = [1, 1]
    shape[out_axis] = -1
    q = np.clip(np.round(w / w_scale.reshape(shape) if per_channel else w / w_scale),
                -127, 127).astype(np.int8)  # fmt: skip
    if site.in_axis == 1:  # Gemm's transposed weight [N, K]: stored as MatMul's [K, N]
        q, out_axis = np.ascontiguousarray(q.T), 1
    tag = site.node
    names = {k: f"{tag}_{k}" for k in ("a_scale", "a_zero", "w_q", "w_scale", "w_zero", "a_q",
                                       "a_dq", "w_dq")}  # fmt: skip
    a_scale, a_zero = activation
    new_inits += [
        numpy_helper.from_array(np.array(a_scale, np.float32), names["a_scale"]),
        numpy_helper.from_array(np.array(a_zero), names["a_zero"]),
        numpy_helper.from_array(q, names["w_q"]),
        numpy_helper.from_array(w_scale.astype(np.float32), names["w_scale"]),
        numpy_helper.from_array(np.zeros(w_scale.shape, np.int8), names["w_zero"]),
    ]
    axis: dict[str, Any] = {"axis": out_axis} if per_channel else {}
    new_nodes.setdefault(site.node, []).extend([
        helper.make_node("QuantizeLinear", [source, names["a_scale"], names["a_zero"]],
                         [names["a_q"]], name=f"{tag}_QuantizeInput"),
        helper.make_node("DequantizeLinear", [names["a_q"], names["a_scale"], names["a_zero"]],
                         [names["a_dq"]], name=f"{tag}_DequantizeInput"),
        helper.make_node("DequantizeLinear", [names["w_q"], names["w_scale"], names["w_zero"]],
                         [names["w_dq"]], name=f"{tag}_DequantizeWeight", **axis),
    ])  # fmt: skip
    if site.op == "Gemm":  # as MatMul (+ Add), the pattern ONNX Runtime fuses with QDQ
        bias = node.input[2] if len(node.input) > 2 else ""
        output = node.output[0]
        node.op_type = "MatMul"
        del node.attribute[:]
        del node.input[2:]
        if bias:
            node.output[0] = f"{output}_product"
            new_nodes.setdefault(f"after:{node.name}", []).append(
                helper.make_node("Add", [node.output[0], bias], [output], name=f"{tag}_Bias")
            )
    node.input[0] = names["a_dq"]
    node.input[1] = names["w_dq"]


def _quantize_embeddings(
    graph: Any, weights: dict[str, Any], new_nodes: dict[str, list[Any]], new_inits: list[Any]
) -> list[str]:
    """Gather from a 2-D fp32 table (an embedding) reads an int8 copy with one scale per row
    and dequantizes only the rows it gathered: a quarter of the bytes, and no per-run
    dequantization of the whole table. Returns the tables replaced."""
    from onnx import helper, numpy_helper

    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    tables = []
    for node in graph.node:
        name = node.input[0] if node.op_type == "Gather" and node.input else ""
        table = weights.get(name)
        if table is None or len(table.dims) != 2 or table.data_type != 1 or readers[name] != 1:
            continue
        if not node.name:
            continue
        if any(a.name == "axis" and a.i != 0 for a in node.attribute):
            continue
        values = numpy_helper.to_array(table)
        scales = np.abs(values).max(axis=1, keepdims=True) / 127
        scales = np.where(scales == 0, 1.0, scales).astype(np.float32)
        tag = node.name
        q, s = f"{tag}_table_q", f"{tag}_row_scales"
        new_inits += [
            numpy_helper.from_array(
                np.clip(np.round(values / scales), -127, 127).astype(np.int8), q
            ),
            numpy_helper.from_array(scales, s),
        ]
        gathered, index = node.output[0], node.input[1]
        node.input[0] = q
        node.output[0] = f"{gathered}_int8"
        new_nodes.setdefault(f"after:{node.name}", []).extend([  # see quantize_sites' reordering
            helper.make_node("Gather", [s, index], [f"{gathered}_scales"], name=f"{tag}_Scales"),
            helper.make_node("Cast", [node.output[0]], [f"{gathered}_float"], to=1,
                             name=f"{tag}_Cast"),
            helper.make_node("Mul", [f"{gathered}_float", f"{gathered}_scales"], [gathered],
                             name=f"{tag}_Dequantize"),
        ])  # fmt: skip
        tables.append(name)
    return tables
