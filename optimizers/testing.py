"""The contract every optimizer passes, in-tree or plugin. Requires pytest.

Subclass :class:`OptimizerContract` in a test module, say which optimizer and configs to
test, and write :meth:`~OptimizerContract.check_effect` to assert the change the technique
claims (bytes, parameters, sparsity, dtypes, channel counts), measured on its output::

    from optimizers.testing import OptimizerContract

    class TestMyPruning(OptimizerContract):
        optimizer_class = MyPruning
        config = {"sparsity": 0.5}
        bad_configs = [({"sparsity": 2.0}, "sparsity")]

        def check_effect(self, before, after, record):
            assert after.nonzero_parameters <= 0.55 * before.nonzero_parameters

The suite builds a small MLP on a fixed random classification task, applies the optimizer
through its ``run`` method (so the base class's measurements are checked too), and runs the
result in ONNX Runtime. An optimizer for another family overrides the ``contract_model``
fixture, for example with :func:`make_transformer_contract_model` (a BERT-style encoder over
token ids; needs the ``transformers`` package)::

    @pytest.fixture(scope="class")
    @classmethod
    def contract_model(cls, tmp_path_factory):
        return make_transformer_contract_model(tmp_path_factory.mktemp("contract"))
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from optimizers.base import (
    OnnxOptimizer,
    OptimizeContext,
    Optimizer,
    OptimizerConfig,
    StepRecord,
    TorchOptimizer,
)

__all__ = [
    "ContractModel",
    "Measured",
    "OptimizerContract",
    "image_cnn",
    "image_task",
    "make_contract_model",
    "make_transformer_contract_model",
]

N_FEATURES = 32
N_CLASSES = 4


@dataclass(frozen=True)
class ContractModel:
    module: Any  # torch.nn.Module
    onnx: Path
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    n_features: int = N_FEATURES
    n_classes: int = N_CLASSES
    input_dtype: str = "float32"


@dataclass(frozen=True)
class Measured:
    """What the contract measures on an ONNX file, before and after the optimizer."""

    bytes: int
    parameters: int
    nonzero_parameters: int
    initializer_dtypes: frozenset[str]
    op_types: frozenset[str]
    outputs: np.ndarray


def make_contract_model(workdir: Path, seed: int = 0) -> ContractModel:
    """A small trained MLP on a fixed synthetic task, and its ONNX export."""
    import torch

    from optimizers.torch_utils import TrainSettings, export_onnx

    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2, size=(N_CLASSES, N_FEATURES))
    y = rng.integers(0, N_CLASSES, size=600).astype(np.int64)
    x = (centers[y] + rng.normal(0, 1, size=(600, N_FEATURES))).astype(np.float32)
    torch.manual_seed(seed)
    module = torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, N_CLASSES),
    )
    from optimizers.torch_utils import train_classifier

    train_classifier(module, x[:480], y[:480], TrainSettings(epochs=3, seed=seed))
    path = workdir / "contract-model.onnx"
    export_onnx(module, N_FEATURES, path)
    return ContractModel(module, path, (x[:480], y[:480]), (x[480:], y[480:]))


SEQUENCE = 32
VOCABULARY = 200


def token_task(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token sequences whose class is given by three keyword tokens among random ones."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, size=n)
    x = rng.integers(N_CLASSES * 4 + 1, VOCABULARY - 1, size=(n, SEQUENCE))
    for row, label in enumerate(y):
        where = rng.choice(np.arange(1, SEQUENCE), size=3, replace=False)
        x[row, where] = 1 + label * 4 + rng.integers(0, 4, size=3)
    x[:, 0] = VOCABULARY - 1  # a [CLS] token, whose final state is classified
    return x.astype(np.int64), y.astype(np.int64)


def image_task(n: int, seed: int = 0, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, 3, size, size] whose class is where a bright square sits, in which channel."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, size=n)
    x = rng.normal(0.0, 0.3, size=(n, 3, size, size)).astype(np.float32)
    half = size // 2
    for row, label in enumerate(y):
        top, left = (label // 2) * half, (label % 2) * half
        x[row, label % 3, top + 2 : top + half - 2, left + 2 : left + half - 2] += 1.5
    return x, y.astype(np.int64)


def image_cnn(n_classes: int = N_CLASSES, width: int = 16) -> Any:  # torch.nn.Module
    """A small CNN over images [N, 3, 32, 32]: what a user's factory for an image model returns."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(2 * width, n_classes),
    )  # fmt: skip


def make_transformer_module(
    hidden: int = 64, layers: int = 2, heads: int = 4, intermediate: int = 256, seed: int = 0
) -> Any:  # torch.nn.Module
    """A BERT encoder built from a config with random weights, classifying its [CLS] state.

    Attention is eager (written out in ONNX as MatMul/Softmax, which ONNX Runtime's transformer
    fusion recognises); the attention mask is computed from the ids, so the model has one input.
    """
    import torch
    from transformers import BertConfig, BertModel

    settings: dict[str, Any] = dict(
        vocab_size=VOCABULARY,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=SEQUENCE,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )
    config = BertConfig(**settings)

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = BertModel(config, add_pooling_layer=False)
            self.head = torch.nn.Linear(hidden, N_CLASSES)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            mask = (input_ids != 0).long()
            states = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
            logits: torch.Tensor = self.head(states[:, 0])
            return logits

    torch.manual_seed(seed)
    return Classifier()


