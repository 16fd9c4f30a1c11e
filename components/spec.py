"""The run spec: one YAML file that says which model to compress, on what data, toward which goals.

``load_spec`` validates everything before any work starts; a bad spec raises :class:`SpecError`
with one line per problem, each naming the field path, the value seen and what is allowed.
Relative paths in the spec are relative to the spec file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from components.errors import SpecError
from optimizers.base import Stage
from validation._strict import StrictModel
from validation.goals import Goals

__all__ = [
    "BenchmarkSettings",
    "BuiltinData",
    "BuiltinModel",
    "CacheSettings",
    "Candidate",
    "DataValidation",
    "Embedding",
    "FactoryModel",
    "FileData",
    "HuggingFaceModel",
    "OnnxModel",
    "RecipeStep",
    "Screening",
    "Search",
    "SearchRecipe",
    "Spec",
    "Split",
    "Target",
    "Tracking",
    "Training",
    "Tuning",
    "load_spec",
    "spec_json_schema",
]

_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"


# --- model sources -----------------------------------------------------------------------------


class BuiltinModel(StrictModel):
    """A model defined in slimgate, trained on the spec's data by the baseline step."""

    builtin: Literal["digits_cnn", "tabular_mlp"]
    width: float = Field(default=1.0, gt=0, le=8, description="channel/unit multiplier")


class OnnxModel(StrictModel):
    """An already exported ONNX model, with any inputs; only ONNX-level optimizers apply to it.

    ``output`` names the output that is scored (class scores); default: the first."""

    onnx: str
    output: str | None = None


class FactoryModel(StrictModel):
    """A PyTorch model built by ``module:function``; trained unless ``weights`` is given.

    The module is imported from ``path`` (a folder, relative to the spec) if given, else from
    the installed packages and PYTHONPATH, and last from the spec's own folder. ``weights`` is a
    ``state_dict`` file, loaded with ``torch.load(weights_only=True)``: never unpickled as
    arbitrary objects.
    """

    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    path: str | None = Field(
        default=None, description="a folder the factory's module is imported from"
    )
    weights: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    output: str | None = Field(
        default=None, description="the scored output of a model returning several: output_<i>"
    )


class Embedding(StrictModel):
    """How an embedding model's output becomes one vector per row (``task: embedding``)."""

    pooling: Literal["mean", "cls"] = Field(
        default="mean",
        description="of a [batch, sequence, hidden] output: the mean over the attention mask, or "
        "the first token; a [batch, hidden] output is taken as it is",
    )


class HuggingFaceModel(StrictModel):
    """A Hugging Face ``save_pretrained`` directory of a sequence classifier (any
    ``AutoModelForSequenceClassification``), loaded locally with its weights: never downloaded,
    not trained. Exported to ONNX with the data's input names (the tokenizer's: ``input_ids``,
    ``attention_mask``, ...), so torch-level techniques (head pruning, low-rank, distillation,
    QAT) apply to it."""

    huggingface: str
    output: str | None = None


# the key that tells which kind of model or data source a spec names (a discriminator tag)
SOURCE_TAGS = {"model": ("builtin", "onnx", "factory", "huggingface"), "data": ("builtin", "path")}


def _source_kind(keys: tuple[str, ...]) -> Any:
    def kind(value: Any) -> str | None:
        if isinstance(value, Mapping):
            found = [k for k in keys if k in value]
        elif isinstance(value, BaseModel):  # a validated model being serialized
            found = [k for k in keys if k in type(value).model_fields]
        else:  # not a mapping at all (null, a number, a list)
            return None
        return found[0] if len(found) == 1 else None

    return kind


ModelSource = Annotated[
    Annotated[BuiltinModel, Tag("builtin")]
    | Annotated[OnnxModel, Tag("onnx")]
    | Annotated[FactoryModel, Tag("factory")]
    | Annotated[HuggingFaceModel, Tag("huggingface")],
    Discriminator(
        _source_kind(SOURCE_TAGS["model"]),
        custom_error_type="model_source",
        custom_error_message="expected exactly one of 'builtin', 'onnx', 'factory' or 'huggingface'",
    ),
]


# --- data --------------------------------------------------------------------------------------


class BuiltinData(StrictModel):
    """A dataset that ships with scikit-learn."""

    builtin: Literal["digits", "breast_cancer", "wine", "diabetes"]  # diabetes: a regression


