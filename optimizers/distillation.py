"""Knowledge distillation: a smaller student trained to match the baseline (the teacher)."""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from optimizers.base import OptimizeContext, OptimizerConfig, TorchOptimizer
from optimizers.registry import register
from optimizers.tensors import to_torch
from optimizers.torch_utils import scores

if TYPE_CHECKING:
    import torch

__all__ = ["DistillSettings", "Distillation", "DistillationConfig", "distill", "padding_trim"]


class DistillationConfig(OptimizerConfig):
    """The student is a built-in architecture at ``width`` (a multiplier of its channels and
    units), or ``factory`` (``module:function`` called with ``kwargs``). The loss is
    ``alpha`` x cross-entropy on the labels + (1 - ``alpha``) x T^2 x KL(teacher || student)
    on outputs softened by the temperature T."""

    builtin: Literal["digits_cnn", "tabular_mlp"] | None = Field(
        default=None, description="the student's built-in architecture (or set factory)"
    )
    width: float = Field(
        default=0.5,
        gt=0,
        le=8,
        description="the built-in student's width, a multiple of the teacher's",
    )
    factory: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function that builds the student (or set builtin)",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of factory")
    temperature: float = Field(
        default=4.0, gt=0, le=100, description="T: how much the teacher's outputs are softened"
    )
    alpha: float = Field(default=0.3, ge=0, le=1, description="weight of the hard-label loss")
    epochs: int = Field(default=15, ge=1, le=1000, description="training epochs of the student")
    lr: float = Field(default=3e-3, gt=0, le=1, description="Adam learning rate")
    batch_size: int = Field(default=64, ge=1, description="training batch size")

    @model_validator(mode="after")
    def _one_student(self) -> DistillationConfig:
        if (self.builtin is None) == (self.factory is None):
            raise ValueError("name the student: set exactly one of builtin or factory")
        return self


@register
class Distillation(TorchOptimizer[DistillationConfig]):
    """Train a smaller student on the teacher's softened outputs and the labels."""

    key: ClassVar[str] = "distillation.student"
    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})
    config_class: ClassVar[type[OptimizerConfig]] = DistillationConfig
    description: ClassVar[str] = (
        "train a smaller student (width multiplier or factory) on the baseline's outputs"
    )

    def _student(self, x: Any, n_classes: int) -> torch.nn.Module:
        import torch

        from optimizers.torch_utils import build_builtin

        cfg = self.config
        if cfg.builtin is not None:
            return build_builtin(cfg.builtin, cfg.width, x, n_classes)
        module_name, _, attr = (cfg.factory or "").partition(":")
        student = getattr(importlib.import_module(module_name), attr)(**cfg.kwargs)
        if not isinstance(student, torch.nn.Module):
            raise ValueError(
                f"factory {cfg.factory!r} returned {type(student).__name__}, not a torch.nn.Module"
            )
        return student

    def _apply(
        self, model: torch.nn.Module, ctx: OptimizeContext
    ) -> tuple[torch.nn.Module, dict[str, Any]]:
        import torch

        cfg = self.config
        if ctx.train is None:
            raise ValueError("distillation needs the training split")
        x_np, y_np = ctx.train
        xs, y = to_torch(x_np), torch.as_tensor(y_np)
        teacher = model.eval()
        with torch.no_grad():
            soft = scores(teacher, *xs)
        torch.manual_seed(ctx.seed)
        student = self._student(x_np, int(soft.shape[1]))
        with torch.no_grad():
            shape = scores(student, *(t[:2] for t in xs)).shape
            if shape != soft[:2].shape:
                raise ValueError(
                    f"the student's outputs have shape {list(shape[1:])}, "
                    f"the teacher's {list(soft.shape[1:])}"
                )
        settings = DistillSettings(cfg.epochs, cfg.lr, cfg.batch_size, cfg.temperature, cfg.alpha,
                                   ctx.seed)  # fmt: skip
        trained = distill(student, xs, soft, y, settings)
        return student, {
            "student": cfg.builtin or cfg.factory,
            "width": cfg.width if cfg.builtin else None,
            **trained,
        }


