"""Pruning: structured (channels and neurons physically removed) and unstructured (weights zeroed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from optimizers.base import OptimizeContext, OptimizerConfig, TorchOptimizer
from optimizers.registry import register
from optimizers.tensors import subset, to_torch
from optimizers.torch_utils import fine_tune, scores, weight_layers

if TYPE_CHECKING:
    import torch

__all__ = [
    "LayerDropping",
    "LayerDroppingConfig",
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
    fine_tune_on: Literal["labels", "teacher"] = Field(
        default="labels",
        description="labels, or the unpruned model's outputs (distillation, as pruning.layers)",
    )


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
        teacher = _teacher_outputs(model, ctx) if cfg.fine_tune_on == "teacher" else None
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
            "fine_tune": (
                fine_tune(model, ctx, cfg.fine_tune_epochs, cfg.lr)
                if teacher is None
                else _distil(model, ctx, teacher, cfg.fine_tune_epochs, cfg.lr)
            ),
        }
        if attention:
            details["heads"] = [
                [b, m.num_attention_heads] for b, m in zip(heads_before, attention, strict=True)
            ]
        model.eval()
        return model, details


def _teacher_outputs(model: torch.nn.Module, ctx: OptimizeContext) -> torch.Tensor:
    """The model's outputs on the training split before it is changed: what it then learns."""
    from optimizers.distillation import batched_scores

    assert ctx.train is not None
    return batched_scores(model.eval(), to_torch(ctx.train[0]), 64, None)


def _distil(
    model: torch.nn.Module, ctx: OptimizeContext, teacher: torch.Tensor, epochs: int, lr: float
) -> dict[str, Any]:
    """Fine-tune on the unchanged model's outputs (``distillation.student``'s loss, T=4)."""
    import torch

    from optimizers.distillation import DistillSettings, distill

    if epochs == 0:
        return {"epochs": 0}
    assert ctx.train is not None
    x, y = ctx.train
    labels = torch.as_tensor(y) if ctx.task == "classification" else None
    settings = DistillSettings(epochs, lr, 64, temperature=4.0, alpha=0.0, seed=ctx.seed)
    return {
        "on": "teacher",
        **distill(model, to_torch(x), teacher, labels, settings, task=ctx.task),
    }


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


class LayerDroppingConfig(OptimizerConfig):
    """Remove whole blocks of the network's repeated stack (a transformer's encoder layers:
    the largest ``ModuleList`` of modules of one class), then train what is left to match the
    model as it was (the teacher) on the training split.

    ``keep`` blocks are kept, spread evenly from the first to the last (searchable), or the
    blocks ``keep_indices`` (0-based). Every kept block and everything around the stack keep
    their trained weights. The loss is that of ``distillation.student``: KL divergence to the
    teacher's outputs softened at ``temperature``, plus ``alpha`` x cross-entropy on the labels;
    squared error to the teacher's outputs for a model without classes. Batches with an
    ``attention_mask`` input drop their all-padding positions, after a check that doing so
    leaves the teacher's outputs unchanged.
    """

    keep: int | None = Field(default=None, ge=1, description="blocks kept, spread evenly")
    keep_indices: tuple[int, ...] | None = Field(
        default=None, min_length=1, description="which blocks are kept, 0-based"
    )
    epochs: int = Field(default=8, ge=0, le=200, description="distillation epochs (0: none)")
    lr: float = Field(default=1e-4, gt=0, le=1, description="AdamW peak learning rate")
    temperature: float = Field(default=4.0, gt=0, le=100, description="softening of the outputs")
    alpha: float = Field(default=0.0, ge=0, le=1, description="weight of the hard-label loss")
    batch_size: int = Field(default=32, ge=1, description="training batch size")

    @model_validator(mode="after")
    def _one_choice(self) -> LayerDroppingConfig:
        if (self.keep is None) == (self.keep_indices is None):
            raise ValueError("say which blocks stay: set exactly one of keep or keep_indices")
        if self.keep_indices is not None and (
            min(self.keep_indices) < 0 or len(set(self.keep_indices)) != len(self.keep_indices)
        ):
            raise ValueError(
                f"keep_indices must be distinct block numbers from 0, got {list(self.keep_indices)}"
            )
        return self


