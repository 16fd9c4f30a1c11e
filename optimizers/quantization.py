"""Post-training quantization with ONNX Runtime."""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import Field

if TYPE_CHECKING:
    import torch

from optimizers.base import OnnxOptimizer, OptimizeContext, OptimizerConfig, TorchOptimizer
from optimizers.onnx_utils import session
from optimizers.registry import register
from optimizers.tensors import Features, feeds, n_rows, subset, take

__all__ = [
    "DynamicInt8Quantization",
    "DynamicInt8QuantizationConfig",
    "Fp16Conversion",
    "Fp16ConversionConfig",
    "MixedPrecisionInt8",
    "MixedPrecisionInt8Config",
    "QuantizationAwareTraining",
    "QuantizationAwareTrainingConfig",
    "SmoothQuantInt8",
    "SmoothQuantInt8Config",
    "StaticInt8Quantization",
    "StaticInt8QuantizationConfig",
]

DynamicOpType = Literal["MatMul", "Conv", "Attention", "LSTM", "Gather"]


class DynamicInt8QuantizationConfig(OptimizerConfig):
    """Weights stored as int8; activations quantized on the fly at every inference.

    ``op_types`` leaves out ``Conv`` by default: ONNX Runtime's dynamic ``ConvInteger`` is
    usually slower than the fp32 convolution on CPUs (2.6x slower on the built-in CNN here),
    so convolutions are better served by static quantization. ``Gemm`` layers are rewritten
    to ``MatMul`` and quantized with them.
    """

    per_channel: bool = Field(
        default=False,
        description="one weight scale per output channel: closer to fp32, a bit slower",
    )
    reduce_range: bool = Field(
        default=False, description="7-bit weights, for CPUs without VNNI where int8 saturates"
    )
    weight_type: Literal["int8", "uint8"] = Field(default="int8", description="weight data type")
    op_types: tuple[DynamicOpType, ...] = Field(
        default=("MatMul", "Attention", "LSTM", "Gather"),
        min_length=1,
        description="operator types quantized (Conv is slow as dynamic int8 on CPUs)",
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
                # ONNX shape inference cannot type the outputs of ONNX Runtime's fused contrib
                # ops (after graph.transformer_fusion); the model is fp32, so say so.
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        after = Counter(node.op_type for node in onnx.load(str(dst)).graph.node)
        return {
            "op_types_before": dict(sorted(before.items())),
            "op_types_after": dict(sorted(after.items())),
            "integer_nodes": sum(after[op] for op in _INTEGER_OPS),
        }


_INTEGER_OPS = ("MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM", "QAttention")


_CALIBRATION = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class StaticInt8QuantizationConfig(OptimizerConfig):
    """int8 weights and activations in QDQ format, scales calibrated on the calibration split.

    Unlike dynamic quantization this also speeds up convolutions: activation scales are fixed
    ahead of time, so ONNX Runtime fuses QuantizeLinear/DequantizeLinear pairs into int8 kernels.
    """

    calibration: Literal["minmax", "entropy", "percentile"] = Field(
        default="minmax", description="how activation ranges are set from the calibration split"
    )
    per_channel: bool = Field(default=True, description="one weight scale per output channel")
    calibration_rows: int = Field(
        default=256, ge=8, description="rows of the calibration split used"
    )
    batch_size: int = Field(default=16, ge=1, description="calibration batch size")
    activation_type: Literal["uint8", "int8"] = Field(
        default="uint8", description="activation data type (uint8: asymmetric)"
    )
    nodes_to_exclude: tuple[str, ...] = Field(default=(), description="node names kept in fp32")
    histogram_bins: int = Field(
        default=2048,
        ge=256,
        description="entropy and percentile: bins of the activation histograms",
    )
    percentile: float = Field(default=99.999, gt=50, lt=100, description="percentile calibration")


@register
class StaticInt8Quantization(OnnxOptimizer[StaticInt8QuantizationConfig]):
    """Static int8 quantization (QDQ) with ``onnxruntime.quantization.quantize_static``."""

    key: ClassVar[str] = "quantization.static_int8"
    version: ClassVar[int] = 2  # 2: entropy calibration really searches a clipping threshold
    config_class: ClassVar[type[OptimizerConfig]] = StaticInt8QuantizationConfig
    description: ClassVar[str] = (
        "int8 weights and activations (QDQ), calibrated on the calibration split"
    )

    def _apply(self, src: Path, dst: Path, ctx: OptimizeContext) -> dict[str, Any]:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
        from onnxruntime.quantization.shape_inference import quant_pre_process

        cfg = self.config
        x = _calibration_rows(ctx, cfg.batch_size, cfg.calibration_rows)
        n = n_rows(x) - n_rows(x) % cfg.batch_size  # equal batches: histograms need one shape
        model_inputs = session(src, ctx.threads).get_inputs()
        batches = [
            feeds(model_inputs, take(x, slice(i, i + cfg.batch_size)), str(src))
            for i in range(0, n, cfg.batch_size)
        ]

        class Reader(CalibrationDataReader):  # type: ignore[misc]
            def __init__(self) -> None:
                self._it = iter(batches)

            def get_next(self) -> dict[str, Any] | None:
                return next(self._it, None)

        prepared = ctx.workdir / f"{src.stem}-preprocessed.onnx"
        ranges = ctx.workdir / f"{src.stem}-ranges.json"
        method = getattr(CalibrationMethod, _CALIBRATION[cfg.calibration])
        # histogram calibration reports progress with print(); keep it off the user's terminal
        with _root_logger_at(logging.ERROR), contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(src), str(prepared))  # shape inference, as ORT recommends
            # Calibrated here rather than inside quantize_static, which cannot pass histogram
            # sizes: with its defaults (128 bins, 128 quantized bins) the entropy search has one
            # candidate, the whole range, and Entropy gives exactly the MinMax model.
            calibrator = create_calibrator(
                str(prepared), augmented_model_path=str(ctx.workdir / "augmented.onnx"),
                calibrate_method=method,
                extra_options={"num_bins": cfg.histogram_bins, "num_quantized_bins": 128,
                               "percentile": cfg.percentile},
            )  # fmt: skip
            calibrator.collect_data(Reader())
            save_tensors_data(calibrator.compute_data(), ranges)
            quantize_static(
                str(prepared),
                str(dst),
                None,
                calibration_cache_path=str(ranges),
                quant_format=QuantFormat.QDQ,
                per_channel=cfg.per_channel,
                calibrate_method=method,
                activation_type=QuantType.QUInt8
                if cfg.activation_type == "uint8"
                else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(cfg.nodes_to_exclude),
            )
        after = Counter(node.op_type for node in onnx.load(str(dst)).graph.node)
        return {"calibration_rows": n, "qdq_pairs": after["DequantizeLinear"],
                "op_types_after": dict(sorted(after.items()))}  # fmt: skip


