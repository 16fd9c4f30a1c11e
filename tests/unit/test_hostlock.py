"""The host's lock, across real processes: work shares it, a measurement holds it alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from components.hostlock import HostLock, HostLockError, host_lock

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


def _spawn(
    lock: Path, mode: str, tmp: Path, name: str
) -> tuple[subprocess.Popen[bytes], Path, Path, Path]:
    held, release, done = tmp / f"{name}.held", tmp / f"{name}.release", tmp / f"{name}.done"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), mode, str(held),
                             str(release), str(done)])  # fmt: skip
    return proc, held, release, done


def _holder(
    lock: Path, mode: str, tmp: Path, name: str
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    proc, held, release, done = _spawn(lock, mode, tmp, name)
    _until(held.exists, proc, "the holder never took the lock")
    return proc, release, done


def _until(test: Any, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while not test():
        assert proc.poll() is None, f"exited early: {what}"
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


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
    assert _try(lock, "exclusive")


def test_a_waiting_measurement_goes_ahead_of_work_that_comes_after_it(tmp_path: Path) -> None:
    lock = tmp_path / "host.lock"
    waiting = HostLock(lock)
    builder, release_builder, _ = _holder(lock, "shared", tmp_path, "builder")
    measurer, _, release_m, measured = _spawn(lock, "exclusive", tmp_path, "measurer")
    release_m.touch()  # it lets go as soon as it has measured
    _until(lambda: waiting.waiters() == 1, measurer, "the measurement never queued")
    later, later_held, release_later, _ = _spawn(lock, "shared", tmp_path, "later")
    release_later.touch()
    _until(lambda: waiting.waiters() == 2, later, "the later work never queued")
    release_builder.touch()  # only now can anyone go on
    for proc in (builder, measurer, later):
        assert proc.wait(timeout=30) == 0
    assert float(later_held.read_text()) >= float(measured.read_text())  # it waited its turn


def test_an_error_while_measuring_gives_the_lock_back(tmp_path: Path) -> None:
    lock = HostLock(tmp_path / "host.lock")
    with lock.shared():
        with pytest.raises(RuntimeError), lock.exclusive("m"):
            raise RuntimeError("the worker failed")
        assert _try(lock.path, "shared") and not _try(lock.path, "exclusive")
    assert _try(lock.path, "exclusive")


def test_a_lock_that_cannot_be_opened_says_what_it_needs(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-folder"
    folder.write_text("")
    with pytest.raises(HostLockError, match=r"cannot open the host's lock .*not-a-folder/host\.lock.*"
                       r"mkdir -m 1777 -p .*SLIMGATE_HOST_LOCK"), HostLock(folder / "host.lock").shared():  # fmt: skip
        pass


def test_the_lock_file_is_chosen_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLIMGATE_HOST_LOCK", str(tmp_path / "a.lock"))
    assert host_lock().path == tmp_path / "a.lock" and host_lock() is host_lock()
    monkeypatch.delenv("SLIMGATE_HOST_LOCK")
    assert host_lock().path == Path("/tmp/slimgate/host.lock")
