"""The state of a run directory (``state.json``): whether its run is going, finished, failed, or
was abandoned (its process died without saying so: SIGKILL, a lost machine).

``running`` is written first, with the process id and host; the runner replaces it with how the
run ended. A ``running`` state whose process is gone from this host is abandoned: the next run
in the same runs folder marks it so, and ``slimgate run --resume RUN_ID`` continues it from the
steps it finished.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from components.errors import InputError
from components.layout import write_json

__all__ = ["State", "mark_abandoned", "read_state", "resumable", "write_state"]

State = Literal["running", "promoted", "rejected", "failed", "abandoned"]

FILE = "state.json"


def write_state(run_dir: Path, state: State, **fields: Any) -> None:
    record = {"state": state, "pid": os.getpid(), "host": socket.gethostname(),
              "time": datetime.now(UTC).isoformat(), **fields}  # fmt: skip
    write_json(run_dir / FILE, record)


def read_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        found = json.loads((run_dir / FILE).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _gone(record: dict[str, Any]) -> bool:
    """Whether a ``running`` record's process is gone (only this host can tell)."""
    if record.get("host") != socket.gethostname():
        return False
    try:
        pid = int(record["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    try:  # a killed process its parent has not reaped yet is gone too
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def mark_abandoned(runs_root: Path) -> list[Path]:
    """Mark every run in ``runs_root`` whose process died while it ran; return them."""
    marked = []
    for state_file in sorted(runs_root.glob(f"*/{FILE}")):
        record = read_state(state_file.parent)
        if record is not None and record.get("state") == "running" and _gone(record):
            write_json(state_file, {**record, "state": "abandoned",
                                    "abandoned_found": datetime.now(UTC).isoformat()})  # fmt: skip
            marked.append(state_file.parent)
    return marked


def resumable(run_dir: Path) -> dict[str, Any]:
    """The state of a run that ``--resume`` may continue; raise ``InputError`` saying why not."""
    if not run_dir.is_dir():
        raise InputError(f"--resume: {run_dir} is not a run directory")
    record = read_state(run_dir)
    if record is None:
        raise InputError(f"--resume: {run_dir} has no {FILE}; it is not a run slimgate started")
    state = record.get("state")
    if state in ("promoted", "rejected"):
        raise InputError(f"--resume: run {run_dir.name} finished ({state}); nothing to continue")
    if state == "running" and not _gone(record):
        raise InputError(f"--resume: run {run_dir.name} is still running (pid {record.get('pid')} "
                         f"on {record.get('host')})")  # fmt: skip
    return record