def make_transformer_contract_model(workdir: Path, seed: int = 0) -> ContractModel:
    """A small trained BERT-style classifier over token ids, and its ONNX export."""
    from optimizers.torch_utils import TrainSettings, export_onnx, train_classifier

    x, y = token_task(800, seed)
    module = make_transformer_module(seed=seed)
    train_classifier(module, x[:600], y[:600], TrainSettings(epochs=4, lr=3e-3, seed=seed))
    path = workdir / "contract-transformer.onnx"
    export_onnx(module, SEQUENCE, path, input_dtype="int64")
    return ContractModel(
        module, path, (x[:600], y[:600]), (x[600:], y[600:]), SEQUENCE, N_CLASSES, "int64"
    )


def measure(path: Path, x: np.ndarray) -> Measured:
    import onnx
    from onnx import numpy_helper

    from optimizers.onnx_utils import infer, session

    model = onnx.load(str(path))
    arrays = [numpy_helper.to_array(t) for t in model.graph.initializer]
    return Measured(
        bytes=path.stat().st_size,
        parameters=int(sum(a.size for a in arrays)),
        nonzero_parameters=int(sum(np.count_nonzero(a) for a in arrays)),
        initializer_dtypes=frozenset(str(a.dtype) for a in arrays),
        op_types=frozenset(n.op_type for n in model.graph.node),
        outputs=infer(session(path, 1), x),
    )


class OptimizerContract:
    """Shared tests for one optimizer. Set the class attributes; write ``check_effect``."""

    optimizer_class: ClassVar[type[Optimizer[Any]]]
    config: ClassVar[dict[str, Any]] = {}
    # (config, a field name that the error message must name)
    bad_configs: ClassVar[list[tuple[dict[str, Any], str]]] = []

    def check_effect(self, before: Measured, after: Measured, record: StepRecord) -> None:
        """Assert the measurable change the technique claims."""
        raise NotImplementedError(f"{type(self).__name__} must assert its optimizer's effect")

    # --- fixtures ------------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def contract_model(cls, tmp_path_factory: pytest.TempPathFactory) -> ContractModel:
        return make_contract_model(tmp_path_factory.mktemp("contract"))

    def _apply(self, model: ContractModel, workdir: Path, seed: int = 0) -> tuple[Path, StepRecord]:
        from optimizers.torch_utils import export_onnx

        opt = self.optimizer_class(self.config)
        ctx = OptimizeContext(
            workdir=workdir, seed=seed, train=model.train, calibration=model.train, threads=1
        )
        out = workdir / "optimized.onnx"
        if isinstance(opt, OnnxOptimizer):
            record = opt.run(model.onnx, out, ctx)
        else:
            assert isinstance(opt, TorchOptimizer)
            import copy

            module, record = opt.run(copy.deepcopy(model.module), ctx)
            export_onnx(module, model.n_features, out, input_dtype=model.input_dtype)
        return out, record

    # --- the contract --------------------------------------------------------------------------

    def test_registered_under_its_key(self) -> None:
        from optimizers.registry import get

        assert get(self.optimizer_class.key) is self.optimizer_class

    def test_config_round_trips_through_json(self) -> None:
        opt = self.optimizer_class(self.config)
        data = json.loads(opt.config_json())
        assert data["key"] == self.optimizer_class.key
        assert data["version"] == self.optimizer_class.version
        again = self.optimizer_class.config_class.model_validate_json(json.dumps(data["config"]))
        assert again == opt.config
        assert isinstance(again, OptimizerConfig)

    def test_bad_configs_name_the_field(self) -> None:
        from pydantic import ValidationError

        assert self.bad_configs, "list at least one bad config and the field it must name"
        for config, field in self.bad_configs:
            with pytest.raises(ValidationError) as info:
                self.optimizer_class(config)
            assert field in str(info.value), f"error for {config} does not name {field!r}"

    def test_output_is_a_valid_onnx_model_that_runs(
        self, contract_model: ContractModel, tmp_path: Path
    ) -> None:
        import onnx

        out, _ = self._apply(contract_model, tmp_path)
        onnx.checker.check_model(str(out))
        x, _ = contract_model.test
        outputs = measure(out, x).outputs
        assert outputs.shape == (len(x), contract_model.n_classes)
        assert np.isfinite(outputs).all()

    def test_changes_what_it_claims(self, contract_model: ContractModel, tmp_path: Path) -> None:
        out, record = self._apply(contract_model, tmp_path)
        x, _ = contract_model.test
        self.check_effect(measure(contract_model.onnx, x), measure(out, x), record)

    def test_reproducible_with_a_seed(self, contract_model: ContractModel, tmp_path: Path) -> None:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        a, _ = self._apply(contract_model, tmp_path / "a", seed=7)
        b, _ = self._apply(contract_model, tmp_path / "b", seed=7)
        x, _ = contract_model.test
        np.testing.assert_array_equal(measure(a, x).outputs, measure(b, x).outputs)
        assert _digest_initializers(a) == _digest_initializers(b)


def _digest_initializers(path: Path) -> str:
    import onnx

    h = hashlib.sha256()
    for t in sorted(onnx.load(str(path)).graph.initializer, key=lambda t: t.name):
        h.update(t.SerializeToString())
    return h.hexdigest()
