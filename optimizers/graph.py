"""Hardware-specific graph optimization with ONNX Runtime, done once, offline."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from optimizers.base import OnnxOptimizer, OptimizeContext, OptimizerConfig
from optimizers.registry import register

__all__ = ["GraphOptimization", "GraphOptimizationConfig"]


class GraphOptimizationConfig(OptimizerConfig):
    """``basic``: constant folding and redundant-node removal, portable. ``extended``: also
    operator fusions (Conv+activation, Gemm+activation, ...). ``all``: also layout changes for
    the CPU it runs on; the file then belongs to that hardware."""

    level: Literal["basic", "extended", "all"] = "extended"
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
