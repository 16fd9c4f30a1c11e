"""The host's lock, across real processes: work shares it, a measurement holds it alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.hostlock import HostLock, host_lock

# A process that takes the lock MODE ("shared" or "exclusive"), says so in HELD, waits until
# RELEASE exists, then gives it back and writes the time it did in DONE.
HOLDER = """
import sys, time
from pathlib import Path
from components.hostlock import HostLock
lock, mode, held, release, done = sys.argv[1:]
hold = HostLock(Path(lock)).shared() if mode == "shared" else HostLock(Path(lock)).exclusive("t")
with hold:
    Path(held).write_text(str(time.time()))
    while not Path(release).exists():
        time.sleep(0.01)
    stamp = time.time()
Path(done).write_text(str(stamp))
"""


def _holder(
    lock: Path, mode: str, tmp: Path, name: str
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    held, release, done = tmp / f"{name}.held", tmp / f"{name}.release", tmp / f"{name}.done"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), mode, str(held),
                             str(release), str(done)])  # fmt: skip
    deadline = time.monotonic() + 30
    while not held.exists():
        assert proc.poll() is None, "the holder exited before taking the lock"
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.01)
    return proc, release, done


def _try(lock: Path, mode: str) -> bool:
    """Whether another process could take the lock in ``mode`` right now, without waiting."""
    code = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "mode = fcntl.LOCK_SH if sys.argv[2] == 'shared' else fcntl.LOCK_EX\n"
        "try:\n    fcntl.flock(fd, mode | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(lock), mode], check=False)
    return proc.returncode == 0


def test_work_shares_the_lock_and_a_measurement_waits_for_it(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "host.lock"
    builder, release, done = _holder(lock, "shared", tmp_path, "builder")
    assert _try(lock, "shared"), "two steps may work side by side"
    assert not _try(lock, "exclusive"), "but nothing measures beside them"
    release.touch()
    with HostLock(lock).exclusive("m") as hold:
        got = hold.acquired
    builder.wait(timeout=30)
    assert got >= float(done.read_text())  # taken only once the builder had let go
    assert oct(lock.parent.stat().st_mode & 0o7777) == "0o1777"  # every user of the host


def test_new_work_waits_while_a_measurement_runs(tmp_path: Path) -> None:
    lock = tmp_path / "host.lock"
    measurer, release, done = _holder(lock, "exclusive", tmp_path, "measurer")
    assert not _try(lock, "shared")
    release.touch()
    with HostLock(lock).shared():
        started = time.time()
    measurer.wait(timeout=30)
    assert started >= float(done.read_text())


def test_a_working_process_gives_up_its_share_to_measure_and_takes_it_back(
    tmp_path: Path,
) -> None:
    lock = HostLock(tmp_path / "host.lock")
    with lock.shared():
        assert not _try(lock.path, "exclusive")
        with lock.exclusive("outer") as outer, lock.exclusive("inner") as inner:
            assert not _try(lock.path, "shared")
            assert inner.waited_s == outer.waited_s and inner.acquired >= outer.acquired
        assert outer.released is not None and inner.released is not None
        assert outer.acquired <= inner.acquired <= inner.released <= outer.released
        assert _try(lock.path, "shared") and not _try(lock.path, "exclusive")
    assert _try(lock.path, "exclusive")  # all given back


def test_a_killed_holder_leaves_the_host_unlocked(tmp_path: Path) -> None:
    lock = tmp_path / "host.lock"
    proc, _, _ = _holder(lock, "exclusive", tmp_path, "killed")
    assert not _try(lock, "shared")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with HostLock(lock).exclusive("after") as hold:
        assert hold.waited_s < 30


def test_the_lock_file_is_chosen_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLIMGATE_HOST_LOCK", str(tmp_path / "a.lock"))
    assert host_lock().path == tmp_path / "a.lock" and host_lock() is host_lock()
    monkeypatch.delenv("SLIMGATE_HOST_LOCK")
    assert host_lock().path == Path("/tmp/slimgate/host.lock")
