"""The state of a run directory (``state.json``): whether its run is going, finished, failed, or
was abandoned (its process died without saying so: SIGKILL, a lost machine).

``running`` is written first, with the process id and host; the runner replaces it with how the
run ended. A ``running`` state whose process is gone from this host is abandoned: the next run
in the same runs folder marks it so, and ``slimgate run --resume RUN_ID`` continues it from the
steps it finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from components.errors import InputError
from components.layout import write_json

__all__ = [
    "State",
    "inputs_fingerprint",
    "mark_abandoned",
    "read_state",
    "resumable",
    "write_state",
]

State = Literal["running", "promoted", "rejected", "failed", "abandoned"]

FILE = "state.json"


def write_state(run_dir: Path, state: State, **fields: Any) -> None:
    previous = read_state(run_dir) or {}
    record = {**{k: v for k, v in previous.items() if k == "inputs"}, "state": state,
              "pid": os.getpid(), "started_ticks": _start_ticks(os.getpid()),
              "host": socket.gethostname(), "time": datetime.now(UTC).isoformat(), **fields}  # fmt: skip
    write_json(run_dir / FILE, record)


def _start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot): a reused pid has another."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def inputs_fingerprint(files: list[Path]) -> dict[str, str]:
    """Size and modification time of each input file (folders: of every file in them)."""
    out = {}
    for path in files:
        found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in found:
            with contextlib.suppress(OSError):
                st = f.stat()
                out[str(f)] = f"{st.st_size}:{st.st_mtime_ns}"
    return out


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
    except (KeyError, ValueError, TypeError):
        return False
    if pid == os.getpid():
        return True  # (a container's pid 1, restarted: that is us now)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    ticks = record.get("started_ticks")
    reused = ticks is not None and _start_ticks(pid) not in (None, ticks)
    try:  # a killed process its parent has not reaped yet is gone too
        zombie = "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        zombie = False
    return reused or zombie


def mark_abandoned(runs_root: Path) -> list[Path]:
    """Mark every run in ``runs_root`` whose process died while it ran; return them."""
    marked = []
    for state_file in sorted(runs_root.glob(f"*/{FILE}")):
        record = read_state(state_file.parent)
        if record is not None and record.get("state") == "running" and _gone(record):
            record = read_state(state_file.parent)  # it may have finished meanwhile
            if record is None or record.get("state") != "running":
                continue
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
                         f"on {record.get('host')}); if that host is gone, set its state.json's "
                         "state to abandoned")  # fmt: skip
    return record
