"""Build one peer's recommended CPU int8 model of an ONNX encoder, inside that peer's own
environment (``make bench-peers`` creates one per peer under ``.cache/peers``: Intel Neural
Compressor pins numpy below 2). It imports nothing of slimgate, only numpy, onnx and the peer.

    python peer_build.py RECIPE fp32.onnx calibration.npz out.onnx

``calibration.npz`` holds the calibration rows, one array per model input.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

CALIBRATION_ROWS = 128


def _rows(calibration: Path, batch: int) -> list[dict[str, np.ndarray]]:
    data = np.load(calibration)
    n = min(CALIBRATION_ROWS, len(next(iter(data.values()))))
    return [{k: data[k][i : i + batch] for k in data.files} for i in range(0, n, batch)]


def nncf_performance(fp32: Path, calibration: Path, out: Path) -> None:
    """NNCF's ONNX post-training quantization, the transformer model type and the
    performance preset (symmetric activations), as its documentation recommends for BERT."""
    import nncf  # type: ignore[import-not-found]
    import onnx

    data = nncf.Dataset(_rows(calibration, 1))
    quantized = nncf.quantize(onnx.load(str(fp32)), data, model_type=nncf.ModelType.TRANSFORMER,
                              preset=nncf.QuantizationPreset.PERFORMANCE,
                              subset_size=CALIBRATION_ROWS)  # fmt: skip
    onnx.save(quantized, str(out))


def inc_dynamic(fp32: Path, calibration: Path, out: Path) -> None:
    """Intel Neural Compressor (ONNX) dynamic int8, its defaults."""
    from onnx_neural_compressor.quantization import (  # type: ignore[import-not-found]
        config,
        quantize,
    )

    quantize(str(fp32), str(out), config.DynamicQuantConfig())


def inc_smoothquant(fp32: Path, calibration: Path, out: Path) -> None:
    """Intel Neural Compressor (ONNX) static int8 with its SmoothQuant (alpha 0.5), the recipe
    it documents for transformers, with the scales left as Mul nodes (see below); its other
    defaults (QOperator, per-tensor, MinMax)."""
    from onnx_neural_compressor import data_reader  # type: ignore[import-not-found]
    from onnx_neural_compressor.quantization import config, quantize

    batches = _rows(calibration, 8)

    class Reader(data_reader.CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(batches)

    # INC 1.0 reads alpha and folding from a SmoothQuantConfig only (with a StaticQuantConfig
    # its SmoothQuantAlpha and SmoothQuantFolding options are ignored), and folding the scales
    # into their producers fails on this encoder (a per-channel scale written into the GELU's
    # scalar Mul: "Number of values (1536) does not match tensor dimensions requiring 1
    # elements"); unfolded, the scales are Mul nodes of their own.
    settings = config.SmoothQuantConfig(alpha=0.5, folding=False, calibration_data_reader=Reader(),
                                        extra_options={"SmoothQuant": True})  # fmt: skip
    quantize(str(fp32), str(out), settings)


def olive_fusion_dynamic(fp32: Path, calibration: Path, out: Path) -> None:
    """Olive's CPU workflow for a BERT-style ONNX model: ONNX Runtime's transformer
    optimization, then dynamic int8 (its passes' defaults)."""
    import shutil
    import tempfile

    from olive.workflows import run  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory(prefix="olive-") as folder:
        config = {
            "input_model": {"type": "ONNXModel", "model_path": str(fp32)},
            "systems": {"local": {"type": "LocalSystem", "accelerators": [
                {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}]}},
            "passes": {
                "fusion": {"type": "OrtTransformersOptimization", "model_type": "bert"},
                "quantization": {"type": "OnnxDynamicQuantization"},
            },
            "host": "local",
            "target": "local",
            "output_dir": folder,
            "cache_dir": str(Path(folder) / "cache"),
            "log_severity_level": 3,
        }  # fmt: skip
        best = run(config).get_best_candidate()
        if best is None or not best.model_path:
            raise RuntimeError("Olive's workflow produced no model")
        # a folder when Olive saved external data beside the model: saved here as one file
        path = Path(best.model_path)
        if path.is_file():
            shutil.copyfile(path, out)
        else:
            import onnx

            (model,) = path.glob("*.onnx")
            onnx.save(onnx.load(str(model)), str(out))


RECIPES: dict[str, Callable[[Path, Path, Path], Any]] = {
    "olive": olive_fusion_dynamic,
    "nncf": nncf_performance,
    "inc-dynamic": inc_dynamic,
    "inc-smoothquant": inc_smoothquant,
}


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] not in RECIPES:
        print(f"usage: peer_build.py {{{','.join(RECIPES)}}} fp32.onnx calibration.npz out.onnx",
              file=sys.stderr)  # fmt: skip
        return 2
    recipe, fp32, calibration, out = argv[0], Path(argv[1]), Path(argv[2]), Path(argv[3])
    RECIPES[recipe](fp32, calibration, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
