"""A task's results: the files it created or changed in its read-write folders.

Found by modification time (within the task's run) with a bounded walk that never follows a
symbolic link, so nothing is recorded by the task itself; a file changed by something else on
the machine while the task ran is listed too. A download is served only for a regular file
that this same walk would list.
"""

from __future__ import annotations

import os
import stat
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


def result_file(task: Any, wanted: str) -> Path:
    """The file `wanted` if it is one of the task's results.

    Raises:
        NotFound: it is not under a read-write folder of the task, not a regular file reached
            without symbolic links, or was not changed while the task ran.
    """
    path = Path(os.path.normpath(wanted))
    window = _window(task)
    inside = any(path.is_relative_to(root) and path != root for root in writable_roots(task))
    if window is None or not path.is_absolute() or not inside:
        raise NotFound(f"{wanted[:200]!r} is not a result of task {task.id}")
    # Every component, not only the last: a link to a folder outside must not be followed.
    for parent in [*reversed(path.parents), path]:
        try:
            mode = os.lstat(parent).st_mode
        except OSError:
            raise NotFound(f"{wanted[:200]!r} is gone") from None
        if stat.S_ISLNK(mode):
            raise NotFound(f"{wanted[:200]!r} is reached through a symbolic link; not served")
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode) or not window[0] <= info.st_mtime <= window[1]:
        raise NotFound(f"{wanted[:200]!r} is not a file task {task.id} created or changed")
    return path
