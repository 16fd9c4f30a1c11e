"""A BERT-style text classifier, built from a config and saved with ``save_pretrained`` (nothing
downloaded), classifying text from a CSV through a local tokenizer built here: as a
``huggingface:`` directory (so torch-level techniques apply: heads pruned) and as its ONNX
export with three inputs (input_ids, attention_mask, token_type_ids)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from components.layout import RunLayout, read_json
from components.runner import run
from components.spec import load_spec
from components.testing import QUICK_BENCHMARK

pytest.importorskip("transformers", reason="install slimgate[text] for text models")

KEYWORDS = ["red", "green", "blue", "cyan"]
FILLER = ["the", "a", "one", "two", "cat", "dog", "runs", "sits", "on", "under", "big", "small", "old", "new", "house", "tree", "road", "car", "sky", "sea", "hill", "town"]  # fmt: skip


def texts(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Sentences of filler words with one keyword that gives the class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(KEYWORDS), size=n)
    out = []
    for label in y:
        words = list(rng.choice(FILLER, size=int(rng.integers(4, 9))))
        words.insert(int(rng.integers(0, len(words) + 1)), KEYWORDS[label])
        out.append(" ".join(words))
    return out, y.astype(np.int64)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import pandas as pd
    import torch
    import transformers
    from transformers import BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("text")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *KEYWORDS, *FILLER]
    tokenizer = transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})  # type: ignore[attr-defined]
    tokenizer.save_pretrained(root / "tokenizer")
    sentences, y = texts(480, seed=0)
    pd.DataFrame({"text": sentences, "label": [KEYWORDS[i] for i in y]}).to_csv(
        root / "texts.csv", index=False
    )
    settings: dict[str, Any] = dict(
        vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32, num_labels=len(KEYWORDS),
        attn_implementation="eager",
    )  # fmt: skip
    config = BertConfig(**settings)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    # labels sorted as the data's classes: blue, cyan, green, red
    order = {k: i for i, k in enumerate(sorted(KEYWORDS))}
    target = torch.tensor([order[KEYWORDS[i]] for i in y])
    enc = tokenizer(sentences, max_length=16, padding="max_length", truncation=True,
                    return_tensors="pt")  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(10):
        for i in range(0, len(target), 32):
            batch = {k: v[i : i + 32] for k, v in enc.items()}
            loss = model(**batch, labels=target[i : i + 32]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()  # type: ignore[no-untyped-call]
    model.save_pretrained(root / "model")
    sample = {k: v[:1] for k, v in enc.items()}
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(model, tuple(sample[n] for n in names), str(root / "model.onnx"),
                      input_names=names, output_names=["logits"],
                      dynamic_axes={n: {0: "batch"} for n in [*names, "logits"]},
                      opset_version=17, dynamo=False)  # fmt: skip
    return {"root": root}


def spec_file(root: Path, name: str, **fields: Any) -> Path:
    spec = {
        "name": name,
        "data": {"path": str(root / "texts.csv"), "text": "text",
                 "tokenizer": str(root / "tokenizer"), "max_length": 16},
        "target": {"threads": 1, "batch_sizes": [1]},
        "benchmark": QUICK_BENCHMARK,
        "goals": {"accuracy": {"max_drop": 0.1}},
        "candidates": [["quantization.dynamic_int8"]],
        "select": "smallest",
        "registry": str(root / "registry"),
        **fields,
    }  # fmt: skip
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_save_pretrained_classifier_is_head_pruned_and_quantized(
    encoder: dict[str, Path], tmp_path: Path
) -> None:
    root = encoder["root"]
    path = spec_file(root, "text-hf", model={"huggingface": str(root / "model")},
                     candidates=[["quantization.dynamic_int8"],
                                 [{"pruning.structured": {"ratio": 0.5, "fine_tune_epochs": 2}},
                                  "quantization.dynamic_int8"]])  # fmt: skip
    result = run(load_spec(path), tmp_path / "runs")
    layout = RunLayout(result.run_dir)
    info = read_json(layout.dataset)
    assert list(info["inputs"]) == ["input_ids", "token_type_ids", "attention_mask"]
    assert info["classes"] == sorted(KEYWORDS)
    base = read_json(layout.baseline.metrics)
    assert base["accuracy"] > 0.9
    assert read_json(layout.baseline.train_record)["trained"] is False  # loaded, not retrained
    pruned = read_json(layout.candidate("c1-structured-dynamic-int8").optimize_record)["steps"][0]
    assert pruned["details"]["heads"] == [[4, 2], [4, 2]]  # whole heads removed, per layer
    assert result.status == "promoted", read_json(layout.verdict)["reason"]


def test_its_three_input_onnx_export_classifies_the_same_text(
    encoder: dict[str, Path], tmp_path: Path
) -> None:
    root = encoder["root"]
    path = spec_file(root, "text-onnx", model={"onnx": str(root / "model.onnx")},
                     candidates=[["quantization.dynamic_int8"], ["quantization.static_int8"]])  # fmt: skip
    result = run(load_spec(path), tmp_path / "runs")
    layout = RunLayout(result.run_dir)
    # calibration fed all three inputs (a missing one would fail the step)
    static = read_json(layout.candidate("c1-static-int8").optimize_record)["steps"][0]["details"]
    assert static["calibration_rows"] >= 16 and static["qdq_pairs"] > 0
    import onnxruntime as ort

    names = [i.name for i in ort.InferenceSession(str(layout.baseline.model)).get_inputs()]
    assert names == ["input_ids", "attention_mask", "token_type_ids"]
    assert read_json(layout.baseline.metrics)["accuracy"] > 0.9
    assert result.status == "promoted", read_json(layout.verdict)["reason"]


@pytest.fixture(scope="module")
def embedder(encoder: dict[str, Path]) -> dict[str, Path]:
    """A sentence encoder (a BertModel, no head) saved with save_pretrained, texts without
    labels, and its ONNX export whose output is last_hidden_state [batch, sequence, hidden]."""
    import pandas as pd
    import torch
    from transformers import BertConfig, BertModel

    root = encoder["root"]
    sentences, _ = texts(360, seed=1)
    pd.DataFrame({"text": sentences}).drop_duplicates().to_csv(root / "unlabelled.csv", index=False)
    settings: dict[str, Any] = dict(
        vocab_size=len(KEYWORDS) + len(FILLER) + 5, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=32,
        attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(1)
    model = BertModel(BertConfig(**settings), add_pooling_layer=False).eval()  # type: ignore[no-untyped-call]
    model.save_pretrained(root / "encoder")

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> Any:
            out = self.model(input_ids=ids, attention_mask=mask, token_type_ids=types)
            return out.last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = tuple(torch.ones(1, 16, dtype=torch.int64) for _ in names)
    torch.onnx.export(Hidden(), sample, str(root / "encoder.onnx"), input_names=names,
                      output_names=["last_hidden_state"],
                      dynamic_axes={n: {0: "batch"} for n in [*names, "last_hidden_state"]},
                      opset_version=17, dynamo=False)  # fmt: skip
    return {"root": root}


def embedding_spec(root: Path, name: str, **fields: Any) -> Path:
    return spec_file(
        root, name, task="embedding",
        data={"path": str(root / "unlabelled.csv"), "text": "text",
              "tokenizer": str(root / "tokenizer"), "max_length": 16},
        goals={"fidelity": {"min_cosine": 0.98}, "neighbours": {"min": 0.6, "k": 5}},
        **fields,
    )  # fmt: skip


def test_an_unlabelled_encoder_is_gated_on_fidelity_and_neighbours(
    embedder: dict[str, Path], tmp_path: Path
) -> None:
    root = embedder["root"]
    path = embedding_spec(root, "embed-hf", model={"huggingface": str(root / "encoder")},
                          candidates=[["quantization.dynamic_int8"],
                                      [{"pruning.structured": {"ratio": 0.25, "fine_tune_epochs": 3}},
                                       "quantization.dynamic_int8"]])  # fmt: skip
    result = run(load_spec(path), tmp_path / "runs")
    layout = RunLayout(result.run_dir)
    assert read_json(layout.dataset)["classes"] == []
    base = read_json(layout.baseline.metrics)
    assert base["dimensions"] == 32 and "accuracy" not in base
    pruned = "c1-structured-dynamic-int8"
    step = read_json(layout.candidate(pruned).optimize_record)["steps"][0]
    # fine-tuned on the baseline's outputs: there are no labels
    assert step["details"]["fine_tune"]["epochs"] == 3
    assert step["details"]["heads"] == [[4, 3], [4, 3]]
    verdict = read_json(layout.verdict)
    for entry in verdict["candidates"]:
        assert {g["goal"] for g in entry["goals"]} == {"fidelity", "neighbours"}
        assert all(g["value"] is not None for g in entry["goals"])
    int8 = read_json(layout.candidate("c0-dynamic-int8").metrics)
    assert int8["cosine"] > 0.98 and int8["neighbours@10"] > 0.6
    assert result.status == "promoted", verdict["reason"]


def test_an_encoder_export_with_a_sequence_output_is_mean_pooled(
    embedder: dict[str, Path], tmp_path: Path
) -> None:
    root = embedder["root"]
    path = embedding_spec(root, "embed-onnx", model={"onnx": str(root / "encoder.onnx")})
    result = run(load_spec(path), tmp_path / "runs")
    layout = RunLayout(result.run_dir)
    with np.load(layout.baseline.predictions) as arrays:
        assert arrays["logits"].shape[1] == 32  # [rows, hidden]: pooled over the mask
    assert result.status == "promoted", read_json(layout.verdict)["reason"]


def test_labels_for_an_embedding_task_are_refused_by_name(
    encoder: dict[str, Path], tmp_path: Path
) -> None:
    from components.errors import DataError

    root = encoder["root"]
    path = spec_file(root, "embed-labelled", task="embedding",
                     model={"onnx": str(root / "model.onnx")},
                     goals={"fidelity": {"min_cosine": 0.9}})  # fmt: skip
    with pytest.raises(DataError, match=r"texts\.csv: task embedding takes no labels, but the "
                                        r"data has a column 'label' \(data\.label\)"):  # fmt: skip
        run(load_spec(path), tmp_path / "runs")


def test_init_writes_a_spec_that_runs_on_text_through_the_local_tokenizer(
    encoder: dict[str, Path], tmp_path: Path
) -> None:
    from components.cli import main

    root = encoder["root"]
    out = tmp_path / "spec.yaml"
    assert main(["init", str(root / "model"), str(root / "texts.csv"), "-o", str(out),
                 "--tokenizer", str(root / "tokenizer")]) == 0  # fmt: skip
    spec = yaml.safe_load(out.read_text())
    assert (tmp_path / spec["model"]["huggingface"]).resolve() == (root / "model").resolve()
    assert spec["data"]["text"] == "text" and spec["data"]["max_length"] == 32  # its positions
    assert main(["validate", str(out)]) == 0
    spec |= {"benchmark": QUICK_BENCHMARK, "target": {"threads": 1, "batch_sizes": [1]},
             "goals": {"accuracy": {"max_drop": 0.2}}, "candidates": spec["candidates"][:1]}  # fmt: skip
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["run", str(out), "--runs-dir", str(tmp_path / "runs")]) in (0, 3)
