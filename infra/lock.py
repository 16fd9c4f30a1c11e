"""The lock: exact versions for every environment slimgate installs, resolved from pyproject.toml.

    python infra/lock.py              # re-resolve what changed in pyproject.toml (`make lock`)
    python infra/lock.py --upgrade    # move every pin to the newest release the ranges allow
    python infra/lock.py --check      # the locks still match pyproject.toml (a test runs this)
    python infra/lock.py --check-env main   # this interpreter has exactly the locked versions

Each environment's lock is written by uv's resolver (`uv pip compile`) for the machines slimgate
runs on (CPython 3.11, Linux x86_64) and stamped with a digest of the requirements it was resolved
from, so a range changed without re-locking is caught. Installs read the lock as pip constraints
(`pip install -c`), so they get exactly these versions or fail.

torch is held at the CPU wheel by `constraints.txt`: the resolver is pointed at a folder that holds
it (``TORCH_WHEELS``, /opt/wheels on these machines), because any other torch pulls several GB of
CUDA packages.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOCK_DIR = Path("infra/requirements")
CONSTRAINTS = LOCK_DIR / "constraints.txt"
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
DIGEST_PREFIX = "# inputs-sha256: "
PINS_PREFIX = "# pins-sha256: "
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


@dataclass(frozen=True)
class Environment:
    """One environment that slimgate installs, and what it is resolved from."""

    name: str
    project: bool  # slimgate's own dependencies and every extra
    groups: tuple[str, ...]  # dependency groups of pyproject.toml
    purpose: str

    @property
    def lock(self) -> Path:
        return LOCK_DIR / f"{self.name}.txt"


ENVIRONMENTS = (
    Environment("main", project=True, groups=("tools",),
                purpose=".venv (every extra), the container image"),
    Environment("airflow-kubernetes", project=False, groups=("tools", "airflow-kubernetes"),
                purpose=".venv-k8s: a scheduler for the DAG's Kubernetes mode"),
)  # fmt: skip


def environment(name: str) -> Environment:
    for env in ENVIRONMENTS:
        if env.name == name:
            return env
    known = ", ".join(e.name for e in ENVIRONMENTS)
    raise SystemExit(f"lock: unknown environment {name!r}; known: {known}")


def _pyproject(root: Path) -> dict[str, Any]:
    with (root / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def requirements(env: Environment, root: Path) -> list[str]:
    """The requirement strings of pyproject.toml that `env` is resolved from."""
    data = _pyproject(root)
    project, groups = data["project"], data.get("dependency-groups", {})
    reqs: list[str] = []
    if env.project:
        reqs += project.get("dependencies", [])
        for extra in sorted(project.get("optional-dependencies", {})):
            reqs += project["optional-dependencies"][extra]
    for group in env.groups:
        if group not in groups:
            raise SystemExit(f"lock: pyproject.toml has no [dependency-groups] {group!r}")
        reqs += groups[group]
    return reqs


def digest(env: Environment, root: Path) -> str:
    """A digest of everything the lock of `env` is resolved from."""
    inputs = {
        "requirements": requirements(env, root),
        "requires-python": _pyproject(root)["project"].get("requires-python"),
        "constraints": (root / CONSTRAINTS).read_text(),
        "python": PYTHON_VERSION,
        "platform": PLATFORM,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def pins(lock: Path) -> dict[str, str]:
    """``{normalized name: version}`` of a lock file."""
    out: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        if m := PIN.match(line):
            out[_normalize(m.group(1))] = m.group(2)
    return out


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins_digest(lock_text: str) -> str:
    """A digest of a lock's pins, so a hand edit of any pin (a transitive one too) is caught."""
    lines = sorted(line.strip() for line in lock_text.splitlines() if PIN.match(line))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _stamped(lock_text: str, prefix: str) -> str | None:
    return next((line.removeprefix(prefix).strip() for line in lock_text.splitlines()
                 if line.startswith(prefix)), None)  # fmt: skip


