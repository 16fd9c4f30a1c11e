"""Feature selection and PCA for tabular models: fewer inputs reach the first layer.

The exported model still takes the full rows it was trained on: the selection (a Gather) or the
projection (a MatMul) is inside the ONNX graph, so serving needs nothing extra.

Supported families: models whose first layer is a Linear over the input features: the built-in
``tabular_mlp`` (its standardization is narrowed too) and a ``Sequential`` starting with a Linear.
Others are refused by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from optimizers.base import OptimizeContext, OptimizerConfig, TorchOptimizer
from optimizers.registry import register
from optimizers.tensors import Features
from optimizers.torch_utils import fine_tune

if TYPE_CHECKING:
    import torch

__all__ = ["FeatureSelection", "FeatureSelectionConfig", "PcaProjection", "PcaProjectionConfig"]


def _replace_first(model: torch.nn.Module, scaler: Any, layer: torch.nn.Module) -> None:
    """Put ``layer`` where the first Linear was (Sequential children are named "0", "1", ...)."""
    (scaler.get_submodule("net") if scaler is not None else model).register_module("0", layer)


def _tabular(x: Features, key: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{key} selects table columns; the data has tensor inputs {sorted(x)}")
    return x


def _first_linear(model: torch.nn.Module, n_features: int) -> tuple[torch.nn.Linear, Any]:
    """The model's first Linear and, for the built-in tabular MLP, the module holding its scaling."""
    import torch

    scaler = model if hasattr(model, "mean") and hasattr(model, "scale") else None
    first: torch.nn.Module | None = None
    if scaler is not None:
        first = scaler.get_submodule("net.0")
    elif isinstance(model, torch.nn.Sequential) and len(model) > 0:
        first = model.get_submodule("0")
    if not isinstance(first, torch.nn.Linear) or first.in_features != n_features:
        raise ValueError(
            f"feature selection supports models whose first layer is a Linear over the "
            f"{n_features} input features (tabular_mlp, or a Sequential starting with Linear); "
            f"{type(model).__name__} is not one"
        )
    return first, scaler


class _Selected:
    """Builds the wrapper that gathers columns, outside the class body for torch's lazy import."""

    @staticmethod
    def build(inner: torch.nn.Module, columns: np.ndarray) -> torch.nn.Module:
        import torch

        class Selected(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = inner
                self.register_buffer("columns", torch.as_tensor(columns, dtype=torch.long))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.inner(x.index_select(1, self.get_buffer("columns")))  # type: ignore[no-any-return]

        return Selected()


class FeatureSelectionConfig(OptimizerConfig):
    """Keep the ``keep`` most informative input columns (a count, or a share if below 1)."""

    method: Literal["mutual_info", "rfe"] = Field(
        default="mutual_info",
        description="mutual information with the label, or recursive feature elimination",
    )
    keep: float = Field(
        default=0.5, gt=0, description="columns kept: a count (1 or more), or a share (below 1)"
    )
    fine_tune_epochs: int = Field(
        default=5, ge=0, le=500, description="fine-tuning epochs after the change (0: none)"
    )
    lr: float = Field(default=1e-3, gt=0, le=1, description="fine-tuning learning rate")


@register
class FeatureSelection(TorchOptimizer[FeatureSelectionConfig]):
    """Select input columns by mutual information or recursive feature elimination."""

    key: ClassVar[str] = "features.select"
    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})
    config_class: ClassVar[type[OptimizerConfig]] = FeatureSelectionConfig
    description: ClassVar[str] = (
        "keep the most informative input columns (mutual information or RFE)"
    )

    def _apply(
        self, model: torch.nn.Module, ctx: OptimizeContext
    ) -> tuple[torch.nn.Module, dict[str, Any]]:
        import torch

        cfg = self.config
        if ctx.train is None:
            raise ValueError("feature selection needs the training split")
        x, y = _tabular(ctx.train[0], self.key), ctx.train[1]
        n = x.shape[1]
        first, scaler = _first_linear(model, n)
        k = int(cfg.keep) if cfg.keep >= 1 else max(1, round(cfg.keep * n))
        if k >= n:
            raise ValueError(f"keep={cfg.keep} keeps all {n} columns; nothing would be removed")
        columns = np.sort(_rank(cfg.method, x, y, ctx.seed)[:k])
        idx = torch.as_tensor(columns, dtype=torch.long)
        shrunk = torch.nn.Linear(k, first.out_features)
        with torch.no_grad():
            shrunk.weight.copy_(first.weight[:, idx])
            shrunk.bias.copy_(first.bias)
        _replace_first(model, scaler, shrunk)
        if scaler is not None:
            for name in ("mean", "scale"):
                scaler.register_buffer(name, scaler.get_buffer(name)[idx].clone())
        wrapped = _Selected.build(model, columns)
        tuned = fine_tune(wrapped, ctx, cfg.fine_tune_epochs, cfg.lr)
        wrapped.eval()
        return wrapped, {"method": cfg.method, "kept": int(k), "of": int(n), "columns": columns.tolist(),
                         "fine_tune": tuned}  # fmt: skip