class FileData(StrictModel):
    """A table of feature columns and one label column, or tensors in the model's shape.

    CSV and Parquet files, and an npz with a 2-D array ``x``, are tables. ``features: tokens``:
    every feature is an integer token id (a fixed-length sequence, as a transformer encoder
    takes), and the model input is int64; otherwise features are numeric and the input is
    float32. Any other npz (or a folder of npz files) holds one array per model input, named
    as the model's inputs, rows first, of any rank and dtype (images [N, C, H, W], token ids
    and masks), and the labels (``label``)."""

    path: str
    format: Literal["csv", "parquet", "npz"] | None = Field(
        default=None, description="taken from the file suffix when not given"
    )
    label: str = "label"
    features: Literal["numeric", "tokens"] = "numeric"
    text: str | None = Field(
        default=None, description="a text column, tokenized by `tokenizer` into the model's inputs"
    )
    tokenizer: str | None = Field(
        default=None, description="a local Hugging Face tokenizer directory (save_pretrained)"
    )
    max_length: int = Field(default=128, ge=2, le=8192, description="tokens per text, padded")

    @model_validator(mode="after")
    def _text_needs_a_tokenizer(self) -> FileData:
        if (self.text is None) != (self.tokenizer is None):
            raise ValueError("data.text and data.tokenizer go together: the text column and the "
                             "local tokenizer directory that turns it into the model's inputs")  # fmt: skip
        return self


DataSource = Annotated[
    Annotated[BuiltinData, Tag("builtin")] | Annotated[FileData, Tag("path")],
    Discriminator(
        _source_kind(SOURCE_TAGS["data"]),
        custom_error_type="data_source",
        custom_error_message="expected exactly one of 'builtin' or 'path'",
    ),
]


class Split(StrictModel):
    """Stratified train / calibration / test split. Calibration rows come out of training rows."""

    test: float = Field(default=0.2, gt=0, le=0.5)
    calibration: float = Field(default=0.1, ge=0, le=0.5)
    seed: int = 0


class UserExpectation(StrictModel):
    """A great-expectations expectation of your own, by class or snake-case name."""

    type: str = Field(examples=["expect_column_values_to_be_between"])
    kwargs: dict[str, Any] = Field(default_factory=dict)


class DataValidation(StrictModel):
    """Checks the data must pass before anything is trained or calibrated on it.

    ``ranges`` maps a feature column (or ``"*"`` for every feature) to ``[min, max]``;
    ``reference`` is ``production`` (the profile stored with the model behind the registry's
    production alias) or a ``dataset.json`` / ``card.json`` holding a profile, for drift checks.
    """

    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    labels: list[str] | None = Field(
        default=None, description="the allowed label values (strings or integers)"
    )
    min_rows: int = Field(default=30, ge=1)
    min_rows_per_split: int = Field(default=10, ge=1)
    min_rows_per_class: int = Field(default=3, ge=1)
    max_class_ratio: float | None = Field(default=20.0, ge=1)
    allow_duplicates: bool = False
    allow_train_test_overlap: bool = False
    reference: str | None = None
    max_drift_psi: float = Field(default=0.25, gt=0)
    expectations: list[UserExpectation] = Field(default_factory=list)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_text(cls, value: Any) -> Any:
        """Integer labels (``[0, 1]``) are compared as the text they read as."""
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator("ranges")
    @classmethod
    def _ordered(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        bad = [f"{k}: [{lo}, {hi}]" for k, (lo, hi) in v.items() if lo > hi]
        if bad:
            raise ValueError(f"each range must be [min, max] with min <= max; got {bad}")
        return v


# --- training, target, benchmark --------------------------------------------------------------


class Tuning(StrictModel):
    """Hyperparameter tuning of the baseline's training with Optuna. Each trial trains on the
    training split less a held-out share (``validation``) and is scored by its accuracy there;
    the best trial's settings then train the baseline on the whole training split. The test
    split is never seen. ``space`` maps a training field (or ``width``, of a built-in model) to
    ``{choices: [...]}`` or ``{low, high[, step][, log]}``."""

    space: dict[Literal["lr", "epochs", "batch_size", "weight_decay", "width"], Any] = Field(
        min_length=1
    )
    trials: int = Field(default=10, ge=1, le=1000)
    timeout_s: float | None = Field(default=None, gt=0, description="wall-clock budget")
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    seed: int = 0
    validation: float = Field(default=0.2, gt=0, lt=0.9, description="share of train held out")

    @field_validator("space")
    @classmethod
    def _dimensions(cls, space: dict[str, Any]) -> dict[str, Any]:
        for name, dim in space.items():
            if not _is_dimension(dim):
                raise ValueError(
                    f"space.{name}: expected {{choices: [...]}} or {{low, high[, step][, log]}}, "
                    f"got {dim!r}"
                )
            _check_dimension(f"space.{name}", dim)
        return space

    @model_validator(mode="after")
    def _griddable(self) -> Tuning:
        if self.sampler == "grid":
            for name, dim in self.space.items():
                if "choices" not in dim and "step" not in dim:
                    raise ValueError(
                        f"space.{name} is a continuous range; grid needs choices or a step"
                    )
        return self


class Training(StrictModel):
    """How the baseline step trains a built-in or factory model without weights."""

    epochs: int = Field(default=10, ge=1, le=1000)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=3e-3, gt=0, le=1)
    weight_decay: float = Field(default=1e-4, ge=0)
    seed: int = 0
    tune: Tuning | None = None


