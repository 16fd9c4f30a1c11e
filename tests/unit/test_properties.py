"""Property-based tests (hypothesis) of the spec loader, the CLI and the data loader: whatever
they are given, they end in a result or in bad input (exit 2), never a traceback, and write
nothing to the registry. Bounded example counts keep them within a few seconds each."""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.cli import main
from components.errors import InputError, SpecError
from components.spec import load_spec
from components.testing import write_quick_spec

# derandomized: the same examples every run (CI stays deterministic), and no example database
QUICK = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

scalars = (
    st.none() | st.booleans() | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


@contextlib.contextmanager
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        old = Path.cwd()
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(old)


def quick_spec(tmp: Path) -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load(write_quick_spec(tmp).read_text())
    return found


def paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into a spec, to put a random value at."""
    out = [prefix] if prefix else []
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += paths(v, (*prefix, i))
    return out


@QUICK
@given(st.binary(max_size=300))
def test_any_bytes_as_a_spec_load_or_are_refused(data: bytes) -> None:
    with folder() as tmp:
        path = tmp / "spec.yaml"
        path.write_bytes(data)
        try:
            load_spec(path)
        except SpecError as exc:
            assert exc.lines and all(line.strip() for line in exc.lines)


@QUICK
@given(values)
def test_any_yaml_document_loads_or_is_refused(document: Any) -> None:
    with folder() as tmp:
        path = tmp / "spec.yaml"
        path.write_text(yaml.safe_dump(document))
        try:
            load_spec(path)
        except SpecError as exc:
            assert exc.lines


@QUICK
@given(st.data())
def test_a_random_value_in_any_field_exits_0_or_2(data: st.DataObject) -> None:
    with folder() as tmp:
        spec = quick_spec(tmp)
        where = data.draw(st.sampled_from(paths(spec)))
        value = data.draw(values)
        edited = copy.deepcopy(spec)
        node = edited
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = value
        (tmp / "spec.yaml").write_text(yaml.safe_dump(edited))
        assert main(["validate", str(tmp / "spec.yaml")]) in (0, 2)
        assert not (tmp / "registry").exists()


cells = st.one_of(
    st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.text(alphabet="ab,\"\n ", max_size=4), st.just(""),
)  # fmt: skip


@settings(QUICK, max_examples=12)
@given(st.integers(0, 80), st.integers(1, 4), st.data())
def test_any_csv_is_prepared_or_refused_as_bad_data(
    rows: int, columns: int, data: st.DataObject
) -> None:
    from components.prepare import prepare_data

    with folder() as tmp:
        header = ",".join([f"f{j}" for j in range(columns)] + ["target"])
        lines = [header]
        for _ in range(rows):
            cols = [str(data.draw(cells)) for _ in range(columns)]
            lines.append(",".join([*cols, str(data.draw(st.integers(0, 2)))]))
        (tmp / "data.csv").write_text("\n".join(lines) + "\n")
        spec = load_spec(write_quick_spec(tmp, data={"path": "data.csv", "label": "target"},
                                          goals={"accuracy": {"max_drop": 0.1}}))  # fmt: skip
        try:
            info = prepare_data(spec, tmp / "run")
        except InputError as exc:
            assert str(exc).strip()
        else:
            assert info["rows"] == rows
        assert not (tmp / "registry").exists()
