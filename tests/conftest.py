from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from components.cli import demo_spec_path


@pytest.fixture
def demo_spec() -> dict[str, Any]:
    """The built-in example's spec as a dict, for tests to edit and write back."""
    spec: dict[str, Any] = yaml.safe_load(demo_spec_path().read_text())
    return spec


@pytest.fixture
def write_spec(tmp_path: Path) -> Any:
    def write(spec: dict[str, Any], name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return write