@dataclass(frozen=True)
class DistillSettings:
    epochs: int
    lr: float
    batch_size: int
    temperature: float  # T: how much the teacher's outputs are softened
    alpha: float  # weight of the hard-label loss (classification)
    seed: int


def distill(
    student: torch.nn.Module,
    xs: tuple[torch.Tensor, ...],
    teacher: torch.Tensor,
    labels: torch.Tensor | None,
    settings: DistillSettings,
    *,
    task: str = "classification",
    mask: int | None = None,
) -> dict[str, Any]:
    """Train ``student`` on the inputs ``xs`` to match the ``teacher``'s outputs on them, with
    AdamW and a one-cycle schedule.

    Classification: ``alpha`` x cross-entropy on ``labels`` + (1 - ``alpha``) x T^2 x
    KL(teacher || student) at temperature T; any other task: squared error to the teacher's
    outputs. ``mask`` is the position in ``xs`` of an attention mask whose all-padding trailing
    columns each batch drops (:func:`padding_trim`; only where the caller checked that this
    leaves the outputs unchanged)."""
    import torch
    from torch.nn import functional

    n = len(teacher)
    gen = torch.Generator().manual_seed(settings.seed)
    steps = settings.epochs * ((n + settings.batch_size - 1) // settings.batch_size)
    opt = torch.optim.AdamW(student.parameters(), lr=settings.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=steps)
    t = settings.temperature
    start = time.perf_counter()
    losses = []
    student.train()
    for _ in range(settings.epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, settings.batch_size):
            idx = perm[i : i + settings.batch_size]
            out = scores(student, *padding_trim(tuple(x[idx] for x in xs), mask))
            if task != "classification":
                loss = functional.mse_loss(out, teacher[idx])
            else:
                loss = (1 - settings.alpha) * functional.kl_div(
                    functional.log_softmax(out / t, dim=1),
                    functional.softmax(teacher[idx] / t, dim=1),
                    reduction="batchmean",
                ) * (t * t)  # fmt: skip
                if settings.alpha > 0 and labels is not None:
                    loss = loss + settings.alpha * functional.cross_entropy(out, labels[idx])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / n)
    student.eval()
    details: dict[str, Any] = {"epochs": settings.epochs, "final_loss": losses[-1]}
    if task == "classification":
        with torch.no_grad():
            out = batched_scores(student, xs, settings.batch_size, mask)
        agreement = float((out.argmax(1) == teacher.argmax(1)).float().mean())
        details["train_agreement_with_teacher"] = round(agreement, 4)
    details["seconds"] = time.perf_counter() - start
    return details


def padding_trim(xs: tuple[torch.Tensor, ...], mask: int | None) -> tuple[torch.Tensor, ...]:
    """The batch without its trailing sequence positions that are padding in every row (0 in
    the attention mask ``xs[mask]``), cut from every input of the mask's shape. For an encoder
    whose attention and pooling respect the mask this changes no output and saves the work on
    padding, often most of a padded batch."""
    if mask is None:
        return xs
    m = xs[mask]
    used = m.any(dim=0).nonzero()
    length = int(used.max()) + 1 if len(used) else m.shape[1]
    if length == m.shape[1]:
        return xs
    return tuple(x[:, :length] if x.shape[:2] == m.shape else x for x in xs)


def batched_scores(
    model: torch.nn.Module, xs: tuple[torch.Tensor, ...], batch_size: int, mask: int | None
) -> torch.Tensor:
    """``scores`` of every row, a batch at a time (each trimmed of its padding)."""
    import torch

    n = len(xs[0])
    with torch.no_grad():
        return torch.cat([
            scores(model, *padding_trim(tuple(x[i : i + batch_size] for x in xs), mask))
            for i in range(0, n, batch_size)
        ])  # fmt: skip