def compile_lock(env: Environment, root: Path, *, upgrade: bool) -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        raise SystemExit("lock: uv is not installed: run `make install` (it is in the tools group)")
    wheels = os.environ.get("TORCH_WHEELS", "/opt/wheels")
    cmd = [uv, "pip", "compile", "--quiet", "--python-version", PYTHON_VERSION,
           "--python-platform", PLATFORM, "-c", str(CONSTRAINTS), "--find-links", wheels,
           "--custom-compile-command", "make lock", "-o", str(env.lock)]  # fmt: skip
    if env.project:
        cmd += ["pyproject.toml", "--all-extras"]
    for group in env.groups:
        cmd += ["--group", f"pyproject.toml:{group}"]
    if upgrade:
        cmd.append("--upgrade")
    subprocess.run(cmd, cwd=root, check=True)
    lock = root / env.lock
    lines = lock.read_text().splitlines(keepends=True)
    # after uv's two header lines: the digest, then what the lock is for
    body = "".join(lines)
    stamp = [f"{DIGEST_PREFIX}{digest(env, root)}\n", f"{PINS_PREFIX}{pins_digest(body)}\n",
             f"# for: {env.purpose}\n"]  # fmt: skip
    lock.write_text("".join(lines[:2] + stamp + lines[2:]))


def check(root: Path) -> list[str]:
    """Every way the committed locks disagree with pyproject.toml, one line each."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    marker_env = {str(k): str(v) for k, v in default_environment().items()}
    marker_env |= {"python_version": PYTHON_VERSION, "sys_platform": "linux",
                   "platform_machine": "x86_64"}  # fmt: skip
    problems: list[str] = []
    for env in ENVIRONMENTS:
        lock = root / env.lock
        if not lock.exists():
            problems.append(f"{env.lock}: missing: run `make lock`")
            continue
        text = lock.read_text()
        if _stamped(text, PINS_PREFIX) != pins_digest(text):
            problems.append(f"{env.lock}: its pins were edited by hand (they no longer match "
                            "the digest the resolver stamped): run `make lock`")  # fmt: skip
        if _stamped(text, DIGEST_PREFIX) != digest(env, root):
            problems.append(
                f"{env.lock}: pyproject.toml's requirements for the {env.name!r} environment "
                f"changed since it was locked: run `make lock`"
            )
        locked = pins(lock)
        for text in requirements(env, root):
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate(marker_env):
                continue
            version = locked.get(_normalize(req.name))
            if version is None:
                problems.append(f"{env.lock}: {req.name} is required ({text!r}) but not locked: "
                                "run `make lock`")  # fmt: skip
            elif not req.specifier.contains(version, prereleases=True):
                problems.append(f"{env.lock}: pins {req.name}=={version}, outside pyproject.toml's "
                                f"{text!r}: run `make lock`")  # fmt: skip
    return problems


def check_environment(env: Environment, root: Path) -> list[str]:
    """Every locked distribution that this interpreter lacks or has at another version."""
    from importlib import metadata

    from packaging.version import Version

    problems = []
    for name, version in sorted(pins(root / env.lock).items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name}: locked at {version}, not installed")
            continue
        if Version(installed) != Version(version):
            problems.append(f"{name}: locked at {version}, installed {installed}")
    return problems


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    rows = []
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if old != new:
            rows.append(f"  {name:40} {old or '(new)':>20} -> {new or '(removed)'}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra/lock.py", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--upgrade", action="store_true", help="newest versions the ranges allow")
    mode.add_argument("--check", action="store_true", help="the locks match pyproject.toml")
    mode.add_argument("--check-env", metavar="ENV", help="this interpreter matches ENV's lock")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project's root")
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()

    if args.check or args.check_env:
        if args.check:
            problems = check(root)
        else:
            env = environment(args.check_env)
            problems = [f"{env.lock}: {p}" for p in check_environment(env, root)]
            if problems:
                problems.append("run `make install` to install the locked versions")
        for problem in problems:
            print(f"lock: {problem}", file=sys.stderr)
        return 1 if problems else 0

    for env in ENVIRONMENTS:
        lock = root / env.lock
        before = pins(lock) if lock.exists() else {}
        compile_lock(env, root, upgrade=args.upgrade)
        rows = changes(before, pins(lock))
        print(f"{env.lock}: " + (f"{len(rows)} changed" if rows else "unchanged"))
        for row in rows:
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