def _calibration_rows(ctx: OptimizeContext, batch_size: int, limit: int) -> Features:
    """The first ``limit`` rows of the calibration split; an error when it has fewer than
    one batch."""
    rows = 0 if ctx.calibration is None else n_rows(ctx.calibration[0])
    if ctx.calibration is None or rows < batch_size:
        raise ValueError(
            f"static quantization needs at least batch_size={batch_size} calibration rows; the "
            f"calibration split has {rows} (raise split.calibration)"
        )
    return subset(ctx.calibration[0], slice(0, limit))


class Fp16ConversionConfig(OptimizerConfig):
    """fp16 weights and activations. On CPUs a size optimization only: the CPU execution
    provider has few fp16 kernels, inserts casts and usually runs slower."""

    keep_io_types: bool = Field(default=True, description="inputs and outputs stay fp32")
    op_block_list: tuple[str, ...] = Field(default=(), description="op types kept in fp32")


@register
class Fp16Conversion(OnnxOptimizer[Fp16ConversionConfig]):
    """fp16 conversion with ONNX Runtime's float16 converter."""

    key: ClassVar[str] = "quantization.fp16"
    config_class: ClassVar[type[OptimizerConfig]] = Fp16ConversionConfig
    description: ClassVar[str] = (
        "fp16 weights and activations (half the bytes; on CPU usually slower)"
    )

    def _apply(self, src: Path, dst: Path, ctx: OptimizeContext) -> dict[str, Any]:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
        from onnxruntime.transformers.onnx_model import OnnxModel

        cfg = self.config
        model = onnx.load(str(src))
        kwargs: dict[str, Any] = {"keep_io_types": cfg.keep_io_types}
        if cfg.op_block_list:
            kwargs["op_block_list"] = list(cfg.op_block_list)
        with _root_logger_at(logging.ERROR):
            converted = convert_float_to_float16(model, **kwargs)
            # the converter appends its input casts at the end: put nodes back in order,
            # or the file is not a valid ONNX graph (ONNX Runtime tolerates it; others do not)
            OnnxModel(converted).topological_sort()
        onnx.save(converted, str(dst))
        casts = sum(node.op_type == "Cast" for node in converted.graph.node)
        return {"casts": casts, "keep_io_types": cfg.keep_io_types}