class Target(StrictModel):
    """The hardware the goals are measured on.

    ``provider`` picks the ONNX Runtime execution provider (default: the device's own). A
    provider that ONNX Runtime cannot use fails the benchmark instead of silently measuring
    the CPU.
    """

    device: Literal["cpu", "cuda"] = "cpu"
    provider: Literal["cpu", "cuda", "tensorrt"] | None = None
    threads: int = Field(default=2, ge=1, le=512, description="intra-op threads, set explicitly")
    batch_sizes: tuple[int, ...] = Field(default=(1,), min_length=1)

    @model_validator(mode="after")
    def _provider_fits_device(self) -> Target:
        gpu = self.provider in ("cuda", "tensorrt")
        if self.provider is not None and gpu != (self.device == "cuda"):
            raise ValueError(
                f"provider {self.provider!r} does not run on device {self.device!r}; "
                "use cpu with device cpu, cuda or tensorrt with device cuda"
            )
        return self

    @property
    def execution_provider(self) -> str:
        return self.provider or self.device

    @field_validator("batch_sizes")
    @classmethod
    def _positive_unique(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(b < 1 for b in v) or len(set(v)) != len(v):
            raise ValueError(f"expected distinct positive batch sizes, got {list(v)}")
        return tuple(sorted(v))


class CacheSettings(StrictModel):
    """Reuse of finished work across runs: see components/cache.py for what each key covers."""

    enabled: bool = True
    uri: str | None = Field(
        default=None,
        description="a folder, file://PATH or s3://BUCKET/PREFIX; default: <runs dir>/.cache",
    )
    measurements: bool = Field(
        default=True,
        description="also reuse accuracy and latency measured on the same CPU with the same settings",
    )

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        if v is not None and "://" in v and not v.startswith(("file://", "s3://")):
            raise ValueError(f"{v!r}: expected s3://BUCKET/PREFIX, file://PATH or a plain path")
        return v


class Tracking(StrictModel):
    """Log each run to MLflow tracking: one run, and a nested run per candidate."""

    mlflow: str = Field(
        description="the tracking server: mlflow://HOST:PORT, mlflow+https://HOST, http(s)://..., "
        "or mlflow:// for MLFLOW_TRACKING_URI"
    )
    experiment: str | None = Field(default=None, description="default: slimgate/<spec name>")

    @field_validator("mlflow")
    @classmethod
    def _uri(cls, v: str) -> str:
        if not v.startswith(("mlflow://", "mlflow+https://", "http://", "https://")):
            raise ValueError(
                f"{v!r}: expected mlflow://HOST:PORT, mlflow+https://HOST or http(s)://"
            )
        return v


class BenchmarkSettings(StrictModel):
    """How latency is measured.

    Timed runs continue until both ``min_runs`` and ``min_seconds`` are reached, or the median's
    interval is within ``target_rel_ci`` of it, or ``max_runs``/``max_seconds`` is hit. Speedups
    come from ``compare_rounds`` alternating processes per model.
    """

    warmup: int = Field(default=10, ge=0)
    min_runs: int = Field(default=100, ge=1)
    min_seconds: float = Field(default=1.0, ge=0)
    max_runs: int = Field(default=20_000, ge=1)
    max_seconds: float = Field(default=30.0, gt=0)
    target_rel_ci: float = Field(default=0.0, ge=0, lt=1, description="0: never stop early")
    confidence: float = Field(default=0.95, ge=0.5, lt=1)
    # 7 rounds: the interval then trims 8 of the 49 pairwise ratios at each end, so one
    # disturbed process cannot stretch it; 5 rounds trim only 2 of 25.
    compare_rounds: int = Field(default=7, ge=4, le=50)
    compare_seconds: float = Field(default=0.25, ge=0)
    compare_min_runs: int = Field(default=50, ge=5)
    max_competing_cores: float = Field(
        default=0.3,
        ge=0,
        description="a measurement during which other processes kept more cores busy than "
        "this is flagged as disturbed and not cached",
    )
    settle_seconds: float = Field(
        default=10.0,
        ge=0,
        description="before measuring, wait up to this long for other processes to leave the "
        "machine quiet (within max_competing_cores)",
    )

    @model_validator(mode="after")
    def _runs_order(self) -> BenchmarkSettings:
        if self.max_runs < self.min_runs:
            raise ValueError(
                f"max_runs ({self.max_runs}) must be at least min_runs ({self.min_runs})"
            )
        return self


# --- candidates --------------------------------------------------------------------------------


class RecipeStep(StrictModel):
    """One optimizer in a recipe. In YAML: ``key`` or ``{key: {config...}}``."""

    key: str
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"key": value}
        if isinstance(value, Mapping) and len(value) == 1 and "key" not in value:
            ((key, config),) = value.items()
            return {"key": key, "config": {} if config is None else config}
        return value

    @model_validator(mode="after")
    def _known_and_valid(self) -> RecipeStep:
        from optimizers.registry import OptimizerRegistryError, get

        try:
            cls = get(self.key)
        except OptimizerRegistryError as exc:
            raise ValueError(str(exc)) from None
        try:
            cls.config_class.model_validate(self.config)
        except ValidationError as exc:
            raise ValueError(
                "; ".join(f"{self.key}: {line}" for line in _error_lines(exc))
            ) from None
        return self

    def build(self) -> Any:
        """The configured optimizer instance."""
        from optimizers.registry import build

        return build(self.key, self.config)

    def label(self) -> str:
        return self.key if not self.config else f"{self.key}({_short(self.config)})"


