"""Heavy libraries load inside the functions that use them, so parsing a DAG, compiling a
pipeline, `slimgate --help` and validating a spec stay fast."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ["torch", "onnxruntime", "onnx", "sklearn", "pandas", "scipy"]

PROBE = f"""
import sys
import components.cli, components.runner, components.gate, components.promote, components.report
from components.cli import demo_spec_path
from components.spec import load_spec, spec_json_schema
from optimizers.registry import available
load_spec(demo_spec_path())
spec_json_schema()
available()
print([m for m in {HEAVY!r} if m in sys.modules])
"""


def test_cli_runner_and_spec_do_not_import_heavy_libraries() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
