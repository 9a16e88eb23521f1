"""Searching read-write folders on the host after a command: bounded, blind to symlinks, and
honest about what it could not search.

The setuid scan (host/setid.py) and the planted-repository scan (host/gitplant.py) walk the
same folders a task could write. A task can make a folder unreadable (`chmod 000`) to hide what
it left there, or fill a grant with folders to make the walk endless, so a walk that could not
see everything says so instead of passing.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path


def walk(
    top: str | os.PathLike[str], onerror: Callable[[OSError], None] | None = None
) -> Iterator[tuple[str, list[str], list[str]]]:
    """`os.walk(top, onerror=onerror)`, top down, never into a symlink, and without recursion.

    Python 3.11's `os.walk` recurses once per folder level: a task that made a chain of 1,500
    nested folders made every search of its folder raise RecursionError, so nothing it planted
    was found, or renamed aside. Here the folders wait on a list instead. As with `os.walk`, a
    symlink to a folder is listed among the folders but not entered, and the caller may narrow
    the yielded folder names to keep the walk out of some.
    """
    # One frame per level of the folder being searched: its path, and the names of its
    # subfolders not yet entered (names, not paths, as os.walk keeps them).
    frames: list[tuple[str, Iterator[str]]] = [("", iter([os.fspath(top)]))]
    while frames:
        parent, names = frames[-1]
        name = next(names, None)
        if name is None:
            frames.pop()
            continue
        folder = os.path.join(parent, name) if parent else name
        if os.path.islink(folder):
            # A root made a symlink (by a task, say) is neither followed nor passed over.
            if not parent and onerror is not None:
                onerror(OSError(errno.ELOOP, "it is a symlink now", folder))
            continue
        dirs: list[str] = []
        files: list[str] = []
        try:
            # One entry at a time, keeping names only: an entry holds its whole path, and a
            # task can make a folder of a great many, under a path of thousands of characters.
            with os.scandir(folder) as listing:
                for entry in listing:
                    try:
                        is_dir = entry.is_dir()
                    except OSError:
                        is_dir = False
                    (dirs if is_dir else files).append(entry.name)
        except OSError as error:  # listing it, or part way through: not searched, say so
            if onerror is not None:
                onerror(error)
            continue
        yield folder, dirs, files
        frames.append((folder, iter(dirs)))  # as the caller left it: it may prune it


class HostWalk:
    """One search over several roots; `problem()` afterwards names what was not searched."""

    def __init__(self, max_folders: int) -> None:
        self.max_folders = max_folders
        self.unreadable: list[str] = []
        self.too_big: list[str] = []

    def could_not_read(self, error: OSError) -> None:
        """Note a folder or entry the search could not read (one gone since is no matter)."""
        if not isinstance(error, FileNotFoundError):
            self.unreadable.append(f"{error.filename} ({error.strerror})")

    def folders(self, roots: Iterable[Path]) -> Iterator[tuple[Path, list[str], list[str]]]:
        """Each folder under `roots` with its subfolders and files, top down; clearing or
        narrowing the yielded `dirs` keeps the walk out of them."""
        for root in roots:
            # Symlinks are never followed: they could lead the search, and what it does, elsewhere.
            for count, (folder, dirs, files) in enumerate(walk(root, self.could_not_read)):
                if count >= self.max_folders:
                    self.too_big.append(str(root))
                    break
                yield Path(folder), dirs, files

    def problem(self, looking_for: str, check: str = "check them") -> str | None:
        """What could not be searched for `looking_for`, with the fix; None when all was."""
        problems = []
        if self.unreadable:
            more = len(self.unreadable) - 5
            problems.append(
                f"could not search {', '.join(self.unreadable[:5])}"
                + (f" and {more} more" if more > 0 else "")
                + f" for {looking_for}; make them readable again (chmod u+rx) and {check}"
            )
        if self.too_big:
            problems.append(
                f"{', '.join(self.too_big)} holds more than {self.max_folders} folders, too many "
                f"to search for {looking_for} after each command; grant a smaller folder"
            )
        return "; ".join(problems) or None