class Candidate(StrictModel):
    """A recipe: optimizers applied in order. In YAML: a list of steps, or ``{name, steps}``."""

    name: str = Field(default="", pattern=r"^$|" + _NAME[1:])
    steps: tuple[RecipeStep, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return {"steps": value}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Candidate:
        from optimizers.registry import check_order

        check_order([step.build() for step in self.steps])
        return self

    def label(self) -> str:
        return " -> ".join(step.label() for step in self.steps)


# --- search -------------------------------------------------------------------------------------


_DIMENSION_KEYS = {"choices", "low", "high", "step", "log"}


def _is_dimension(value: Any) -> bool:
    """A searched value in a step's config: ``{choices: [...]}`` or ``{low, high[, step][, log]}``."""
    if not isinstance(value, Mapping):
        return False
    keys = set(value)
    return keys == {"choices"} or ({"low", "high"} <= keys <= {"low", "high", "step", "log"})


def _check_dimension(where: str, dim: Mapping[str, Any]) -> Any:
    """The dimension's first value (used to validate the config), or a ValueError naming it."""
    if "choices" in dim:
        choices = dim["choices"]
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{where}.choices: expected a non-empty list, got {choices!r}")
        return choices[0]
    low, high = dim["low"], dim["high"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        raise ValueError(f"{where}: low and high must be numbers, got {low!r} and {high!r}")
    if low > high:
        raise ValueError(f"{where}: low {low} is above high {high}")
    if dim.get("log") and low <= 0:
        raise ValueError(f"{where}: a log scale needs low > 0, got {low}")
    return low


class SearchRecipe(StrictModel):
    """A chain whose step configs may hold searched values instead of fixed ones."""

    name: str = Field(pattern=_NAME)
    steps: tuple[dict[str, Any], ...] = Field(min_length=1)

    @field_validator("steps", mode="before")
    @classmethod
    def _normalise(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        return [{step: {}} if isinstance(step, str) else step for step in value]

    @model_validator(mode="after")
    def _valid_at_its_first_point(self) -> SearchRecipe:
        """Each step, with every searched value at its first choice or low end, must be a valid
        step, and the chain a valid order: errors name the recipe, step and field."""
        steps = []
        for i, step in enumerate(self.steps):
            if len(step) != 1:
                raise ValueError(
                    f"{self.name}.steps[{i}]: expected one optimizer key, got {list(step)}"
                )
            ((key, config),) = step.items()
            config = config or {}
            if not isinstance(config, Mapping):
                raise ValueError(
                    f"{self.name}.steps[{i}].{key}: expected a mapping, got {config!r}"
                )
            point = {}
            for field, v in config.items():
                where = f"{self.name}.steps[{i}].{key}.{field}"
                if isinstance(v, Mapping) and set(v) & _DIMENSION_KEYS and not _is_dimension(v):
                    raise ValueError(f"{where}: expected {{choices: [...]}} or "
                                     f"{{low, high[, step][, log]}}, got keys {sorted(v)}")  # fmt: skip
                point[field] = _check_dimension(where, v) if _is_dimension(v) else v
            steps.append(RecipeStep(key=key, config=point))
        Candidate(steps=tuple(steps))  # the order check
        return self

    def dimensions(self) -> dict[str, tuple[int, str, dict[str, Any]]]:
        """``"<step index>.<key>.<field>"`` -> (step index, field, dimension), in order."""
        out = {}
        for i, step in enumerate(self.steps):
            ((key, config),) = step.items()
            for field, v in (config or {}).items():
                if _is_dimension(v):
                    out[f"{i}.{key}.{field}"] = (i, field, dict(v))
        return out

    def concrete(self, values: Mapping[str, Any], name: str) -> Candidate:
        """The recipe with each dimension set to ``values[<dimension name>]``."""
        steps = []
        dims = self.dimensions()
        for i, step in enumerate(self.steps):
            ((key, config),) = step.items()
            fixed = {
                field: values[f"{i}.{key}.{field}"] if f"{i}.{key}.{field}" in dims else v
                for field, v in (config or {}).items()
            }
            steps.append(RecipeStep(key=key, config=fixed))
        return Candidate(name=name, steps=tuple(steps))


class Screening(StrictModel):
    """Multi-fidelity: a cheap first look at each trial. Its model trains for as few epochs as
    each step allows (size and latency do not depend on them), and gets a short benchmark;
    accuracy on a share of the test split is judged when the recipe trains nothing. A trial that
    clearly misses a goal stops there. Off with ``enabled: false``."""

    enabled: bool = True
    test_fraction: float = Field(default=0.3, gt=0, le=1)
    min_runs: int = Field(default=30, ge=5)
    margin: float = Field(
        default=0.5, ge=0, description="latency: discard only beyond (1 + margin) x the limit"
    )
    epoch_fraction: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="the screen's model trains for this share of each step's epochs "
        "(0: the least each step allows); 1 screens the full model",
    )


class Search(StrictModel):
    """Recipe search with Optuna: chains and their parameters, multi-objective (latency, size,
    accuracy) with the goals as constraints, within ``trials`` and ``timeout_s``."""

    recipes: tuple[SearchRecipe, ...] = Field(min_length=1)
    trials: int = Field(default=20, ge=1, le=10_000)
    timeout_s: float | None = Field(default=None, gt=0, description="wall-clock budget")
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    seed: int = 0
    screen: Screening = Screening()

    @model_validator(mode="after")
    def _unique_and_griddable(self) -> Search:
        names = [r.name for r in self.recipes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"recipes: names {dupes} appear more than once")
        if self.sampler == "grid":
            for r in self.recipes:
                for dim_name, (_, _, dim) in r.dimensions().items():
                    if "choices" not in dim and "step" not in dim:
                        raise ValueError(
                            f"recipes.{r.name}: {dim_name} is a continuous range; the grid sampler "
                            "needs choices or a step"
                        )
        return self


# --- the spec ----------------------------------------------------------------------------------


class Spec(StrictModel):
    """A slimgate run: model, data, target hardware, goals, candidate recipes, and where to publish."""

    name: str = Field(pattern=_NAME, description="the model's name in the registry")
    task: Literal["classification", "regression", "embedding"] = Field(
        default="classification",
        description="regression: one output per row, numeric labels, gated on goals.error; "
        "embedding: no labels, gated on fidelity and neighbours to the baseline",
    )
    embedding: Embedding = Field(default_factory=Embedding)
    model: ModelSource
    data: DataSource
    split: Split = Split()
    validation: DataValidation = DataValidation()
    training: Training = Training()
    target: Target = Target()
    benchmark: BenchmarkSettings = BenchmarkSettings()
    goals: Goals
    candidates: tuple[Candidate, ...] = ()
    search: Search | None = None
    select: Literal["fastest", "smallest", "knee"] = Field(
        default="fastest", description="knee: of the latency/accuracy Pareto front"
    )
    registry: str = "file://./registry"
    cache: CacheSettings = CacheSettings()
    tracking: Tracking | None = None
    schedule: str | None = Field(default=None, description="cron expression for the Airflow DAG")

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @field_validator("registry")
    @classmethod
    def _registry_uri(cls, v: str) -> str:
        if v.startswith("s3://"):
            bucket = v.removeprefix("s3://").partition("/")[0]
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
                raise ValueError(f"{v!r}: {bucket!r} is not a valid S3 bucket name")
            return v
        if v.startswith(("mlflow://", "mlflow+https://")):
            return v
        if "://" in v and not v.startswith("file://"):
            raise ValueError(f"{v!r}: expected s3://BUCKET/PREFIX, mlflow://HOST:PORT (MLflow's "
                             "Model Registry), file://PATH or a plain path")  # fmt: skip
        return v

    def _model_problems(self) -> list[str]:
        """What the model source rules out: token inputs, tuning."""
        problems = []
        tokens = isinstance(self.data, FileData) and self.data.features == "tokens"
        if tokens and isinstance(self.model, BuiltinModel):
            problems.append("data.features is tokens, but built-in models take numeric "
                            "features; give a model.factory (or model.onnx) taking int64 ids")  # fmt: skip
        tune = self.training.tune
        loaded = isinstance(self.model, OnnxModel | HuggingFaceModel) or (
            isinstance(self.model, FactoryModel) and self.model.weights
        )
        if tune is not None and loaded:
            problems.append("training.tune: this baseline is loaded, not trained; tuning needs "
                            "model.builtin or a model.factory without weights")  # fmt: skip
        if tune is not None and "width" in tune.space and not isinstance(self.model, BuiltinModel):
            problems.append("training.tune.space.width: only built-in models have a width")
        return problems

    def _output_problems(self) -> list[str]:
        """What the scored output rules out."""
        problems = []
        regression = self.task == "regression"
        output = getattr(self.model, "output", None)
        trains = isinstance(self.model, FactoryModel) and not self.model.weights
        torch_steps = [s.key for c in self.candidates for s in c.steps
                       if s.build().stage is Stage.TORCH]  # fmt: skip
        if (
            isinstance(self.model, FactoryModel)
            and output not in (None, "output_0")
            and (trains or torch_steps)
        ):
            problems.append(f"model.output={output}: training and fine-tuning use a factory's "
                            "first output; return the scored output first (output_0)")  # fmt: skip
        if regression and self.goals.fidelity is not None and self.goals.fidelity.min_cosine:
            problems.append("goals.fidelity.min_cosine: a regression has one value per row, whose "
                            "cosine is only its sign; use goals.error or fidelity.max_abs_error")  # fmt: skip
        return problems

    def _task_problems(self) -> list[str]:
        """What the task rules out: goals, policies, techniques and sources of another task."""
        problems = []
        regression = self.task == "regression"
        if isinstance(self.data, BuiltinData) and (self.data.builtin == "diabetes") != regression:
            problems.append(f"data.builtin={self.data.builtin} is a "
                            f"{'regression' if self.data.builtin == 'diabetes' else 'classification'} "
                            f"dataset; set task accordingly (task is {self.task})")  # fmt: skip
        goals_of = {"classification": {"accuracy", "per_class", "agreement", "champion"},
                    "regression": {"error"}, "embedding": {"neighbours"}}  # fmt: skip
        own = {"classification": "", "regression": "; use goals.error (mae or rmse)",
               "embedding": "; use goals.fidelity and goals.neighbours"}  # fmt: skip
        for task, names in goals_of.items():
            for name in sorted(names) if task != self.task else ():
                if getattr(self.goals, name) is not None:
                    problems.append(f"goals.{name} applies to task {task}; this spec's task is "
                                    f"{self.task}{own[self.task]}")  # fmt: skip
        if self.task == "classification":
            return problems
        if self.select == "knee":
            problems.append(f"select: knee trades latency against accuracy; for task {self.task} "
                            "use fastest or smallest")  # fmt: skip
        if self.search is not None:
            problems.append(f"search: supports task classification for now; list {self.task} "
                            "recipes under candidates")  # fmt: skip
        if self.training.tune is not None:
            problems.append("training.tune: supports task classification for now")
        if isinstance(self.model, BuiltinModel) and (
            regression is False or self.model.builtin != "tabular_mlp"
        ):
            problems.append(f"model.builtin={self.model.builtin} is a classifier; for task "
                            f"{self.task} use "
                            f"{'tabular_mlp, ' if regression else ''}a factory or an ONNX file")  # fmt: skip
        for i, cand in enumerate(self.candidates):
            for step in cand.steps:
                tasks = step.build().tasks
                if self.task not in tasks:
                    problems.append(f"candidates[{i}]: {step.key} supports task "
                                    f"{', '.join(sorted(tasks))}, not {self.task}")  # fmt: skip
        return problems

    @model_validator(mode="after")
    def _consistent(self) -> Spec:
        problems = self._model_problems() + self._task_problems() + self._output_problems()
        if not self.candidates and self.search is None:
            problems.append("candidates: none given and no search; give recipes in one or both")
        for goal_name in ("latency", "speedup"):
            goal = getattr(self.goals, goal_name)
            if goal is not None and goal.batch not in self.target.batch_sizes:
                problems.append(
                    f"goals.{goal_name}.batch = {goal.batch} is not among "
                    f"target.batch_sizes {list(self.target.batch_sizes)}; add it there"
                )
        if isinstance(self.model, OnnxModel):
            from optimizers.registry import get as get_optimizer

            for r in self.search.recipes if self.search else ():
                keys = [next(iter(step)) for step in r.steps]
                if any(get_optimizer(k).stage is Stage.TORCH for k in keys):
                    problems.append(f"search.recipes.{r.name}: {keys} include PyTorch-level steps, "
                                    "but model is an ONNX file")  # fmt: skip
            for i, cand in enumerate(self.candidates):
                torch_steps = [s.key for s in cand.steps if s.build().stage is Stage.TORCH]
                if torch_steps:
                    problems.append(
                        f"candidates[{i}]: {torch_steps} need a PyTorch model, but model is "
                        "an ONNX file; use model.builtin or model.factory, or ONNX-level steps"
                    )
        names = [c.name for c in self.candidate_names()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"candidates: names {dupes} appear more than once; each must be unique")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def candidate_names(self) -> list[Candidate]:
        """Candidates with their names filled in (``c<i>-<first key>`` when none is given)."""
        out = []
        for i, cand in enumerate(self.candidates):
            name = cand.name or f"c{i}-" + "-".join(
                s.key.split(".")[-1].replace("_", "-") for s in cand.steps
            )
            out.append(cand.model_copy(update={"name": name}))
        return out

    def resolve(self, path: str) -> Path:
        """A path from the spec, made absolute against the spec file's folder."""
        p = Path(path.removeprefix("file://")).expanduser()
        return p if p.is_absolute() else (self._base_dir / p).resolve()

    def cache_uri(self, run_dir: Path) -> str | None:
        """Where this run's cache lives, or None when caching is off."""
        if not self.cache.enabled:
            return None
        if self.cache.uri is None:
            return str(run_dir.resolve().parent / ".cache")
        return (
            self.cache.uri
            if self.cache.uri.startswith("s3://")
            else str(self.resolve(self.cache.uri))
        )

    def speed_batch(self) -> int:
        """The batch size speed is compared at: the goals' batch, else the smallest measured."""
        for goal in (self.goals.speedup, self.goals.latency):
            if goal is not None:
                return goal.batch
        return self.target.batch_sizes[0]

    @property
    def scored_output(self) -> str | None:
        """The model output that is scored (None: the first)."""
        return getattr(self.model, "output", None)

    def _inputs(self) -> list[tuple[str, str, bool]]:
        """(field, path, is a folder) for every file or folder the spec reads."""
        out = []
        if isinstance(self.data, FileData):
            out.append(("data.path", self.data.path, False))
            if self.data.tokenizer:
                out.append(("data.tokenizer", self.data.tokenizer, True))
        if isinstance(self.model, OnnxModel):
            out.append(("model.onnx", self.model.onnx, False))
        if isinstance(self.model, FactoryModel) and self.model.weights:
            out.append(("model.weights", self.model.weights, False))
        if isinstance(self.model, HuggingFaceModel):
            out.append(("model.huggingface", self.model.huggingface, True))
        return out

    def missing_files(self) -> list[str]:
        """Files the spec names that do not exist, as ``field: path`` lines."""
        out = []
        for field, p, folder in self._inputs():
            path = self.resolve(p)
            if folder and not path.is_dir():
                out.append(f"{field}: folder not found: {path}")
            # data.path may be a folder of npz files
            elif not folder and not (path.exists() if field == "data.path" else path.is_file()):
                out.append(f"{field}: file not found: {path}")
        return out

    def input_files(self) -> list[Path]:
        """The files and folders the spec reads: data, model, weights, tokenizer."""
        return [self.resolve(p) for _, p, _ in self._inputs()]

    def registry_uri(self) -> str:
        """The registry as a URI; a relative path is made absolute against the spec's folder."""
        if self.registry.startswith(("s3://", "mlflow://", "mlflow+https://")):
            return self.registry.rstrip("/") if self.registry.startswith("s3://") else self.registry
        return f"file://{self.resolve(self.registry)}"

    def digest(self) -> str:
        """sha256 of the validated spec in canonical JSON: equal specs, equal digests."""
        canon = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()


def load_spec(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Spec:
    """Read and validate a spec file. ``overrides`` replace top-level keys (e.g. ``registry``).

    Raises:
        SpecError: the file is missing, is not YAML, or does not validate; one line per problem.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError([f"{path}: spec file not found"]) from None
    except IsADirectoryError:
        raise SpecError([f"{path}: is a folder; give the spec's YAML file"]) from None
    except OSError as exc:
        raise SpecError([f"{path}: cannot read the spec file: {exc.strerror}"]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError([f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start}); save the spec as UTF-8"]) from None  # fmt: skip
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([f"{where}: not valid YAML: {problem}"]) from None
    if raw is None:
        raise SpecError([f"{path}: the spec is empty; it needs at least name, model, data "
                         "and goals (`slimgate schema` lists every field)"])  # fmt: skip
    if not isinstance(raw, dict):
        kind = {"list": "a list", "str": "a single string"}.get(
            type(raw).__name__, type(raw).__name__
        )
        raise SpecError([f"{path}: expected a mapping of spec fields (name: ..., data: ...), "
                         f"got {kind}"])  # fmt: skip
    raw.update(overrides or {})
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError([f"{path}: {line}" for line in _error_lines(exc)]) from None
    spec._base_dir = path.resolve().parent
    return spec


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    tagged = False
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in SOURCE_TAGS.get(out, ()) and not tagged:
            tagged = True  # a discriminator tag: the user never wrote it as a level
        else:
            out += f".{part}" if out else str(part)
    return out


def _error_lines(exc: ValidationError) -> list[str]:
    errors = exc.errors(include_url=False)
    # A list whose only item failed also reports "too short": the item's error says it all.
    deeper = {e["loc"][:i] for e in errors for i in range(len(e["loc"]))}
    lines = []
    for err in errors:
        if err["type"] == "too_short" and err["loc"] in deeper:
            continue
        msg = str(err["msg"]).removeprefix("Value error, ")
        where = _loc(err["loc"])
        value = err.get("input")
        shown = (
            ""
            if isinstance(value, dict | list) or err["type"] == "missing"
            else f" (got {value!r})"
        )
        if err["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{where}: {msg}{shown}" if where else f"{msg}{shown}")
    return lines


def _short(config: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items())


def spec_json_schema() -> dict[str, Any]:
    """The spec's JSON Schema, with each recipe step's config schema filled in per optimizer."""
    from optimizers.registry import available

    schema = Spec.model_json_schema()
    optimizers = available()
    step = {
        "description": "an optimizer key, or {key: {config}}",
        "anyOf": [
            {"enum": list(optimizers)},
            {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "additionalProperties": False,
                "properties": {
                    key: {
                        "anyOf": [cls.config_class.model_json_schema(), {"type": "null"}],
                        "description": cls.description,
                    }
                    for key, cls in optimizers.items()
                },
            },
        ],
    }
    schema.setdefault("$defs", {})["RecipeStep"] = step
    return schema
