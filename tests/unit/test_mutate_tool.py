"""`make mutate`'s own logic (infra/mutate.py) without running mutmut: how mutant names map to
functions, and that every mutant declared equivalent names a function that exists in a module
mutmut mutates, with a reason."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import tomllib
from difflib import SequenceMatcher
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def mutate_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("slimgate_mutate", ROOT / "infra" / "mutate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "module", "function"),
    [
        ("validation.stats.x_examples_needed__mutmut_5", "validation.stats", "examples_needed"),
        (
            "validation.goals.xǁPerClassGoalǁcheck__mutmut_15",
            "validation.goals",
            "PerClassGoal.check",
        ),
        ("components.registry.x__json__mutmut_2", "components.registry", "_json"),
        ("components.stores.xǁS3Storeǁ_put__mutmut_6", "components.stores", "S3Store._put"),
    ],
)
def test_mutant_names_map_to_module_and_function(name: str, module: str, function: str) -> None:
    assert mutate_tool()._split(name) == (module, function)


def functions_of(path: Path) -> dict[str, list[str]]:
    """Each function (``Class.method`` for methods) and its source lines, stripped."""
    source = path.read_text()
    found: dict[str, list[str]] = {}

    def lines(node: ast.AST) -> list[str]:
        text = ast.get_source_segment(source, node) or ""
        return [line.strip() for line in text.splitlines()]

    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = lines(node)
        elif isinstance(node, ast.ClassDef):
            for f in node.body:
                if isinstance(f, ast.FunctionDef):
                    found[f"{node.name}.{f.name}"] = lines(f)
    return found


def token_changes(a: str, b: str) -> int:
    """How many tokens differ between two lines (an operator swapped: 1; a condition forced
    with ``(...) and False``: 4)."""
    ta, tb = re.findall(r"\w+|[^\w\s]", a), re.findall(r"\w+|[^\w\s]", b)
    ops = SequenceMatcher(None, ta, tb, autojunk=False).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in ops if tag != "equal")


def test_every_equivalent_mutant_names_a_mutated_function_and_a_reason() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    paths = [p for pattern in config["only_mutate"] for p in sorted(ROOT.glob(pattern))]
    known: dict[str, list[str]] = {}
    for path in paths:
        known |= functions_of(path)
    entries = mutate_tool().load_equivalents()
    assert entries
    for entry in entries:
        assert entry.function in known, entry
        assert entry.line and len(entry.reason) > 10, entry
        # the mutated line is an operator or two away from a line of that function
        code = entry.line.split("  #")[0]  # the source segments end before a line's comment
        closest = min(token_changes(code, line) for line in known[entry.function])
        assert closest <= 4, (entry, closest)
    assert len({(e.function, e.line) for e in entries}) == len(entries)  # no entry twice
