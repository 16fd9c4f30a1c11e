"""The lock (infra/requirements/) matches pyproject.toml, and this environment matches the lock."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
LOCK_TOOL = ROOT / "infra" / "lock.py"


def lock_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(LOCK_TOOL), *args],
                          capture_output=True, text=True, check=False)  # fmt: skip


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of what the locks are resolved from, to edit."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(ROOT / "infra" / "requirements", tmp_path / "infra" / "requirements")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {path.name} once"
    path.write_text(text.replace(old, new))


def test_the_committed_locks_match_pyproject() -> None:
    proc = lock_tool("--check")
    assert proc.returncode == 0, proc.stderr


def test_this_environment_holds_exactly_the_locked_versions() -> None:
    proc = lock_tool("--check-env", "main")
    assert proc.returncode == 0, proc.stderr


def test_a_range_changed_without_relocking_fails(tree: Path) -> None:
    edit(tree / "pyproject.toml", '"kfp>=2.17,<2.18"', '"kfp>=2.17,<2.19"')
    proc = lock_tool("--check", "--root", str(tree))
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "lock: infra/requirements/main.txt: pyproject.toml's requirements for the 'main' "
        "environment changed since it was locked: run `make lock`"
    )


def test_a_range_that_excludes_the_pin_names_both(tree: Path) -> None:
    edit(tree / "pyproject.toml", '"kfp>=2.17,<2.18"', '"kfp>=2.18"')
    proc = lock_tool("--check", "--root", str(tree))
    assert proc.returncode == 1
    locked = next(line for line in (tree / "infra/requirements/main.txt").read_text().splitlines()
                  if line.startswith("kfp=="))  # fmt: skip
    assert (f"lock: infra/requirements/main.txt: pins {locked}, outside pyproject.toml's "
            "'kfp>=2.18': run `make lock`") in proc.stderr.splitlines()  # fmt: skip


def test_a_group_change_fails_only_its_own_lock(tree: Path) -> None:
    edit(tree / "pyproject.toml", '"apache-airflow-providers-cncf-kubernetes>=10"',
         '"apache-airflow-providers-cncf-kubernetes>=10.1"')  # fmt: skip
    proc = lock_tool("--check", "--root", str(tree))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "lock: infra/requirements/airflow-kubernetes.txt: pyproject.toml's requirements for the "
        "'airflow-kubernetes' environment changed since it was locked: run `make lock`"
    ]


def test_a_hand_edited_lock_that_drops_a_requirement_fails(tree: Path) -> None:
    lock = tree / "infra" / "requirements" / "main.txt"
    lines = lock.read_text().splitlines(keepends=True)
    lock.write_text("".join(line for line in lines if not line.startswith("optuna==")))
    proc = lock_tool("--check", "--root", str(tree))
    assert proc.returncode == 1
    assert ("lock: infra/requirements/main.txt: optuna is required ('optuna>=5,<6') but not "
            "locked: run `make lock`") in proc.stderr.splitlines()  # fmt: skip


def test_a_hand_edited_transitive_pin_fails(tree: Path) -> None:
    lock = tree / "infra" / "requirements" / "main.txt"
    pin = next(line for line in lock.read_text().splitlines() if line.startswith("protobuf=="))
    edit(lock, f"\n{pin}\n", "\nprotobuf==1.0.0\n")
    proc = lock_tool("--check", "--root", str(tree))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "lock: infra/requirements/main.txt: its pins were edited by hand (they no longer match "
        "the digest the resolver stamped): run `make lock`"
    ]


def test_torch_is_locked_at_the_cpu_wheel() -> None:
    lock = (ROOT / "infra" / "requirements" / "main.txt").read_text().splitlines()
    assert "torch==2.13.0+cpu" in lock
    assert not [line for line in lock if line.startswith("nvidia-")], "a CUDA package is locked"


def test_an_environment_off_the_lock_is_named(tree: Path) -> None:
    lock = tree / "infra" / "requirements" / "main.txt"
    edit(lock, "\noptuna==", "\noptuna==0.0.1\n# was optuna==")
    proc = lock_tool("--check-env", "main", "--root", str(tree))
    assert proc.returncode == 1
    from importlib.metadata import version

    assert proc.stderr.splitlines() == [
        f"lock: infra/requirements/main.txt: optuna: locked at 0.0.1, installed {version('optuna')}",
        "lock: run `make install` to install the locked versions",
    ]
