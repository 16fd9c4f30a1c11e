"""`make bench-peers`' rows: a model measured against fp32, and peers that are missing from
the machine or fail reported as rows, not crashes. On the BERT test encoder (the pretrained
one is the benchmark's own business)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from components.spec import BenchmarkSettings, Target
from optimizers.testing import ContractModel, make_transformer_contract_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def peers() -> Iterator[Any]:
    spec = importlib.util.spec_from_file_location("peers", ROOT / "benchmarks" / "peers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "peers", module)  # dataclasses resolve their module's names
        spec.loader.exec_module(module)
        yield module


@pytest.fixture(scope="module")
def encoder(peers: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("encoder")
    model: ContractModel = make_transformer_contract_model(folder)
    x = model.test[0]
    split = folder / "test.npz"
    np.savez(split, **{"input.input": x})  # type: ignore[arg-type]
    return peers.Encoder(model.onnx, {"input": model.train[0][:64]}, {"input": x}, split,
                         model.module, ({"input": model.train[0]}, model.train[1]))  # fmt: skip


def _measure(peers: Any, encoder: Any, make: Any, out: Path) -> Any:
    settings = BenchmarkSettings(warmup=2, min_runs=5, min_seconds=0.05, compare_rounds=4)
    return peers.measure("tool", "model", make, encoder, out, target=Target(threads=1),
                         settings=settings)  # fmt: skip


def test_a_model_is_measured_against_fp32(peers: Any, encoder: Any, tmp_path: Path) -> None:
    make = peers.slimgate([("quantization.smoothquant_int8", {"alpha": 0.5})])
    row = _measure(peers, encoder, make, tmp_path / "ours.onnx")
    assert row.speedup is not None and row.speedup > 0
    low, high = row.interval
    assert low is None or low <= row.speedup <= high
    assert row.agreement > 0.9 and row.cosine > 0.99 and row.meets_goals
    assert row.mb < encoder.fp32.stat().st_size / 1e6
    assert row.cells()[2].startswith(f"{row.speedup:.2f}x")


def test_a_torch_level_step_starts_from_the_classifier(
    peers: Any, encoder: Any, tmp_path: Path
) -> None:
    make = peers.slimgate([("pruning.layers", {"keep": 1, "epochs": 1, "lr": 1e-3}),
                           ("quantization.smoothquant_int8", {})])  # fmt: skip
    path = make(encoder, tmp_path / "cut.onnx")
    import onnx

    layers = {n.name.split("/")[3] for n in onnx.load(str(tmp_path / "cut-0.onnx")).graph.node
              if n.name.startswith("/encoder/encoder/layer.")}  # fmt: skip
    assert layers == {"layer.0"}
    assert path.name == "cut-1.onnx" and path.is_file()


def test_a_peer_that_cannot_be_installed_is_a_row(
    peers: Any, encoder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "CACHE", tmp_path)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # no package index, no name on PyPI to squat
    monkeypatch.setitem(peers.ENVIRONMENTS, "ghost", [["slimgate-no-such-peer==0.0.1"]])
    row = _measure(peers, encoder, peers.peer("ghost", "nncf"), tmp_path / "ghost.onnx")
    assert row.speedup is None and not row.meets_goals
    assert row.note.startswith("could not install slimgate-no-such-peer==0.0.1")
    assert "ERROR: Could not find a version that satisfies the requirement" in row.note
    assert row.cells()[2:7] == ["-"] * 5


def test_a_peer_that_fails_is_a_row(peers: Any, encoder: Any, tmp_path: Path) -> None:
    def crashes(enc: Any, out: Path) -> Path:
        raise KeyError("its calibration reader wants a rewind")

    row = _measure(peers, encoder, crashes, tmp_path / "crash.onnx")
    assert row.speedup is None
    assert row.note == "failed: KeyError: 'its calibration reader wants a rewind'"
