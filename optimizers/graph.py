"""Hardware-specific graph optimization with ONNX Runtime, done once, offline."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from optimizers.base import OnnxOptimizer, OptimizeContext, OptimizerConfig
from optimizers.registry import register

__all__ = [
    "GraphOptimization",
    "GraphOptimizationConfig",
    "TransformerFusion",
    "TransformerFusionConfig",
]


class GraphOptimizationConfig(OptimizerConfig):
    """``basic``: constant folding and redundant-node removal, portable. ``extended``: also
    operator fusions (Conv+activation, Gemm+activation, ...). ``all``: also layout changes for
    the CPU it runs on; the file then belongs to that hardware."""

    level: Literal["basic", "extended", "all"] = Field(
        default="extended", description="ONNX Runtime's graph optimization level (see above)"
    )
    threads: int | None = Field(default=None, ge=1, description="default: the target's threads")


@register
class GraphOptimization(OnnxOptimizer[GraphOptimizationConfig]):
    """ONNX Runtime's offline graph optimization for the target, saved as a new model."""

    key: ClassVar[str] = "graph.ort_optimize"
    config_class: ClassVar[type[OptimizerConfig]] = GraphOptimizationConfig
    description: ClassVar[str] = (
        "ONNX Runtime graph optimization (folding, fusions, layouts), offline"
    )

    def _apply(self, src: Path, dst: Path, ctx: OptimizeContext) -> dict[str, Any]:
        import onnx
        import onnxruntime as ort

        levels = {
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        opts = ort.SessionOptions()
        opts.graph_optimization_level = levels[self.config.level]
        opts.intra_op_num_threads = self.config.threads or ctx.threads
        opts.optimized_model_filepath = str(dst)
        opts.log_severity_level = 3
        ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
        before = Counter(n.op_type for n in onnx.load(str(src)).graph.node)
        after = Counter(n.op_type for n in onnx.load(str(dst)).graph.node)
        return {"level": self.config.level, "nodes_before": sum(before.values()),
                "nodes_after": sum(after.values()), "op_types_after": dict(sorted(after.items()))}  # fmt: skip


class TransformerFusionConfig(OptimizerConfig):
    """Fuse the subgraphs of a transformer encoder (attention, embedding + LayerNorm, skip +
    LayerNorm, bias + GELU) into ONNX Runtime's contrib operators. The model types are those of
    ``onnxruntime.transformers.optimizer``; BERT-style encoders (BERT, RoBERTa, ELECTRA, ...) use
    ``bert``. Export with eager attention: the pattern of a fused SDPA call is not recognised."""

    model_type: Literal["bert", "vit", "clip", "bart"] = Field(
        default="bert", description="the fusion patterns to look for (bert: BERT-style encoders)"
    )
    num_heads: int = Field(default=0, ge=0, description="0: read from the graph")
    hidden_size: int = Field(default=0, ge=0, description="0: read from the graph")
    gelu_approximation: bool = Field(
        default=False, description="tanh GELU (FastGelu): faster, outputs move by about 1e-3"
    )


@register
class TransformerFusion(OnnxOptimizer[TransformerFusionConfig]):
    """ONNX Runtime's transformer fusions, offline; refuses a model with no attention to fuse."""

    key: ClassVar[str] = "graph.transformer_fusion"
    config_class: ClassVar[type[OptimizerConfig]] = TransformerFusionConfig
    description: ClassVar[str] = (
        "fuse a transformer encoder's attention, LayerNorm and GELU into ONNX Runtime kernels"
    )

    def _apply(self, src: Path, dst: Path, ctx: OptimizeContext) -> dict[str, Any]:
        import onnx
        from onnxruntime.transformers import optimizer
        from onnxruntime.transformers.fusion_options import FusionOptions

        cfg = self.config
        num_heads, hidden_size = cfg.num_heads, cfg.hidden_size
        if not (num_heads and hidden_size):
            num_heads, hidden_size = _attention_shape(src) or (num_heads, hidden_size)
        options = FusionOptions(cfg.model_type)
        options.enable_gelu_approximation = cfg.gelu_approximation
        # opt_level=0: only the fusions, so the file stays portable across CPUs.
        fused = optimizer.optimize_model(
            str(src),
            model_type=cfg.model_type,
            num_heads=num_heads,
            hidden_size=hidden_size,
            optimization_options=options,
            opt_level=0,
        )
        counts = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
        if not any(op.endswith("Attention") for op in counts):
            layers = sorted({n.op_type for n in onnx.load(str(src)).graph.node})
            raise ValueError(
                f"{src.name}: no {cfg.model_type} attention subgraph found to fuse "
                f"(operators: {', '.join(layers)}); {self.key} supports transformer encoders "
                "exported with eager attention"
            )
        fused.save_model_to_file(str(dst))
        return {
            "model_type": cfg.model_type,
            "num_heads": num_heads,
            "hidden_size": hidden_size,
            "fused": counts,
        }


def _attention_shape(path: Path) -> tuple[int, int] | None:
    """(heads, heads x head size) read from the graph, or None when it cannot be read.

    ONNX Runtime reads them from constant Reshape shapes, but exporters write ``-1`` for the
    head count (and pruning changes it), so the shapes are inferred here instead: the
    probabilities x values MatMul takes values shaped (batch, heads, sequence, head size)
    and its output is transposed back to (batch, sequence, heads, head size).
    """
    import onnx

    from optimizers.onnx_utils import infer_shapes

    model = infer_shapes(onnx.load(str(path)))
    shapes = {
        v.name: [
            d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim
        ]
        for v in model.graph.value_info
    }
    weights = {t.name for t in model.graph.initializer}
    transposed = {
        n.input[0]
        for n in model.graph.node
        if n.op_type == "Transpose" and [a.ints for a in n.attribute] == [[0, 2, 1, 3]]
    }
    found = set()
    for node in model.graph.node:
        if (
            node.op_type != "MatMul"
            or weights & set(node.input)
            or node.output[0] not in transposed
        ):
            continue
        values = shapes.get(node.input[1], [])
        if len(values) == 4 and values[1] and values[3]:
            found.add((values[1], values[1] * values[3]))
    if len(found) != 1:
        return None  # none found, or layers differ: ONNX Runtime decides per layer
    return found.pop()
