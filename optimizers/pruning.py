"""Pruning: structured (channels and neurons physically removed) and unstructured (weights zeroed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from optimizers.base import OptimizeContext, OptimizerConfig, TorchOptimizer
from optimizers.registry import register
from optimizers.tensors import subset, to_torch
from optimizers.torch_utils import fine_tune, weight_layers

if TYPE_CHECKING:
    import torch

__all__ = [
    "StructuredPruning",
    "StructuredPruningConfig",
    "UnstructuredPruning",
    "UnstructuredPruningConfig",
]


def _output_layers(model: torch.nn.Module, ctx: OptimizeContext) -> list[torch.nn.Module]:
    """The layers producing class scores: removing their units would remove classes."""
    layers = weight_layers(model)
    if not layers:
        raise ValueError("the model has no Linear or Conv layer to prune")
    return [layers[-1][1]]


class StructuredPruningConfig(OptimizerConfig):
    """Remove a share of the channels (convolutions) and neurons (linear layers), ranked by
    weight magnitude, then fine-tune. Shapes shrink, so dense kernels run faster.

    Attention layers written the Hugging Face way (a module with ``num_attention_heads`` and
    ``query``/``key``/``value`` projections: BERT, RoBERTa, ViT, ...) lose whole heads, the
    same share of them, so every remaining head keeps its size."""

    ratio: float = Field(default=0.5, gt=0, lt=1, description="share of channels/neurons removed")
    importance: Literal["l1", "l2"] = Field(
        default="l2", description="norm of the weights channels are ranked by"
    )
    global_pruning: bool = Field(default=False, description="rank across layers, not per layer")
    round_to: int | None = Field(
        default=8, ge=1, description="keep channel counts multiples of this"
    )
    fine_tune_epochs: int = Field(
        default=4, ge=0, le=200, description="fine-tuning epochs after the change (0: none)"
    )
    lr: float = Field(default=1e-3, gt=0, le=1, description="fine-tuning learning rate")


def _attention_layers(model: torch.nn.Module) -> list[Any]:
    """Attention modules in the Hugging Face layout, whose heads are pruned as units."""
    import torch

    return [
        m
        for m in model.modules()
        if isinstance(getattr(m, "num_attention_heads", None), int)
        and all(isinstance(getattr(m, p, None), torch.nn.Linear) for p in ("query", "key", "value"))
    ]


@register
class StructuredPruning(TorchOptimizer[StructuredPruningConfig]):
    """Structured pruning with torch-pruning's dependency graph, then fine-tuning."""

    key: ClassVar[str] = "pruning.structured"
    config_class: ClassVar[type[OptimizerConfig]] = StructuredPruningConfig
    description: ClassVar[str] = (
        "remove channels, neurons and attention heads (torch-pruning), then fine-tune"
    )

    def _apply(
        self, model: torch.nn.Module, ctx: OptimizeContext
    ) -> tuple[torch.nn.Module, dict[str, Any]]:
        import torch
        import torch_pruning as tp

        cfg = self.config
        if ctx.train is None:
            raise ValueError("structured pruning needs the training split to fine-tune")
        torch.manual_seed(ctx.seed)
        example = to_torch(subset(ctx.train[0], slice(0, 2)))
        before = {name: _width(m) for name, m in weight_layers(model)}
        attention = _attention_layers(model)
        heads_before = [m.num_attention_heads for m in attention]
        num_heads = {
            getattr(m, p): m.num_attention_heads
            for m in attention
            for p in ("query", "key", "value")
        }
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=tp.importance.MagnitudeImportance(p=1 if cfg.importance == "l1" else 2),
            pruning_ratio=cfg.ratio,
            global_pruning=cfg.global_pruning,
            ignored_layers=_output_layers(model, ctx),
            round_to=cfg.round_to,
            num_heads=num_heads,
            prune_num_heads=bool(num_heads),
            prune_head_dims=False,
            head_pruning_ratio=cfg.ratio,
        )
        pruner.step()
        for m in attention:  # the module's own bookkeeping, which its forward reads
            m.all_head_size = m.query.out_features
            m.num_attention_heads = m.all_head_size // m.attention_head_size
        after = {name: _width(m) for name, m in weight_layers(model)}
        details: dict[str, Any] = {
            "widths": {name: [before[name], after[name]] for name in before},
            "fine_tune": fine_tune(model, ctx, cfg.fine_tune_epochs, cfg.lr),
        }
        if attention:
            details["heads"] = [
                [b, m.num_attention_heads] for b, m in zip(heads_before, attention, strict=True)
            ]
        model.eval()
        return model, details


def _width(module: torch.nn.Module) -> int:
    return int(getattr(module, "out_features", 0) or getattr(module, "out_channels", 0))


class UnstructuredPruningConfig(OptimizerConfig):
    """Zero the smallest weights to a target sparsity, fine-tune with the mask held, make it
    permanent. Shapes stay: ONNX Runtime's dense kernels multiply the zeros all the same, so
    this makes the model no faster; only a compressed copy of the file gets smaller."""

    sparsity: float = Field(default=0.5, gt=0, lt=1, description="share of weights zeroed")
    scope: Literal["global", "layer"] = Field(
        default="global", description="rank weights across all layers, or within each layer"
    )
    fine_tune_epochs: int = Field(
        default=2, ge=0, le=200, description="fine-tuning epochs after the change (0: none)"
    )
    lr: float = Field(default=1e-3, gt=0, le=1, description="fine-tuning learning rate")


@register
class UnstructuredPruning(TorchOptimizer[UnstructuredPruningConfig]):
    """Magnitude pruning with ``torch.nn.utils.prune``, then fine-tuning."""

    key: ClassVar[str] = "pruning.unstructured"
    config_class: ClassVar[type[OptimizerConfig]] = UnstructuredPruningConfig
    description: ClassVar[str] = "zero the smallest weights (sparsity; no speedup on dense kernels)"

    def _apply(
        self, model: torch.nn.Module, ctx: OptimizeContext
    ) -> tuple[torch.nn.Module, dict[str, Any]]:
        import torch
        from torch.nn.utils import prune

        cfg = self.config
        torch.manual_seed(ctx.seed)
        layers = [m for _, m in weight_layers(model)]
        if cfg.scope == "global":
            prune.global_unstructured([(m, "weight") for m in layers], pruning_method=prune.L1Unstructured,
                                      amount=cfg.sparsity)  # fmt: skip
        else:
            for m in layers:
                prune.l1_unstructured(m, "weight", amount=cfg.sparsity)  # type: ignore[no-untyped-call]
        tuned = fine_tune(model, ctx, cfg.fine_tune_epochs, cfg.lr)
        for m in layers:
            prune.remove(m, "weight")  # type: ignore[no-untyped-call]
        weights = torch.cat([torch.as_tensor(m.weight).detach().flatten() for m in layers])
        model.eval()
        return model, {
            "weight_sparsity": float((weights == 0).float().mean()),
            "fine_tune": tuned,
            "note": "dense kernels multiply zeros too: expect no speedup, only a smaller compressed file",
        }