@contextmanager
def _root_logger_at(level: int) -> Iterator[None]:
    """onnxruntime.quantization logs advice to the root logger on every call; mute it."""
    previous = logging.root.level
    logging.root.setLevel(level)
    try:
        yield
    finally:
        logging.root.setLevel(previous)


class QuantizationAwareTrainingConfig(OptimizerConfig):
    """Fine-tune with int8 fake quantization (per-channel symmetric weights, per-tensor
    activations with running ranges; gradients pass straight through), then snap the weights
    to their int8 grid. Follow it with ``quantization.static_int8`` for the real int8 model."""

    epochs: int = Field(default=3, ge=1, le=200, description="fine-tuning epochs")
    lr: float = Field(default=5e-4, gt=0, le=1, description="learning rate")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="of the activation-range averages")


@register
class QuantizationAwareTraining(TorchOptimizer[QuantizationAwareTrainingConfig]):
    """Quantization-aware fine-tuning of linear and conv layers."""

    key: ClassVar[str] = "quantization.qat"
    config_class: ClassVar[type[OptimizerConfig]] = QuantizationAwareTrainingConfig
    description: ClassVar[str] = (
        "fine-tune with int8 fake quantization (then quantization.static_int8)"
    )

    def _apply(
        self, model: torch.nn.Module, ctx: OptimizeContext
    ) -> tuple[torch.nn.Module, dict[str, Any]]:
        import torch
        from torch.nn.utils import parametrize

        from optimizers.torch_utils import fine_tune, weight_layers

        cfg = self.config
        layers = [m for _, m in weight_layers(model)]
        ranges: dict[int, list[float]] = {}

        class FakeQuantWeight(torch.nn.Module):
            """Per-channel symmetric int8, with straight-through gradients."""

            def forward(self, w: torch.Tensor) -> torch.Tensor:
                flat = w.detach().reshape(w.shape[0], -1)
                scale = (flat.abs().amax(dim=1) / 127).clamp(min=1e-8)
                zero = torch.zeros(w.shape[0], dtype=torch.int32)
                return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -128, 127)

        def fake_quant_input(
            module: torch.nn.Module, args: tuple[torch.Tensor, ...]
        ) -> tuple[torch.Tensor, ...]:
            x = args[0]
            lo, hi = float(x.detach().min()), float(x.detach().max())
            seen = ranges.setdefault(id(module), [lo, hi])
            if module.training:  # running averages of the activation range, as observers keep
                seen[0] = cfg.momentum * seen[0] + (1 - cfg.momentum) * lo
                seen[1] = cfg.momentum * seen[1] + (1 - cfg.momentum) * hi
            lo, hi = min(seen[0], 0.0), max(seen[1], 0.0)
            scale = max((hi - lo) / 255, 1e-8)
            zero = round(-lo / scale)
            return (torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255), *args[1:])

        handles = [m.register_forward_pre_hook(fake_quant_input) for m in layers]
        for m in layers:
            parametrize.register_parametrization(m, "weight", FakeQuantWeight())
        try:
            tuned = fine_tune(model, ctx, cfg.epochs, cfg.lr)
        finally:
            for h in handles:
                h.remove()
            for m in layers:
                # keeps the fake-quantized values: the weights now sit on their int8 grid
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        model.eval()
        return model, {"layers": len(layers), "fine_tune": tuned}


