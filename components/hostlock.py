"""Measurements take turns on a host: a lock file that work holds shared and measuring exclusively.

Every step runs holding the host's lock shared (:func:`components.pipeline.run_step` takes it),
so candidates may build in parallel. A benchmark or an interleaved comparison converts it to
exclusive for as long as it measures: it waits until no other slimgate process on the host is
working or measuring, and new work waits until it is done. Every process that opens the same file
takes part: the steps of every run on the host, Airflow's task processes, ``kfp.local``'s
subprocesses, and containers that mount the lock's folder (the image reads
``SLIMGATE_HOST_LOCK=/run/slimgate/host.lock``; mount the host's ``/tmp/slimgate`` there).

The lock is ``flock(2)``: the kernel releases it when a process dies, so a killed step never
leaves the host locked. It keeps out only slimgate's own work; anything else that loads the
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

__all__ = ["HostLock", "host_lock"]

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

    def to_dict(self) -> dict[str, Any]:
        return {"lock": self.path, "waited_s": round(self.waited_s, 3),
                "acquired": self.acquired, "released": self.released}  # fmt: skip


class HostLock:
    """One process's handle on the host's lock file (re-entrant within the process)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._shared = 0
        self._exclusive = 0
        self._outer = Hold(str(path), 0.0, 0.0)  # the outermost exclusive hold

    def _open(self) -> int:
        if self._fd is None:
            folder = self.path.parent
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                with suppress(OSError):  # every user of the host shares it
                    folder.chmod(0o1777)
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                with suppress(OSError):
                    os.fchmod(self._fd, 0o666)
            except PermissionError:  # another user's file: flock needs only read access
                self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def _close_if_unused(self) -> None:
        if self._fd is not None and not self._shared and not self._exclusive:
            os.close(self._fd)
            self._fd = None

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the lock shared: work that may run beside other work, but not beside a measurement."""
        import fcntl

        first = not self._shared and not self._exclusive
        if first:
            fcntl.flock(self._open(), fcntl.LOCK_SH)
        self._shared += 1
        try:
            yield
        finally:
            self._shared -= 1
            if first:
                fcntl.flock(self._open(), fcntl.LOCK_UN)
                self._close_if_unused()

    @contextmanager
    def exclusive(self, what: str) -> Iterator[Hold]:
        """Hold the lock alone while measuring ``what``; a shared hold of this process is given up
        meanwhile (so two measuring steps cannot wait on each other) and taken back after."""
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
        fd = self._open()
        start = time.monotonic()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _logger.info("%s: waiting for other slimgate work on this host to finish (%s)",
                         what, self.path)  # fmt: skip
            fcntl.flock(fd, fcntl.LOCK_EX)
        self._exclusive += 1
        hold = self._outer = Hold(str(self.path), time.monotonic() - start, time.time())
        try:
            yield hold
        finally:
            self._exclusive -= 1
            hold.released = time.time()
            fcntl.flock(fd, fcntl.LOCK_SH if self._shared else fcntl.LOCK_UN)
            self._close_if_unused()


_LOCKS: dict[Path, HostLock] = {}


def host_lock() -> HostLock:
    """This process's handle on the lock named by ``SLIMGATE_HOST_LOCK`` (default
    ``/tmp/slimgate/host.lock``)."""
    path = Path(os.environ.get("SLIMGATE_HOST_LOCK") or DEFAULT_PATH)
    if path not in _LOCKS:
        _LOCKS[path] = HostLock(path)
    return _LOCKS[path]
