"""Free disk space: the floor below which no task starts and running ones are stopped.

Two places matter. The data directory holds the database: when its disk fills, nothing can be
recorded, so new tasks are not started and submissions are refused with 507 while it has less
than `min_free_mb` free. A task's read-write folders are where its command writes: a task
filling their disk is stopped before the disk is full, so the machine's other work survives.
Both are measured with `statvfs` (a few microseconds), so they are checked on every submission
and every second while tasks run; nothing is cached, so space freed is seen at once.

A write that fails because the disk is full anyway (between two checks, or on a database with
no floor) is recognised by `is_disk_full`, so callers can answer 507 or retry rather than fail.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from controller.errors import InsufficientStorage
from controller.settings import Settings

MIB = 1024 * 1024
# SQLITE_FULL: "insertion failed because database is full" / "database or disk is full".
SQLITE_FULL = 13
# PostgreSQL's SQLSTATE for disk_full.
PG_DISK_FULL = "53100"

Measure = Callable[[Path], float]


def free_mb(path: Path) -> float:
    """MiB an unprivileged writer can still use on the filesystem holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / MIB


@dataclass(frozen=True)
class LowSpace:
    """A filesystem below the floor: where, how much is free, how much is needed."""

    path: Path
    free_mb: float
    min_free_mb: int

    def describe(self) -> str:
        return (
            f"{self.path} has {self.free_mb:.0f} MiB free, Dispatch needs at least "
            f"{self.min_free_mb} MiB (min_free_mb)"
        )


class DiskGuard:
    """Measures free space against `settings.min_free_mb` (0 turns every check off)."""

    def __init__(self, settings: Settings, measure: Measure = free_mb) -> None:
        self.min_free_mb = settings.min_free_mb
        self.data_dir = settings.data_dir
        self._measure = measure

    def low(self, path: Path) -> LowSpace | None:
        """The shortage at `path`, or None when it has enough (or cannot be measured)."""
        if self.min_free_mb <= 0:
            return None
        try:
            free = self._measure(path)
        except OSError:
            return None  # a folder removed meanwhile is the task's problem, not the disk's
        if free >= self.min_free_mb:
            return None
        return LowSpace(path, free, self.min_free_mb)

    def data_dir_low(self) -> LowSpace | None:
        return self.low(self.data_dir)

    def first_low(self, paths: Iterable[Path]) -> LowSpace | None:
        for path in paths:
            found = self.low(path)
            if found is not None:
                return found
        return None

    def refuse_if_low(self) -> None:
        """Refuse new work while the database's disk is nearly full.

        Raises:
            InsufficientStorage: the data directory is below the floor.
        """
        found = self.data_dir_low()
        if found is not None:
            raise InsufficientStorage(
                f"the data directory's disk is nearly full: {found.describe()}; free some "
                "space there and submit again (queued tasks start again by themselves)"
            )

    def full_error(self) -> InsufficientStorage:
        """The 507 for a write the database refused because its disk is full."""
        try:
            free = f"{free_mb(self.data_dir):.0f} MiB free"
        except OSError:
            free = "its free space cannot be measured"
        floor = f" (Dispatch needs at least {self.min_free_mb} MiB, min_free_mb)"
        return InsufficientStorage(
            f"the database's disk is full ({self.data_dir}: {free}); nothing was changed. "
            f"Free some space{floor if self.min_free_mb else ''} and try again"
        )


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) says the disk or the database is full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(current, sqlite3.Error) and (
            getattr(current, "sqlite_errorcode", None) == SQLITE_FULL
            or "database or disk is full" in str(current)
        ):
            return True
        if getattr(current, "sqlstate", None) == PG_DISK_FULL:
            return True
        # SQLAlchemy keeps the driver's error in `orig`; Python chains in __cause__/__context__.
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False