@register
class LayerDropping(TorchOptimizer[LayerDroppingConfig]):
    """Drop blocks of the repeated stack, then distil the cut model from the whole one."""

    key: ClassVar[str] = "pruning.layers"
    tasks: ClassVar[frozenset[str]] = frozenset({"classification", "embedding"})
    config_class: ClassVar[type[OptimizerConfig]] = LayerDroppingConfig
    description: ClassVar[str] = (
        "remove encoder layers (blocks of the repeated stack), distilled from the full model"
    )

    def _apply(
        self, model: torch.nn.Module, ctx: OptimizeContext
    ) -> tuple[torch.nn.Module, dict[str, Any]]:
        import copy

        import numpy as np
        import torch

        from optimizers.distillation import DistillSettings, batched_scores, distill
        from optimizers.tensors import as_inputs

        cfg = self.config
        if ctx.train is None:
            raise ValueError("pruning.layers needs the training split to distil the cut model")
        name, stack = _block_stack(model)
        n = len(stack)
        if cfg.keep is not None:
            if cfg.keep >= n:
                raise ValueError(
                    f"keep is {cfg.keep}, but the model's stack {name} has {n} blocks: "
                    f"keep at most {n - 1}"
                )
            kept = np.rint(np.linspace(0, n - 1, cfg.keep)).astype(int).tolist()
        else:
            kept = sorted(cfg.keep_indices or ())
            if kept[-1] >= n:
                raise ValueError(f"keep_indices is {kept}, but the model's stack {name} has {n} "
                                 f"blocks: indices 0 to {n - 1}")  # fmt: skip
            if len(kept) == n:
                raise ValueError(f"keep_indices is {kept}, every block of the model's stack "
                                 f"{name}: keep at most {n - 1} of them")  # fmt: skip
        x, y = ctx.train
        names = list(as_inputs(x))
        xs = to_torch(x)
        teacher = copy.deepcopy(model).eval()
        mask = names.index("attention_mask") if "attention_mask" in names else None
        trim = _trim_is_exact(teacher, xs, mask, cfg.batch_size)
        targets = batched_scores(teacher, xs, cfg.batch_size, mask if trim else None)
        del teacher
        _keep_blocks(model, stack, kept)
        torch.manual_seed(ctx.seed)
        settings = DistillSettings(cfg.epochs, cfg.lr, cfg.batch_size, cfg.temperature, cfg.alpha,
                                   ctx.seed)  # fmt: skip
        details: dict[str, Any] = {
            "stack": name,
            "blocks": [n, len(kept)],
            "kept": kept,
            "padding_trim": trim if mask is not None else "no attention_mask input",
        }
        if cfg.epochs:
            labels = torch.as_tensor(y) if ctx.task == "classification" else None
            details["distillation"] = distill(model, xs, targets, labels, settings,
                                              task=ctx.task, mask=mask if trim else None)  # fmt: skip
        model.eval()
        return model, details


def _block_stack(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The model's largest ``ModuleList`` (by parameters) of two or more modules of one class:
    the encoder layers of a transformer, the blocks of a residual network."""
    import torch

    stacks = [
        (sum(p.numel() for p in m.parameters()), name, m)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.ModuleList) and len(m) >= 2 and len({type(b) for b in m}) == 1
    ]
    if not stacks:
        raise ValueError(
            f"{type(model).__name__} has no stack of repeated blocks (a torch.nn.ModuleList of "
            "two or more modules of one class) to remove layers from"
        )
    _, name, stack = max(stacks, key=lambda s: s[0])
    return name, stack


def _keep_blocks(model: torch.nn.Module, stack: torch.nn.ModuleList, kept: list[int]) -> None:
    """Keep the blocks ``kept`` of ``stack``, in order, and tell a Hugging Face config (which
    some forwards read) the new depth; blocks that number themselves are renumbered."""
    blocks = [stack[i] for i in kept]
    n = len(stack)
    for i in range(n - 1, -1, -1):
        del stack[i]
    stack.extend(blocks)
    for m in model.modules():
        config = getattr(m, "config", None)
        if getattr(config, "num_hidden_layers", None) == n:
            config.num_hidden_layers = len(kept)  # type: ignore[union-attr]
    for position, block in enumerate(blocks):
        for m in block.modules():
            if isinstance(getattr(m, "layer_idx", None), int):
                m.layer_idx = position  # type: ignore[assignment]


def _trim_is_exact(
    teacher: torch.nn.Module, xs: tuple[torch.Tensor, ...], mask: int | None, batch_size: int
) -> bool:
    """Whether dropping a batch's all-padding positions leaves the teacher's outputs as they
    are (their shape, and their values to float rounding), on the first batches of the
    training split. Per-position outputs (hidden states) change shape: no trimming."""
    import torch

    from optimizers.distillation import padding_trim

    if mask is None:
        return False
    with torch.no_grad():
        for i in range(0, min(len(xs[0]), 4 * batch_size), batch_size):
            rows = tuple(x[i : i + batch_size] for x in xs)
            whole = scores(teacher, *rows)
            trimmed = scores(teacher, *padding_trim(rows, mask))
            tolerance = 1e-4 * float(whole.abs().max())
            if whole.shape != trimmed.shape or not torch.allclose(
                whole, trimmed, rtol=1e-4, atol=tolerance
            ):
                return False
    return True