def _rank(method: str, x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Column indices, most informative first."""
    from sklearn.preprocessing import StandardScaler

    xs = StandardScaler().fit_transform(x)
    if method == "mutual_info":
        from sklearn.feature_selection import mutual_info_classif

        scores = mutual_info_classif(xs, y, random_state=seed)
        return np.argsort(-scores, kind="stable")
    from sklearn.feature_selection import RFE
    from sklearn.linear_model import LogisticRegression

    rfe = RFE(LogisticRegression(max_iter=2000), n_features_to_select=1).fit(xs, y)
    return np.argsort(rfe.ranking_, kind="stable")


class PcaProjectionConfig(OptimizerConfig):
    """Project the inputs on their first principal components: ``components`` is a count, or
    the share of variance to keep if below 1."""

    components: float = Field(
        default=0.95,
        gt=0,
        description="components kept: a count (1 or more), or the share of variance (below 1)",
    )
    fine_tune_epochs: int = Field(
        default=5, ge=0, le=500, description="fine-tuning epochs after the change (0: none)"
    )
    lr: float = Field(default=1e-3, gt=0, le=1, description="fine-tuning learning rate")


@register
class PcaProjection(TorchOptimizer[PcaProjectionConfig]):
    """A fixed PCA projection in front of a narrower first layer."""

    key: ClassVar[str] = "features.pca"
    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})
    config_class: ClassVar[type[OptimizerConfig]] = PcaProjectionConfig
    description: ClassVar[str] = "project inputs on principal components, inside the exported model"

    def _apply(
        self, model: torch.nn.Module, ctx: OptimizeContext
    ) -> tuple[torch.nn.Module, dict[str, Any]]:
        import torch

        cfg = self.config
        if ctx.train is None:
            raise ValueError("PCA needs the training split")
        x = _tabular(ctx.train[0], self.key).astype(np.float64)
        n = x.shape[1]
        first, scaler = _first_linear(model, n)
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
        _, s, vt = np.linalg.svd((x - mean) / std, full_matrices=False)
        if cfg.components >= 1:
            k = int(cfg.components)
        else:
            share = np.cumsum(s**2) / np.sum(s**2)
            k = int(np.searchsorted(share, cfg.components) + 1)
        if k >= n:
            raise ValueError(
                f"components={cfg.components} keeps all {n} dimensions; nothing would shrink"
            )
        basis = vt[:k]  # (k, n), orthonormal rows
        # p = basis @ z for standardized z, and z ~= basis.T @ p: rewrite the first layer on p
        old = first.weight.detach().double().numpy()
        bias = first.bias.detach().double().numpy()
        if scaler is not None:  # the MLP standardized internally: its first layer saw z
            scaler.register_buffer("mean", torch.zeros(k))
            scaler.register_buffer("scale", torch.ones(k))
            w = old @ basis.T
        else:  # the first layer saw x = mean + std * z
            w = (old * std[None, :]) @ basis.T
            bias = bias + old @ mean
        shrunk = torch.nn.Linear(k, first.out_features)
        with torch.no_grad():
            shrunk.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
            shrunk.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        _replace_first(model, scaler, shrunk)
        projection = torch.nn.Linear(n, k)
        with torch.no_grad():  # p = basis @ ((x - mean) / std), as one affine layer
            projection.weight.copy_(torch.as_tensor(basis / std, dtype=torch.float32))
            projection.bias.copy_(torch.as_tensor(-(basis / std) @ mean, dtype=torch.float32))
        projection.requires_grad_(False)
        wrapped = torch.nn.Sequential(projection, model)
        tuned = fine_tune(wrapped, ctx, cfg.fine_tune_epochs, cfg.lr)
        wrapped.eval()
        kept = float(np.sum(s[:k] ** 2) / np.sum(s**2))
        return wrapped, {
            "components": k,
            "of": n,
            "variance_kept": round(kept, 4),
            "fine_tune": tuned,
        }
