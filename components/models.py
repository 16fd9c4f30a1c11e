"""The spec's model sources: a built-in architecture or a user's factory module.

The architectures, the training loop and the export live in :mod:`optimizers.torch_utils`,
below the steps and the techniques that both use them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.errors import ModelError, first_line
from components.spec import BuiltinModel, FactoryModel, HuggingFaceModel, Spec
from optimizers import torch_utils
from optimizers.tensors import Features

if TYPE_CHECKING:
    import torch

__all__ = ["build_builtin", "load_factory", "load_huggingface"]


def build_builtin(
    source: BuiltinModel, x_train: Features, n_classes: int, y_train: np.ndarray | None = None
) -> torch.nn.Module:
    """A fresh, untrained built-in model of the spec's ``model`` section (``y_train``: the
    targets of a regression, for a one-output model in their scale)."""
    if not isinstance(x_train, np.ndarray):
        raise ModelError(
            f"model.builtin={source.builtin} takes tabular data (one feature matrix); the data "
            f"has tensor inputs {sorted(x_train)}: use model.factory or model.onnx"
        )
    return torch_utils.build_builtin(source.builtin, source.width, x_train, n_classes, y_train)


def import_factory(source: FactoryModel, spec: Spec) -> Any:
    """The function ``source.factory`` names, imported from ``source.path`` first if given,
    then from the installed packages and PYTHONPATH, then from the spec's folder."""
    import sys

    module_name, _, attr = source.factory.partition(":")
    first = None if source.path is None else spec.resolve(source.path)
    if first is not None and not first.is_dir():
        raise ModelError(f"model.path: {first} is not a folder (the factory's module is "
                         "imported from it)")  # fmt: skip
    # the folders stay on sys.path: the module may import its neighbours later, lazily
    if first is not None:
        if str(first) in sys.path:
            sys.path.remove(str(first))
        sys.path.insert(0, str(first))
    last = str(spec.resolve("."))
    if last not in sys.path:
        sys.path.append(last)
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        where = f"{first}, " if first else ""
        raise ModelError(
            f"model.factory: cannot import {source.factory!r}: {first_line(exc)} (looked in "
            f"{where}the installed packages, PYTHONPATH and the spec's folder {last}; set "
            "model.path to the folder that holds the module)"
        ) from exc


def load_factory(source: FactoryModel, spec: Spec) -> tuple[torch.nn.Module, bool]:
    """Build the factory's model; load its weights if given. Returns (model, weights_loaded)."""
    import torch

    factory = import_factory(source, spec)
    model = factory(**source.kwargs)
    if not isinstance(model, torch.nn.Module):
        raise ModelError(
            f"model.factory: {source.factory!r} returned {type(model).__name__}, "
            "expected a torch.nn.Module"
        )
    if source.weights is None:
        return model, False
    path = spec.resolve(source.weights)
    if not path.is_file():
        raise ModelError(f"model.weights: file not found: {path}")
    state = load_state_dict(path)
    try:
        model.load_state_dict(state)
    except Exception as exc:
        first = first_line(exc)
        raise ModelError(f"model.weights: {path} does not fit {source.factory}: {first}") from exc
    return model, True


def load_state_dict(path: Path) -> Any:
    """A ``state_dict`` of tensors, read without unpickling anything else."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc) and "Unsupported global" not in str(exc):
            raise ModelError(f"model.weights: {path} is not a PyTorch state_dict file (saved "
                             "with torch.save); safetensors and other formats are not read") from None  # fmt: skip
        raise ModelError(
            f"model.weights: {path} holds pickled Python objects, not only tensors; slimgate "
            "loads weights without running pickled code: save them with "
            "torch.save(model.state_dict(), PATH)"
        ) from None
    except Exception as exc:
        first = first_line(exc)
        raise ModelError(f"model.weights: cannot read {path} as PyTorch weights: {first}") from None


def load_huggingface(
    source: HuggingFaceModel, spec: Spec, input_names: list[str]
) -> torch.nn.Module:
    """A ``save_pretrained`` model, loaded locally, as a module whose ``forward`` takes the
    data's inputs in order (``input_ids``, ``attention_mask``, ...) and returns the logits of a
    sequence classifier, or, for ``task: embedding``, the encoder's last hidden state: what is
    exported to ONNX and what torch-level techniques transform."""

    path = spec.resolve(source.huggingface)
    try:
        from transformers import AutoModel, AutoModelForSequenceClassification
    except ImportError as exc:
        raise ModelError(
            f"model.huggingface needs the transformers package: pip install 'slimgate[text]' ({exc})"
        ) from None
    from transformers.utils import logging as hf_logging

    # the load report lists unused heads (a pooler) as warnings, with a progress bar
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    embedding = spec.task == "embedding"
    auto: Any = AutoModel if embedding else AutoModelForSequenceClassification
    try:
        # eager attention exports as MatMul/Softmax, which ONNX Runtime's fusion recognises
        options: dict[str, Any] = {"local_files_only": True, "attn_implementation": "eager"}
        try:  # an encoder's pooler is unused when the hidden states are the embedding
            model = auto.from_pretrained(str(path), **options, **(
                {"add_pooling_layer": False} if embedding else {}))  # fmt: skip
        except TypeError:
            model = auto.from_pretrained(str(path), **options)
    except Exception as exc:
        kind = "an encoder" if embedding else "a sequence classifier"
        raise ModelError(f"model.huggingface: cannot load {path} as {kind}: {exc}") from None
    field = "last_hidden_state" if embedding else "logits"
    return _by_name(model.eval(), input_names, tuple(input_names), field)


def bind_inputs(module: torch.nn.Module, names: list[str], factory: str) -> torch.nn.Module:
    """A factory's module over several named inputs, called by name: the data's arrays (or the
    tokenizer's outputs) come in their own order, and ``forward``'s parameters may be in another
    (``input_ids, attention_mask`` against a tokenizer's ``input_ids, token_type_ids,
    attention_mask``). One input is passed as it is."""
    import inspect

    if len(names) <= 1:
        return module
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = {p.name: p for p in inspect.signature(module.forward).parameters.values()
              if p.kind in kinds}  # fmt: skip
    if list(params)[: len(names)] == names:
        return module
    required = [n for n, p in params.items() if p.default is inspect.Parameter.empty]
    missing = [n for n in required if n not in names]
    if missing:
        raise ModelError(f"model.factory: {factory}'s forward needs {missing}, which the data's "
                         f"inputs {names} do not have: name the arrays (or the tokenizer's "
                         "outputs) as forward's parameters")  # fmt: skip
    taken = tuple(n for n in names if n in params)  # arrays forward does not take are left out
    return _by_name(module, names, taken)


def _by_name(
    model: torch.nn.Module, names: list[str], taken: tuple[str, ...], field: str | None = None
) -> torch.nn.Module:
    """``model`` called with keyword inputs: positional inputs arrive in ``names``' order, the
    ``taken`` ones are passed by name; ``field`` picks an attribute of the result (``logits``)."""
    import torch

    class ByName(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.names = model, tuple(names)

        def forward(self, *inputs: torch.Tensor) -> Any:
            given = dict(zip(self.names, inputs, strict=True))
            out = self.model(**{n: given[n] for n in taken})
            return out if field is None else getattr(out, field)

    return ByName()
