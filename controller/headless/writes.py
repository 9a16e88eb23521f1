"""Writing `dispatch run`'s report and artifacts where a task cannot steer the writes elsewhere.

The report and the artifacts folder may lie inside a folder a task could write (a CI workspace
granted read-write, its artifacts kept in it). When the run writes them, every sandbox is gone,
so nothing changes under it; but a task may have left a symlink where the run will write, or a
hard link in place of a file, so that the run (the host user, outside any sandbox) overwrites a
file of the host user's with text the task chose. So:

- a symlink on the way is followed only where no task could have made it: in a folder outside
  every read-write folder of the run;
- a file is written under a fresh name and renamed over whatever entry was there, never
  written through it;
- a folder that is replaced is removed without following links.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path


class UnsafePath(Exception):
    """A path the run will not write through; the message names it and the fix."""


class Writer:
    """Writes files and folders for a run whose tasks could write `writable`."""

    def __init__(self, writable: Iterable[Path]) -> None:
        self.writable = tuple(Path(os.path.realpath(p)) for p in writable)

    def folder(self, path: Path) -> Path:
        """`path`, made where missing, once every step to it is checked.

        Raises:
            UnsafePath: a step is a symlink a task could have made, or not a folder.
        """
        path = Path(os.path.abspath(path))
        for step in (*reversed(path.parents), path):
            try:
                info = os.lstat(step)
            except FileNotFoundError:
                os.mkdir(step, 0o755)  # fails on a name taken meanwhile: lstat again
                info = os.lstat(step)
            if stat.S_ISLNK(info.st_mode):
                self._refuse_link(step)
                if not step.is_dir():
                    raise UnsafePath(f"{step} is a symlink to something not a folder")
            elif not stat.S_ISDIR(info.st_mode):
                raise UnsafePath(f"{step} is not a folder; choose another place to write")
        return path

    def write(self, path: Path, data: str | bytes) -> None:
        """Put `data` at `path`, replacing the entry there (a link is replaced, not followed)."""
        folder = self.folder(path.parent)
        scratch = folder / f".{path.name}.{os.getpid()}.partial"
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data.encode() if isinstance(data, str) else data)
            os.replace(scratch, folder / path.name)
        except BaseException:
            scratch.unlink(missing_ok=True)
            raise

    def fresh_folder(self, path: Path) -> Path:
        """An empty folder at `path`: what was there is removed (a link itself, not its target)."""
        folder = self.folder(path.parent) / path.name
        try:
            info = os.lstat(folder)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISDIR(info.st_mode):
                _remove_tree(folder)
            else:
                folder.unlink()
        os.mkdir(folder, 0o755)
        return folder

    def _refuse_link(self, link: Path) -> None:
        root = link_maker(link, self.writable)
        if root is not None:
            raise UnsafePath(
                f"{link} is a symlink in {root}, a folder the run's tasks could write; "
                "nothing was written through it. Remove the link, or write the report and "
                "the artifacts outside the tasks' read-write folders"
            )


def link_maker(link: Path, writable: Iterable[Path]) -> Path | None:
    """The folder of `writable` (real paths) a task could have made the symlink `link` in."""
    where = Path(os.path.realpath(link.parent))
    for root in writable:
        if where == root or root in where.parents:
            return root
    return None


def planted_link(path: Path, writable: Iterable[Path]) -> tuple[Path, Path] | None:
    """The first symlink on the way to `path` that a task could have made, and where."""
    path = Path(os.path.abspath(path))
    roots = tuple(writable)
    for step in (*reversed(path.parents), path):
        if step.is_symlink():
            root = link_maker(step, roots)
            if root is not None:
                return step, root
    return None


def _remove_tree(root: Path) -> None:
    """Remove a folder and all in it; links are removed, never followed.

    Without recursion (`shutil.rmtree` in Python 3.11 recurses once per level, and a task can
    leave a chain of folders deeper than Python's recursion limit).
    """
    pending: list[tuple[str, bool]] = [(os.fspath(root), False)]
    while pending:
        folder, emptied = pending.pop()
        if emptied:
            os.rmdir(folder)
            continue
        pending.append((folder, True))
        with os.scandir(folder) as listing:
            for entry in listing:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, False))
                else:
                    os.unlink(entry.path)
