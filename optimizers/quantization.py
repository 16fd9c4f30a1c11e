"""Post-training quantization with ONNX Runtime."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from optimizers.base import OnnxOptimizer, OptimizeContext, OptimizerConfig
from optimizers.registry import register

__all__ = ["DynamicInt8Quantization", "DynamicInt8QuantizationConfig"]

DynamicOpType = Literal["MatMul", "Conv", "Attention", "LSTM", "Gather"]


class DynamicInt8QuantizationConfig(OptimizerConfig):
    """Weights stored as int8; activations quantized on the fly at every inference.

    ``op_types`` leaves out ``Conv`` by default: ONNX Runtime's dynamic ``ConvInteger`` is
    usually slower than the fp32 convolution on CPUs (2.6x slower on the built-in CNN here),
    so convolutions are better served by static quantization. ``Gemm`` layers are rewritten
    to ``MatMul`` and quantized with them.
    """

    per_channel: bool = False
    reduce_range: bool = Field(
        default=False, description="7-bit weights, for CPUs without VNNI where int8 saturates"
    )
    weight_type: Literal["int8", "uint8"] = "int8"
    op_types: tuple[DynamicOpType, ...] = Field(
        default=("MatMul", "Attention", "LSTM", "Gather"), min_length=1
    )
    nodes_to_exclude: tuple[str, ...] = Field(
        default=(), description="node names kept in fp32, e.g. a sensitive first or last layer"
    )


@register
class DynamicInt8Quantization(OnnxOptimizer[DynamicInt8QuantizationConfig]):
    """Dynamic int8 quantization of an ONNX model with ``onnxruntime.quantization``."""

    key: ClassVar[str] = "quantization.dynamic_int8"
    config_class: ClassVar[type[OptimizerConfig]] = DynamicInt8QuantizationConfig
    description: ClassVar[str] = (
        "int8 weights, activations quantized at run time (ONNX Runtime quantize_dynamic)"
    )

    def _apply(self, src: Path, dst: Path, ctx: OptimizeContext) -> dict[str, Any]:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        cfg = self.config
        graph = onnx.load(str(src), load_external_data=False).graph
        names = {node.name for node in graph.node}
        missing = sorted(set(cfg.nodes_to_exclude) - names)
        if missing:
            raise ValueError(
                f"nodes_to_exclude names nodes that are not in {src.name}: {missing}; "
                f"the model has {len(names)} nodes, e.g. {sorted(names)[:5]}"
            )
        before = Counter(node.op_type for node in graph.node)
        # quantize_dynamic rewrites Gemm to MatMul before quantizing it.
        targets = set(cfg.op_types) | ({"Gemm"} if "MatMul" in cfg.op_types else set())
        if not targets & set(before):
            raise ValueError(
                f"op_types {list(cfg.op_types)} match no node of {src.name}, "
                f"whose op types are {sorted(before)}; nothing would be quantized"
            )
        with _root_logger_at(logging.ERROR):
            quantize_dynamic(
                str(src),
                str(dst),
                op_types_to_quantize=list(cfg.op_types),
                per_channel=cfg.per_channel,
                reduce_range=cfg.reduce_range,
                weight_type=QuantType.QInt8 if cfg.weight_type == "int8" else QuantType.QUInt8,
                nodes_to_exclude=list(cfg.nodes_to_exclude),
            )
        after = Counter(node.op_type for node in onnx.load(str(dst)).graph.node)
        return {
            "op_types_before": dict(sorted(before.items())),
            "op_types_after": dict(sorted(after.items())),
            "integer_nodes": sum(after[op] for op in _INTEGER_OPS),
        }


_INTEGER_OPS = ("MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM", "QAttention")


@contextmanager
def _root_logger_at(level: int) -> Iterator[None]:
    """onnxruntime.quantization logs advice to the root logger on every call; mute it."""
    previous = logging.root.level
    logging.root.setLevel(level)
    try:
        yield
    finally:
        logging.root.setLevel(previous)
