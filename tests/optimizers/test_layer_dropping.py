"""pruning.layers: encoder layers removed, the cut model distilled from the whole one."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from optimizers.base import OptimizeContext, StepRecord
from optimizers.pruning import LayerDropping
from optimizers.testing import (
    ContractModel,
    Measured,
    OptimizerContract,
    make_contract_model,
    make_transformer_contract_model,
    make_transformer_module,
    token_task,
)


class TestLayerDropping(OptimizerContract):
    optimizer_class = LayerDropping
    config: ClassVar[dict[str, Any]] = {"keep": 1, "epochs": 2, "lr": 1e-3}
    bad_configs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({}, "keep"),
        ({"keep": 1, "keep_indices": [0]}, "keep"),
        ({"keep": 0}, "keep"),
        ({"keep_indices": [1, 1]}, "keep_indices"),
        ({"keep_indices": [-1]}, "keep_indices"),
        ({"keep": 1, "temperature": 0}, "temperature"),
    ]

    @pytest.fixture(scope="class")
    @classmethod
    def contract_model(cls, tmp_path_factory: pytest.TempPathFactory) -> ContractModel:
        return make_transformer_contract_model(tmp_path_factory.mktemp("contract"))

    def check_effect(self, before: Measured, after: Measured, record: StepRecord) -> None:
        assert record.details["stack"] == "encoder.encoder.layer"
        assert record.details["blocks"] == [2, 1] and record.details["kept"] == [0]
        # one of two layers of 64 wide (4 x 64^2 attention + 2 x 64 x 256 FFN, their biases
        # and two LayerNorms) is gone from the exported model
        layer = 4 * (64 * 64 + 64) + 2 * 64 * 256 + 256 + 64 + 4 * 64
        assert before.parameters - after.parameters == layer
        agreement = (after.outputs.argmax(1) == before.outputs.argmax(1)).mean()
        assert agreement > 0.9


def _drop(model: Any, ctx: OptimizeContext, **config: Any) -> tuple[Any, dict[str, Any]]:
    module, record = LayerDropping(config).run(copy.deepcopy(model), ctx)
    return module, record.details


@pytest.fixture(scope="module")
def deep() -> tuple[Any, np.ndarray, np.ndarray]:
    """A 6-layer encoder, trained: the teacher."""
    from optimizers.torch_utils import TrainSettings, train_classifier

    x, y = token_task(500)
    model = make_transformer_module(hidden=32, layers=6, heads=2, intermediate=64)
    train_classifier(model, x[:400], y[:400], TrainSettings(epochs=4, lr=3e-3))
    return model, x, y


def test_keeps_blocks_spread_evenly_or_by_index(deep: Any, tmp_path: Path) -> None:
    model, x, y = deep
    ctx = OptimizeContext(tmp_path, train=(x[:400], y[:400]))
    _, details = _drop(model, ctx, keep=3, epochs=0)
    assert details["kept"] == [0, 2, 5] and details["blocks"] == [6, 3]
    cut, details = _drop(model, ctx, keep_indices=[4, 1], epochs=0)
    assert details["kept"] == [1, 4]
    # the kept blocks are the trained ones, unchanged without distillation
    blocks = cut.encoder.encoder.layer
    assert len(blocks) == 2 and cut.encoder.config.num_hidden_layers == 2
    for mine, theirs in zip(blocks, [model.encoder.encoder.layer[i] for i in (1, 4)], strict=True):
        for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
            assert a.data_ptr() != b.data_ptr() and bool((a == b).all())


def test_distillation_recovers_what_the_cut_lost(deep: Any, tmp_path: Path) -> None:
    import torch

    model, x, y = deep
    ctx = OptimizeContext(tmp_path, train=(x[:400], y[:400]))
    with torch.no_grad():
        teacher = model(torch.from_numpy(x[400:])).argmax(1)

    def agreement(module: Any) -> float:
        with torch.no_grad():
            return float((module(torch.from_numpy(x[400:])).argmax(1) == teacher).float().mean())

    cut, _ = _drop(model, ctx, keep=2, epochs=0)
    distilled, details = _drop(model, ctx, keep=2, epochs=6, lr=1e-3)
    assert agreement(distilled) > agreement(cut) + 0.1
    assert details["distillation"]["train_agreement_with_teacher"] > 0.9


def test_refuses_what_it_cannot_cut(deep: Any, tmp_path: Path) -> None:
    model, x, y = deep
    ctx = OptimizeContext(tmp_path, train=(x[:400], y[:400]))
    with pytest.raises(ValueError, match=r"keep is 6, but the model's stack .* has 6 blocks"):
        _drop(model, ctx, keep=6)
    with pytest.raises(ValueError, match=r"keep_indices is \[2, 6\].* 6 blocks: indices 0 to 5"):
        _drop(model, ctx, keep_indices=[2, 6])
    with pytest.raises(ValueError, match=r"keep_indices is \[0, 1, 2, 3, 4, 5\], every block .* "
                                         r"keep at most 5"):  # fmt: skip
        _drop(model, ctx, keep_indices=list(range(6)))
    with pytest.raises(ValueError, match="needs the training split"):
        _drop(model, OptimizeContext(tmp_path), keep=2)
    mlp = make_contract_model(tmp_path)
    with pytest.raises(ValueError, match="Sequential has no stack of repeated blocks"):
        _drop(mlp.module, OptimizeContext(tmp_path, train=mlp.train), keep=1)


class _Pooled:
    """A classifier on (input_ids, attention_mask), mean-pooling its states over the mask, or
    over every position (which makes its outputs depend on the padding); or, unpooled, an
    embedding model's hidden states per position."""

    @staticmethod
    def build(respect_mask: bool, pooled: bool = True) -> Any:
        import torch

        encoder = make_transformer_module(hidden=32, layers=2, heads=2, intermediate=64).encoder

        class Pooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = encoder
                self.head = torch.nn.Linear(32, 4)

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
                states = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
                h = states.last_hidden_state
                if not pooled:
                    return h
                w = attention_mask.unsqueeze(-1).float() if respect_mask else torch.ones_like(h)
                return self.head((h * w).sum(1) / w.sum(1))

        return Pooled()