class SmoothQuantInt8Config(OptimizerConfig):
    """Static int8 of the matrix products (MatMul and Gemm with a weight) only, for attention
    models: every other operator (LayerNorm, Softmax, Add, the attention mask) stays fp32.

    Activation outliers are migrated into the weights first (SmoothQuant): ``alpha`` 0 leaves
    activations as they are, 1 moves all of their range into the weights; 0.5 is the
    SmoothQuant paper's default. Each product gets its own Q/DQ pair, which ONNX Runtime's CPU
    provider fuses into one integer kernel. Embedding tables become int8 with a scale per row,
    dequantized after the lookup.
    """

    alpha: float = Field(default=0.5, ge=0, le=1, description="SmoothQuant migration strength")
    per_channel: bool = Field(default=True, description="one weight scale per output channel")
    activation_type: Literal["uint8", "int8"] = Field(
        default="uint8", description="uint8: asymmetric activations; int8: symmetric"
    )
    quantize_embeddings: bool = Field(default=True, description="int8 embedding tables")
    calibration_rows: int = Field(default=256, ge=8, description="rows of the calibration split")
    batch_size: int = Field(
        default=16, ge=1, description="calibration batch: bounds calibration's memory"
    )
    nodes_to_exclude: tuple[str, ...] = Field(default=(), description="node names kept in fp32")


C_ = TypeVar("C_", bound=SmoothQuantInt8Config)


class _MatMulInt8(OnnxOptimizer[C_]):
    """Calibrate once, choose the products to quantize (``_choose``), write the QDQ model."""

    def _apply(self, src: Path, dst: Path, ctx: OptimizeContext) -> dict[str, Any]:
        import onnx

        from optimizers import qdq

        cfg: SmoothQuantInt8Config = self.config
        sites = qdq.find_sites(onnx.load(str(src), load_external_data=False))
        if not sites:
            raise ValueError(
                f"{src.name} has no MatMul or Gemm with a weight to quantize; {self.key} "
                "quantizes the matrix products of a network"
            )
        names = {s.node for s in sites}
        unknown = sorted(set(cfg.nodes_to_exclude) - names)
        if unknown:
            raise ValueError(
                f"nodes_to_exclude names nodes that are not matrix products of {src.name}: "
                f"{unknown}; its products are e.g. {sorted(names)[:5]}"
            )
        x = _calibration_rows(ctx, cfg.batch_size, cfg.calibration_rows)
        calibration = qdq.calibrate(src, sites, x, cfg.batch_size, ctx.threads)
        candidates = [s for s in sites if s.node not in cfg.nodes_to_exclude]

        def write(chosen: list[qdq.Site], path: Path) -> dict[str, Any]:
            return qdq.quantize_sites(
                src, path, chosen, calibration, alpha=cfg.alpha, per_channel=cfg.per_channel,
                symmetric_activations=cfg.activation_type == "int8",
                embeddings=cfg.quantize_embeddings,
            )  # fmt: skip

        chosen, choice = self._choose(src, candidates, x, write, ctx)
        details = write(chosen, dst)
        return {
            **details,
            **choice,
            "kept_fp32": sorted(names - {s.node for s in chosen}),
            "calibration": {
                "rows": calibration.rows,
                "batch_activation_mb": round(calibration.batch_bytes / 1e6, 1),
                "peak_rss_mb": round(calibration.peak_rss_mb, 1),
            },
        }

    def _choose(
        self,
        src: Path,
        sites: list[Any],
        x: Features,
        write: Callable[[list[Any], Path], dict[str, Any]],
        ctx: OptimizeContext,
    ) -> tuple[list[Any], dict[str, Any]]:
        return sites, {}


