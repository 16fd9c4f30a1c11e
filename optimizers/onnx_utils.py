"""The ONNX toolbox of the techniques and of the steps: file statistics and ONNX Runtime
sessions. Below both, like :mod:`optimizers.torch_utils`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from components.errors import ModelError, first_line
from optimizers.tensors import Inputs, feeds, n_rows, take

__all__ = ["external_files", "infer", "model_bytes", "onnx_stats", "session"]


def external_files(path: Path, model: Any = None) -> list[Path]:
    """The files next to an ONNX model that hold its external tensors (models over 2 GB, and
    what some tools save by default), in the order the model names them; none for a single-file
    model. ``model``: the model already loaded (without its data), else read from ``path``. A
    location outside the model's folder is refused, as ONNX itself refuses to read it."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    if model is None:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception:
            raise ModelError(f"{path}: not an ONNX model (its bytes do not parse as an ONNX "
                             "protobuf)") from None  # fmt: skip
    folder = path.parent.resolve()
    found: dict[str, Path] = {}
    for tensor in _tensors(model):
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        file = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not file.is_relative_to(folder):
            raise ModelError(f"{path}: tensor {tensor.name!r} has its data at {location!r}; "
                             f"expected a relative path inside {folder}")  # fmt: skip
        found.setdefault(location, path.parent / location)
    return list(found.values())


def _tensors(model: Any) -> list[Any]:
    """Every tensor stored in a model: initializers and constant attributes, in subgraphs and
    functions too (where ONNX looks for external data)."""

    def graph_tensors(graph: Any) -> list[Any]:
        return [*graph.initializer, *(t for n in graph.node for t in node_tensors(n))]

    def node_tensors(node: Any) -> list[Any]:
        out = []
        for a in node.attribute:
            out += ([a.t] if a.HasField("t") else []) + list(a.tensors)
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                out += graph_tensors(g)
        return out

    return [*graph_tensors(model.graph),
            *(t for f in model.functions for n in f.node for t in node_tensors(n))]  # fmt: skip


def model_bytes(path: Path, model: Any = None) -> int:
    """An ONNX model's size on disk: its file and its external data files."""
    files = external_files(path, model)
    return path.stat().st_size + sum(f.stat().st_size for f in files if f.is_file())


def onnx_stats(path: Path) -> dict[str, float]:
    """File size, number of stored parameters (initializer elements) and graph nodes."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    return {
        "bytes": float(model_bytes(path, model)),
        "parameters": float(params),
        "nodes": float(len(model.graph.node)),
    }


def session(path: Path, threads: int) -> Any:
    """A CPU ONNX Runtime session with explicit thread settings (recorded by the benchmark)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        if "INVALID_PROTOBUF" in str(exc) or "Protobuf parsing failed" in str(exc):
            raise ModelError(f"{path}: not an ONNX model (its bytes do not parse as an ONNX "
                             "protobuf)") from None  # fmt: skip
        first = first_line(exc)
        raise ModelError(f"{path}: ONNX Runtime cannot load this model: {first}") from exc


def infer(
    sess: Any,
    x: np.ndarray | Inputs,
    batch: int = 256,
    *,
    output: str | None = None,
    where: str = "the model",
) -> np.ndarray:
    """Run ``x`` (one array per input, or one array for a one-input model) through a session in
    batches of rows; return the ``output`` named (default: the first) for every row."""
    names = [o.name for o in sess.get_outputs()]
    if output is not None and output not in names:
        raise ModelError(f"{where}: model.output {output!r} is not an output; outputs: {names}")
    index = names.index(output) if output is not None else 0
    fed = feeds(sess.get_inputs(), x, where)
    rows = n_rows(fed)
    outs = [sess.run([names[index]], take(fed, slice(i, i + batch)))[0]
            for i in range(0, rows, batch)]  # fmt: skip
    return np.concatenate(outs, axis=0)


def infer_shapes(model: Any) -> Any:
    """``model`` with the shapes ONNX Runtime's symbolic shape inference finds (it knows ONNX
    Runtime's contrib operators), as far as it gets; ONNX's own inference where it fails."""
    import contextlib
    import io

    from onnx import TensorProto, helper, shape_inference
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    # SymbolicShapeInference.infer_shapes saves a partly inferred model into the current
    # folder and raises; its loop is run here to keep what it did infer instead.
    inference = SymbolicShapeInference(2**31 - 1, True, False, 0)

    def quantized_attention(node: Any) -> None:  # QAttention: Attention's shapes, float out
        inference._infer_Attention(node)
        inference.known_vi_[node.output[0]].type.tensor_type.elem_type = TensorProto.FLOAT

    def fused_gemm(node: Any) -> None:  # FusedGemm (Gemm + activation): Gemm's shape
        a, b = inference._get_shape(node, 0), inference._get_shape(node, 1)
        attrs = {x.name: x.i for x in node.attribute if x.name in ("transA", "transB")}
        rows = a[1] if attrs.get("transA") else a[0]
        cols = b[0] if attrs.get("transB") else b[1]
        inference.known_vi_[node.output[0]].CopyFrom(
            helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, [rows, cols])
        )

    inference.dispatcher_.setdefault("QAttention", quantized_attention)
    inference.dispatcher_.setdefault("FusedGemm", fused_gemm)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints what it cannot infer
            inference._preprocess(model)
            while inference.run_:
                inference._infer_impl()
            inference._update_output_from_vi()
    except Exception:  # an operator it cannot handle
        return shape_inference.infer_shapes(model, data_prop=True)
    return inference.out_mp_
