"""Low-rank factorization: a layer's weight replaced by the product of two thinner ones."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, model_validator

from optimizers.base import OptimizeContext, OptimizerConfig, TorchOptimizer
from optimizers.registry import register
from optimizers.torch_utils import fine_tune

if TYPE_CHECKING:
    import torch

__all__ = ["SvdFactorization", "SvdFactorizationConfig"]


class SvdFactorizationConfig(OptimizerConfig):
    """Each Linear (out x in) becomes Linear(in -> r) then Linear(r -> out); each convolution
    (out x in x k x k) becomes a k x k convolution to r channels then a 1 x 1 one to out.

    The rank r is ``rank_ratio`` of the full rank, or the fewest singular values keeping
    ``energy`` of the squared spectrum. A layer is left alone where r would not save
    multiply-adds: r must be below in*out/(in+out) (with in*k*k for convolutions).
    """

    rank_ratio: float | None = Field(
        default=None, gt=0, lt=1, description="r as a share of the full rank (or set energy)"
    )
    energy: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="r keeps this share of the squared spectrum (or set rank_ratio)",
    )
    min_params: int = Field(default=4096, ge=0, description="skip layers smaller than this")
    fine_tune_epochs: int = Field(
        default=2, ge=0, le=200, description="fine-tuning epochs after the change (0: none)"
    )
    lr: float = Field(default=1e-3, gt=0, le=1, description="fine-tuning learning rate")

    @model_validator(mode="after")
    def _one_rule(self) -> SvdFactorizationConfig:
        if (self.rank_ratio is None) == (self.energy is None):
            raise ValueError("set exactly one of rank_ratio or energy")
        return self


@register
class SvdFactorization(TorchOptimizer[SvdFactorizationConfig]):
    """Truncated SVD of linear and convolution weights, then optional fine-tuning."""

    key: ClassVar[str] = "low_rank.svd"
    config_class: ClassVar[type[OptimizerConfig]] = SvdFactorizationConfig
    description: ClassVar[str] = (
        "truncated SVD of linear and conv layers (skipped where no FLOPs are saved)"
    )

    def _apply(
        self, model: torch.nn.Module, ctx: OptimizeContext
    ) -> tuple[torch.nn.Module, dict[str, Any]]:
        import torch

        torch.manual_seed(ctx.seed)
        layers: dict[str, Any] = {}
        targets = [(n, m) for n, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear | torch.nn.Conv2d) and m.weight.numel() >= self.config.min_params]  # fmt: skip
        for name, module in targets:
            replacement, info = self._factor(module)
            layers[name] = info
            if replacement is not None:
                parent_name, _, attr = name.rpartition(".")
                setattr(
                    model.get_submodule(parent_name) if parent_name else model, attr, replacement
                )
        factored = [n for n, i in layers.items() if i["rank"] is not None]
        if not factored:
            raise ValueError(
                "no layer was factored: at these settings no rank would save multiply-adds "
                f"(layers considered: {sorted(layers) or 'none above min_params'})"
            )
        tuned = fine_tune(model, ctx, self.config.fine_tune_epochs, self.config.lr)
        model.eval()
        return model, {"layers": layers, "factored": factored, "fine_tune": tuned}

    def _rank(self, s: torch.Tensor) -> int:
        cfg = self.config
        if cfg.rank_ratio is not None:
            return max(1, round(cfg.rank_ratio * s.numel()))
        energy = cfg.energy if cfg.energy is not None else 1.0
        return int((torch_cumsum_share(s) < energy).sum().item()) + 1

    def _factor(self, module: torch.nn.Module) -> tuple[torch.nn.Module | None, dict[str, Any]]:
        import torch

        weight = torch.as_tensor(module.weight).detach()
        if isinstance(module, torch.nn.Conv2d) and module.groups != 1:
            return None, {
                "shape": list(weight.shape),
                "rank": None,
                "skipped": "grouped convolution",
            }
        matrix = weight.reshape(weight.shape[0], -1)  # (out, in * k * k)
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        rank = self._rank(s)
        break_even = matrix.shape[0] * matrix.shape[1] / (matrix.shape[0] + matrix.shape[1])
        info: dict[str, Any] = {"shape": list(weight.shape), "full_rank": int(s.numel()), "rank": None,
                                "break_even": round(break_even, 1)}  # fmt: skip
        if rank >= break_even:
            info["skipped"] = (
                f"rank {rank} would not save multiply-adds (break-even {break_even:.1f})"
            )
            return None, info
        root = s[:rank].sqrt()
        first = root[:, None] * vh[:rank]  # (r, in*k*k)
        second = u[:, :rank] * root[None, :]  # (out, r)
        bias = module.bias
        has_bias = isinstance(bias, torch.Tensor)
        a: torch.nn.Linear | torch.nn.Conv2d
        b: torch.nn.Linear | torch.nn.Conv2d
        if isinstance(module, torch.nn.Linear):
            a = torch.nn.Linear(module.in_features, rank, bias=False)
            b = torch.nn.Linear(rank, module.out_features, bias=has_bias)
            a.weight.data.copy_(first)
            b.weight.data.copy_(second)
        elif isinstance(
            module, torch.nn.Conv2d
        ):  # a k x k convolution to `rank` channels, then 1 x 1
            geometry: dict[str, Any] = {"kernel_size": module.kernel_size, "stride": module.stride,
                                        "padding": module.padding, "dilation": module.dilation}  # fmt: skip
            a = torch.nn.Conv2d(module.in_channels, rank, bias=False, **geometry)
            b = torch.nn.Conv2d(rank, module.out_channels, 1, bias=has_bias)
            a.weight.data.copy_(first.reshape(rank, *weight.shape[1:]))
            b.weight.data.copy_(second.reshape(module.out_channels, rank, 1, 1))
        else:
            return None, {**info, "skipped": f"{type(module).__name__} is not supported"}
        if has_bias and isinstance(bias, torch.Tensor) and b.bias is not None:
            b.bias.data.copy_(bias.detach())
        info["rank"] = rank
        info["kept_energy"] = round(float((s[:rank] ** 2).sum() / (s**2).sum()), 4)
        return torch.nn.Sequential(a, b), info


def torch_cumsum_share(s: torch.Tensor) -> torch.Tensor:
    """Cumulative share of the squared spectrum."""
    energy = s**2
    return energy.cumsum(0) / energy.sum()
