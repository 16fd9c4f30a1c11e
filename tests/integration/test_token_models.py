"""A transformer encoder over token ids through the whole pipeline: int64 inputs from the data
to the exported model, the benchmark and the gate, with transformer fusion in the recipes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from components.errors import DataError, SpecError
from components.layout import RunLayout, read_json
from components.prepare import prepare_data
from components.runner import run
from components.spec import load_spec
from components.testing import write_quick_spec
from optimizers.testing import token_task

TOKENS = {
    "model": {"factory": "optimizers.testing:make_transformer_module"},
    "data": {"path": "tokens.npz", "label": "y", "features": "tokens"},
    "training": {"epochs": 4, "lr": 0.003},
    "goals": {"accuracy": {"max_drop": 0.05}, "size": {"max_ratio": 0.6}},
}


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    x, y = token_task(1000, seed=0)
    np.savez(tmp_path / "tokens.npz", x=x, y=y)
    return tmp_path


def test_an_encoder_over_token_ids_is_fused_pruned_and_promoted(tokens: Path) -> None:
    candidates = [
        {"name": "fused-int8", "steps": ["graph.transformer_fusion", "quantization.dynamic_int8"]},
        {"name": "pruned-fused", "steps": [
            {"pruning.structured": {"ratio": 0.5, "fine_tune_epochs": 2}}, "graph.transformer_fusion"]},
    ]  # fmt: skip
    spec = write_quick_spec(tokens, **TOKENS, candidates=candidates, select="smallest")
    result = run(load_spec(spec), tokens / "runs", run_id="tokens")
    assert result.status == "promoted"
    layout = RunLayout(result.run_dir)
    assert read_json(layout.dataset)["input_dtype"] == "int64"
    for name in ("fused-int8", "pruned-fused"):
        model = onnx.load(str(layout.candidate(name).model))
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
        # fused attention; after dynamic int8, ONNX Runtime's int8 QAttention
        assert {"Attention", "QAttention"} & {n.op_type for n in model.graph.node}
        assert read_json(layout.candidate(name).metrics)["accuracy"] > 0.9
        assert layout.candidate(name).comparison.is_file()
    heads = read_json(layout.candidate("pruned-fused").root / "optimize.json")["steps"][0]
    assert heads["details"]["heads"] == [[4, 2], [4, 2]]


def test_token_ids_must_be_non_negative_integers(tokens: Path) -> None:
    x, y = token_task(200, seed=1)
    np.savez(tokens / "tokens.npz", x=x.astype(np.float64) + 0.5, y=y)
    spec = load_spec(write_quick_spec(tokens, **TOKENS))
    with pytest.raises(DataError, match="not non-negative integers"):
        prepare_data(spec, tokens / "run")


def test_built_in_models_do_not_take_token_ids(tokens: Path) -> None:
    with pytest.raises(SpecError, match="built-in models take numeric features"):
        load_spec(write_quick_spec(tokens, **(TOKENS | {"model": {"builtin": "tabular_mlp"}})))
