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
    "Candidate",
    "DataValidation",
    "FactoryModel",
    "FileData",
    "OnnxModel",
    "RecipeStep",
    "Spec",
    "Split",
    "Target",
    "Training",
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
    """An already exported ONNX model; only ONNX-level optimizers can apply to it."""

    onnx: str


class FactoryModel(StrictModel):
    """A PyTorch model built by ``module:function``; trained unless ``weights`` is given.

    ``weights`` is a ``state_dict`` file, loaded with ``torch.load(weights_only=True)``:
    never unpickled as arbitrary objects.
    """

    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    weights: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)


def _source_kind(keys: tuple[str, ...]) -> Any:
    def kind(value: Any) -> str | None:
        if isinstance(value, Mapping):
            found = [k for k in keys if k in value]
        else:  # a validated model being serialized
            found = [k for k in keys if k in type(value).model_fields]
        return found[0] if len(found) == 1 else None

    return kind


ModelSource = Annotated[
    Annotated[BuiltinModel, Tag("builtin")]
    | Annotated[OnnxModel, Tag("onnx")]
    | Annotated[FactoryModel, Tag("factory")],
    Discriminator(
        _source_kind(("builtin", "onnx", "factory")),
        custom_error_type="model_source",
        custom_error_message="expected exactly one of 'builtin', 'onnx' or 'factory'",
    ),
]


# --- data --------------------------------------------------------------------------------------


class BuiltinData(StrictModel):
    """A dataset that ships with scikit-learn."""

    builtin: Literal["digits", "breast_cancer", "wine"]


class FileData(StrictModel):
    """A table of numeric feature columns and one label column."""

    path: str
    format: Literal["csv", "parquet", "npz"] | None = Field(
        default=None, description="taken from the file suffix when not given"
    )
    label: str = "label"


DataSource = Annotated[
    Annotated[BuiltinData, Tag("builtin")] | Annotated[FileData, Tag("path")],
    Discriminator(
        _source_kind(("builtin", "path")),
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
    labels: list[str] | None = Field(default=None, description="the allowed label values")
    min_rows: int = Field(default=30, ge=1)
    min_rows_per_split: int = Field(default=10, ge=1)
    min_rows_per_class: int = Field(default=3, ge=1)
    max_class_ratio: float | None = Field(default=20.0, ge=1)
    allow_duplicates: bool = False
    allow_train_test_overlap: bool = False
    reference: str | None = None
    max_drift_psi: float = Field(default=0.25, gt=0)
    expectations: list[UserExpectation] = Field(default_factory=list)

    @field_validator("ranges")
    @classmethod
    def _ordered(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        bad = [f"{k}: [{lo}, {hi}]" for k, (lo, hi) in v.items() if lo > hi]
        if bad:
            raise ValueError(f"each range must be [min, max] with min <= max; got {bad}")
        return v


# --- training, target, benchmark --------------------------------------------------------------


class Training(StrictModel):
    """How the baseline step trains a built-in or factory model without weights."""

    epochs: int = Field(default=10, ge=1, le=1000)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=3e-3, gt=0, le=1)
    weight_decay: float = Field(default=1e-4, ge=0)
    seed: int = 0


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


# --- the spec ----------------------------------------------------------------------------------


class Spec(StrictModel):
    """A slimgate run: model, data, target hardware, goals, candidate recipes, and where to publish."""

    name: str = Field(pattern=_NAME, description="the model's name in the registry")
    model: ModelSource
    data: DataSource
    split: Split = Split()
    validation: DataValidation = DataValidation()
    training: Training = Training()
    target: Target = Target()
    benchmark: BenchmarkSettings = BenchmarkSettings()
    goals: Goals
    candidates: tuple[Candidate, ...] = Field(min_length=1)
    select: Literal["fastest", "smallest", "knee"] = Field(
        default="fastest", description="knee: of the latency/accuracy Pareto front"
    )
    registry: str = "file://./registry"
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
        if "://" in v and not v.startswith("file://"):
            raise ValueError(f"{v!r}: expected s3://BUCKET/PREFIX, file://PATH or a plain path")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Spec:
        problems = []
        for goal_name in ("latency", "speedup"):
            goal = getattr(self.goals, goal_name)
            if goal is not None and goal.batch not in self.target.batch_sizes:
                problems.append(
                    f"goals.{goal_name}.batch = {goal.batch} is not among "
                    f"target.batch_sizes {list(self.target.batch_sizes)}; add it there"
                )
        if isinstance(self.model, OnnxModel):
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

    def speed_batch(self) -> int:
        """The batch size speed is compared at: the goals' batch, else the smallest measured."""
        for goal in (self.goals.speedup, self.goals.latency):
            if goal is not None:
                return goal.batch
        return self.target.batch_sizes[0]

    def missing_files(self) -> list[str]:
        """Files the spec names that do not exist, as ``field: path`` lines."""
        named = []
        if isinstance(self.data, FileData):
            named.append(("data.path", self.data.path))
        if isinstance(self.model, OnnxModel):
            named.append(("model.onnx", self.model.onnx))
        if isinstance(self.model, FactoryModel) and self.model.weights:
            named.append(("model.weights", self.model.weights))
        return [
            f"{field}: file not found: {self.resolve(p)}"
            for field, p in named
            if not self.resolve(p).is_file()
        ]

    def registry_uri(self) -> str:
        """The registry as a URI; a relative path is made absolute against the spec's folder."""
        if self.registry.startswith("s3://"):
            return self.registry.rstrip("/")
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
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError([f"{path}: spec file not found"]) from None
    except OSError as exc:
        raise SpecError([f"{path}: cannot read the spec file: {exc.strerror}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([f"{where}: not valid YAML: {problem}"]) from None
    if not isinstance(raw, dict):
        raise SpecError([f"{path}: expected a mapping of spec fields, got {type(raw).__name__}"])
    raw.update(overrides or {})
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError([f"{path}: {line}" for line in _error_lines(exc)]) from None
    spec._base_dir = path.resolve().parent
    return spec


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("builtin", "onnx", "factory", "path") and out in ("model", "data"):
            continue  # discriminator tags: the user never wrote them as a level
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