def _padded(n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    x, y = token_task(n)
    lengths = np.random.default_rng(0).integers(6, 20, size=len(x))
    mask = (np.arange(x.shape[1])[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": x * mask, "attention_mask": mask}, y


@pytest.mark.parametrize("respect_mask", [True, False])
def test_padding_is_trimmed_only_where_outputs_stay(respect_mask: bool, tmp_path: Path) -> None:
    import torch

    inputs, y = _padded(96)
    torch.manual_seed(0)
    model = _Pooled.build(respect_mask)
    ctx = OptimizeContext(tmp_path, train=(inputs, y))
    _, details = _drop(model, ctx, keep=1, epochs=1, batch_size=16)
    assert details["padding_trim"] is respect_mask


def test_an_embedding_model_learns_its_hidden_states_untrimmed(tmp_path: Path) -> None:
    import torch

    inputs, _ = _padded(64)
    torch.manual_seed(0)
    model = _Pooled.build(respect_mask=True, pooled=False)
    ctx = OptimizeContext(tmp_path, task="embedding", train=(inputs, np.zeros(64)))
    cut, details = _drop(model, ctx, keep=1, epochs=2, batch_size=16, lr=1e-3)
    assert details["padding_trim"] is False  # states per position: trimming changes the shape
    assert "train_agreement_with_teacher" not in details["distillation"]
    with torch.no_grad():
        out = cut(*(torch.from_numpy(a[:4]) for a in inputs.values()))
    assert out.shape == (4, inputs["input_ids"].shape[1], 32)


def test_padding_is_left_alone_without_a_mask_input(deep: Any, tmp_path: Path) -> None:
    model, x, y = deep
    _, details = _drop(model, OptimizeContext(tmp_path, train=(x[:64], y[:64])), keep=3, epochs=0)
    assert details["padding_trim"] == "no attention_mask input"
