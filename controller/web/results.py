"""A task's results: the files it created or changed in its read-write folders.

Found by modification time (within the task's run) with a bounded walk that never follows a
symbolic link, so nothing is recorded by the task itself; a file changed by something else on
the machine while the task ran is listed too. A download is served only for a regular file
that this same walk would list, opened without following any link (see `open_result`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.errors import NotFound

MAX_VISITED = 20_000
MAX_LISTED = 200
# Filesystems keep modification times coarser than the task's own clock readings.
SLACK_S = 2.0
SKIPPED_DIRS = frozenset({".git", "node_modules", "__pycache__", ".venv"})


@dataclass(frozen=True)
class ResultFile:
    path: str
    size_bytes: int
    modified_at: float


def _window(task: Any) -> tuple[float, float] | None:
    if task.started_at is None:
        return None
    end = task.finished_at if task.finished_at is not None else float("inf")
    return task.started_at - SLACK_S, end + SLACK_S


def writable_roots(task: Any) -> list[Path]:
    """The task's read-write folders, as mounted (at the same absolute path as on the host)."""
    return [Path(f["path"]) for f in task.folders or [] if f.get("mode") == "rw"]


def changed_files(task: Any) -> list[ResultFile]:
    """Files under the task's read-write folders modified while it ran, newest first."""
    window = _window(task)
    if window is None:
        return []
    start, end = window
    found: list[ResultFile] = []
    visited = 0
    stack = [str(root) for root in writable_roots(task)]
    while stack and visited < MAX_VISITED:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            visited += 1
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                if entry.name not in SKIPPED_DIRS:
                    stack.append(entry.path)
            elif stat.S_ISREG(info.st_mode) and start <= info.st_mtime <= end:
                found.append(ResultFile(entry.path, info.st_size, info.st_mtime))
    found.sort(key=lambda f: f.modified_at, reverse=True)
    return found[:MAX_LISTED]


def open_result(task: Any, wanted: str) -> tuple[int, os.stat_result]:
    """Open the file `wanted` if it is one of the task's results: (descriptor, its stat).

    The task may still be changing its folder (or another task sharing it), so nothing is
    checked by name and then opened: every component is opened below the grant with
    O_NOFOLLOW, and the file found is checked through its descriptor. The caller closes it.

    Raises:
        NotFound: it is not under a read-write folder of the task, is reached through a
            symbolic link, is not a regular file, or was not changed while the task ran.
    """
    path = Path(os.path.normpath(wanted))
    window = _window(task)
    root = next((r for r in writable_roots(task) if path.is_relative_to(r) and path != r), None)
    if window is None or not path.is_absolute() or root is None:
        raise NotFound(f"{wanted[:200]!r} is not a result of task {task.id}")
    parts = path.relative_to(root).parts
    folder_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = -1
    try:
        fd = os.open(root, folder_flags)
        for part in parts[:-1]:
            inner = os.open(part, folder_flags, dir_fd=fd)
            os.close(fd)
            fd = inner
        # O_NONBLOCK: a FIFO planted under the name must not hang the request.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        found = os.open(parts[-1], flags, dir_fd=fd)
    except OSError:
        raise NotFound(
            f"{wanted[:200]!r} is gone, or is reached through a symbolic link (not served)"
        ) from None
    finally:
        if fd >= 0:
            os.close(fd)
    info = os.fstat(found)
    if not stat.S_ISREG(info.st_mode) or not window[0] <= info.st_mtime <= window[1]:
        os.close(found)
        raise NotFound(f"{wanted[:200]!r} is not a file task {task.id} created or changed")
    return found, info


def read_chunks(fd: int, chunk_bytes: int = 256 * 1024) -> Iterator[bytes]:
    """The file's bytes from an open descriptor, closing it at the end."""
    try:
        while chunk := os.read(fd, chunk_bytes):
            yield chunk
    finally:
        os.close(fd)
