"""Measurements take turns on a host: a lock file that work holds shared and measuring exclusively.

Every step runs holding the host's lock shared (:func:`components.pipeline.run_step` takes it),
so candidates may build in parallel. A benchmark or an interleaved comparison converts it to
exclusive for as long as it measures: it waits until no other slimgate process on the host is
working or measuring, and new work waits until it is done. Every process that opens the same file
takes part: the steps of every run on the host, Airflow's task processes, ``kfp.local``'s
subprocesses, and containers that mount the lock's folder (the image reads
``SLIMGATE_HOST_LOCK=/run/slimgate/host.lock``; mount the host's ``/tmp/slimgate`` there).

The lock is ``flock(2)``: the kernel releases it when a process dies, so a killed step never
leaves the host locked. A waiting measurement goes ahead of work that asks after it (a
turnstile, see :class:`HostLock`). A child forked without exec (multiprocessing) shares its
parent's hold; the benchmark workers are started with exec and do not inherit the lock. It keeps out only slimgate's own work; anything else that loads the
machine is caught by the load each measurement records (:class:`components.hardware.LoadMeter`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.errors import InputError

__all__ = ["Hold", "HostLock", "HostLockError", "host_lock"]

_logger = logging.getLogger(__name__)

DEFAULT_PATH = Path("/tmp/slimgate/host.lock")


@dataclass
class Hold:
    """An exclusive hold: the lock file, the seconds spent waiting for it (for a hold within
    another, the outer one's wait), and when it was taken and given back (Unix time;
    ``released`` is None while it is held)."""

    path: str
    waited_s: float
    acquired: float
    released: float | None = None
    settled: dict[str, Any] | None = None  # how the measurement waited for quiet, once it has

    def to_dict(self) -> dict[str, Any]:
        return {"lock": self.path, "waited_s": round(self.waited_s, 3),
                "acquired": self.acquired, "released": self.released}  # fmt: skip


class HostLockError(InputError):
    """The host's lock file cannot be opened: a setup problem, refused before any work."""


def _open_lock(path: Path) -> int:
    folder = path.parent
    try:
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            with suppress(OSError):  # every user of the host shares it
                folder.chmod(0o1777)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            with suppress(OSError):
                os.fchmod(fd, 0o666)
        except PermissionError:  # another user's file: flock needs only read access
            fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise HostLockError(
            f"cannot open the host's lock {path} ({exc.strerror}): its folder must be writable "
            f"by every user that runs slimgate (mkdir -m 1777 -p {folder}), or the file must "
            "exist and be readable; set SLIMGATE_HOST_LOCK to choose another"
        ) from None
    return fd


class HostLock:
    """One process's handle on the host's lock (re-entrant within the process).

    Two files: ``path``, held shared by work and exclusively by a measurement, and
    ``path.turn``, a turnstile that a measurement takes while it waits: new work passes through
    it before taking its share, so a waiting measurement goes ahead of work that comes after it
    (``flock`` alone would let a steady stream of work keep it waiting for ever). Nothing waits
    on the turnstile while it holds the lock itself, so no two processes can wait on each other.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.turn = path.with_name(path.name + ".turn")
        self._fds: tuple[int, int] | None = None
        self._shared = 0
        self._exclusive = 0
        self._outer = Hold(str(path), 0.0, 0.0)  # the outermost exclusive hold

    @property
    def outermost(self) -> Hold:
        """The exclusive hold this process has now (the outermost one, when holds nest)."""
        if not self._exclusive:
            raise RuntimeError(f"{self.path} is not held exclusively")
        return self._outer

    def waiters(self) -> int:
        """How many requests on this host wait for the lock or its turnstile (/proc/locks)."""
        ids = set()
        for path in (self.path, self.turn):
            with suppress(OSError):
                st = path.stat()
                ids.add(f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}")
        try:
            lines = Path("/proc/locks").read_text().splitlines()
        except OSError:
            return 0
        return sum(1 for ln in lines if "->" in ln and any(f" {i} " in ln for i in ids))

    def _open(self) -> tuple[int, int]:
        if self._fds is None:
            self._fds = (_open_lock(self.path), _open_lock(self.turn))
        return self._fds

    def _close_if_unused(self) -> None:
        if self._fds is not None and not self._shared and not self._exclusive:
            for fd in self._fds:
                os.close(fd)
            self._fds = None

    def _take_share(self) -> None:
        import fcntl

        lock, turn = self._open()
        fcntl.flock(turn, fcntl.LOCK_EX)  # behind any measurement that is waiting
        fcntl.flock(lock, fcntl.LOCK_SH)
        fcntl.flock(turn, fcntl.LOCK_UN)

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the lock shared: work that may run beside other work, but not beside a measurement."""
        import fcntl

        first = not self._shared and not self._exclusive
        if first:
            self._take_share()
        self._shared += 1
        try:
            yield
        finally:
            self._shared -= 1
            if first:
                fcntl.flock(self._open()[0], fcntl.LOCK_UN)
                self._close_if_unused()

    @contextmanager
    def exclusive(self, what: str) -> Iterator[Hold]:
        """Hold the lock alone while measuring ``what``. A shared hold of this process is given
        up first (so two measuring steps cannot wait on each other) and taken back after."""
        import fcntl

        if self._exclusive:  # within an outer hold: already alone, after the outer's wait
            self._exclusive += 1
            inner = Hold(str(self.path), self._outer.waited_s, time.time())
            try:
                yield inner
            finally:
                self._exclusive -= 1
                inner.released = time.time()
            return
        lock, turn = self._open()
        start = time.monotonic()
        if self._shared:
            fcntl.flock(lock, fcntl.LOCK_UN)
        try:
            fcntl.flock(turn, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _logger.info("%s: waiting for other slimgate work on this host to finish (%s)",
                         what, self.path)  # fmt: skip
            fcntl.flock(turn, fcntl.LOCK_EX)
            fcntl.flock(lock, fcntl.LOCK_EX)
        fcntl.flock(turn, fcntl.LOCK_UN)
        self._exclusive += 1
        hold = self._outer = Hold(str(self.path), time.monotonic() - start, time.time())
        try:
            yield hold
        finally:
            self._exclusive -= 1
            hold.released = time.time()
            fcntl.flock(lock, fcntl.LOCK_UN)
            if self._shared:
                self._take_share()  # behind a measurement that waited meanwhile
            self._close_if_unused()


_LOCKS: dict[Path, HostLock] = {}


def host_lock() -> HostLock:
    """This process's handle on the lock named by ``SLIMGATE_HOST_LOCK`` (default
    ``/tmp/slimgate/host.lock``)."""
    path = Path(os.environ.get("SLIMGATE_HOST_LOCK") or DEFAULT_PATH)
    if path not in _LOCKS:
        _LOCKS[path] = HostLock(path)
    return _LOCKS[path]