@register
class SmoothQuantInt8(_MatMulInt8[SmoothQuantInt8Config]):
    """SmoothQuant-style static int8 of every matrix product; everything else fp32."""

    key: ClassVar[str] = "quantization.smoothquant_int8"
    config_class: ClassVar[type[OptimizerConfig]] = SmoothQuantInt8Config
    description: ClassVar[str] = (
        "static int8 of MatMul/Gemm only (QDQ that ONNX Runtime fuses), SmoothQuant migration"
    )


class MixedPrecisionInt8Config(SmoothQuantInt8Config):
    """``quantization.smoothquant_int8`` that keeps the most sensitive products in fp32.

    Each product's sensitivity is the fidelity lost with only it quantized: 1 minus the mean
    cosine between the model's outputs and the fp32 outputs on ``sensitivity_rows``
    calibration rows. Products are kept in fp32 one at a time, most sensitive per weight
    first (a small sensitive projection costs less speed than a wide FFN layer), until the
    whole model's cosine on those rows reaches ``min_cosine`` or ``max_fp32`` of them are kept
    (the model is written either way; the details say which was reached).
    """

    min_cosine: float = Field(
        default=0.998, gt=0, le=1, description="output cosine to reach on the calibration rows"
    )
    max_fp32: float = Field(
        default=0.25, ge=0, lt=1, description="at most this share of the products kept fp32"
    )
    sensitivity_rows: int = Field(default=64, ge=8, description="calibration rows measured")


@register
class MixedPrecisionInt8(_MatMulInt8[MixedPrecisionInt8Config]):
    """Accuracy-aware mixed precision: int8 products, the most sensitive kept fp32."""

    key: ClassVar[str] = "quantization.mixed_int8"
    config_class: ClassVar[type[OptimizerConfig]] = MixedPrecisionInt8Config
    description: ClassVar[str] = (
        "smoothquant_int8 keeping the products most sensitive to int8 in fp32, to a fidelity goal"
    )

    def _choose(
        self,
        src: Path,
        sites: list[Any],
        x: Features,
        write: Callable[[list[Any], Path], dict[str, Any]],
        ctx: OptimizeContext,
    ) -> tuple[list[Any], dict[str, Any]]:
        from optimizers.onnx_utils import infer
        from validation.stats import mean_cosine

        cfg: MixedPrecisionInt8Config = self.config
        rows = subset(x, slice(0, cfg.sensitivity_rows))
        reference = infer(session(src, ctx.threads), rows)
        trial = ctx.workdir / f"{src.stem}-mixed-trial.onnx"

        def cosine(chosen: list[Any]) -> float:
            write(chosen, trial)
            out = infer(session(trial, ctx.threads), rows)
            return mean_cosine(out.reshape(len(out), -1), reference.reshape(len(out), -1))

        try:
            loss = {s.node: 1 - cosine([s]) for s in sites}
            ranked = sorted(sites, key=lambda s: loss[s.node] / s.weight_size, reverse=True)
            limit = int(cfg.max_fp32 * len(sites))
            kept = 0
            reached = cosine(sites)
            while reached < cfg.min_cosine and kept < limit:
                kept += 1
                reached = cosine(ranked[kept:])
        finally:
            trial.unlink(missing_ok=True)
        return ranked[kept:], {
            "sensitivity": {s.node: round(loss[s.node], 6) for s in ranked},
            "cosine_on_calibration": round(reached, 6),
            "goal_reached": reached >= cfg.min_cosine,
        }
