"""Repositories a task planted in a read-write folder: found on the host, and made inert.

The `.git` folders there at the start are mounted read-only (sandbox/mounts.py), but a task may
make a new one: `git init` in a subfolder, a bare repository, a `.git` file naming a git folder
elsewhere. Git finds the nearest one upwards from where it runs, so the next `git status` the
person runs there (or a git-aware prompt, on `cd`) would run that repository's `core.fsmonitor`,
hooks or pager on the host, as them. So after each command, and once more when the sandbox is
gone, the read-write folders are searched on the host for entries that were not there at the
start: anything named `.git`, and any folder laid out as a git folder (HEAD with objects/ and
refs/, or a commondir file). Each is renamed aside, nothing deleted: its HEAD to
`HEAD.dispatch-quarantine-N`, so git no longer takes the folder for a repository, and a `.git`
to `.git.dispatch-quarantine-N`. The command is then reported as failed, naming them, so the
person checks them before renaming anything back.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from sandbox.errors import SandboxError
from sandbox.host.walk import HostWalk

log = logging.getLogger(__name__)

GIT = ".git"
HEAD = "HEAD"
QUARANTINE = ".dispatch-quarantine-"
MAX_SCAN_FOLDERS = 200_000


class GitScanIncomplete(SandboxError):
    """Part of a read-write folder could not be searched for planted repositories."""


def is_git_layout(folder: Path, names: Collection[str], dirs: Collection[str]) -> bool:
    """Whether `folder`, holding `names` (of which `dirs` are folders, symlinks to folders
    among them), may be a git folder to git.

    As wide as git's own test (setup.c, is_git_directory): `HEAD` a file or any symlink (to a
    folder too: git only reads where it points), and `objects` and `refs` present whatever they
    are (git checks them with access(X_OK), which an executable file passes), or a `commondir`.
    """
    return (
        HEAD in names
        and (HEAD not in dirs or os.path.islink(folder / HEAD))
        and ("commondir" in names or ("objects" in names and "refs" in names))
    )


def git_entries(
    roots: Iterable[Path],
    *,
    skip: Collection[Path] = (),
    max_folders: int = MAX_SCAN_FOLDERS,
) -> dict[Path, Identity]:
    """Every `.git` entry and git-folder layout under `roots`, without entering either, with
    what each is (a task may replace one that was there with its own, at the same path).

    Raises:
        GitScanIncomplete: a folder could not be read, or a root holds too many folders.
    """
    found, problem = _scan(roots, skip, max_folders)
    if problem:
        raise GitScanIncomplete(problem)
    return {path: identity(path) for path in found}


# What an entry is: its device, inode and file type, and for a symlink its change time and
# target (None: gone). A symlink is never mounted over, so a task may remove it and make
# another, which can get the freed inode: its change time and target still tell. A folder
# or file is mounted read-only, and its change time moves with the person's own git work.
Identity = tuple[int, int, int, int, str] | None


def identity(path: Path) -> Identity:
    try:
        info = os.lstat(path)
        link = os.readlink(path) if stat.S_ISLNK(info.st_mode) else ""
    except OSError:
        return None
    changed = info.st_ctime_ns if stat.S_ISLNK(info.st_mode) else 0
    return info.st_dev, info.st_ino, stat.S_IFMT(info.st_mode), changed, link


def _scan(
    roots: Iterable[Path], skip: Collection[Path], max_folders: int
) -> tuple[set[Path], str | None]:
    """What `git_entries` finds, and what could not be searched (None: everything was)."""
    found: set[Path] = set()
    walk = HostWalk(max_folders)
    for here, dirs, files in walk.folders(roots):
        if is_git_layout(here, {*dirs, *files}, dirs):
            found.add(here)
            dirs[:] = []
            continue
        if GIT in dirs or GIT in files:
            found.add(here / GIT)
        dirs[:] = [d for d in dirs if d != GIT and here / d not in skip]
    return found, walk.problem("planted git repositories", "check them for a .git the task made")


def quarantine(path: Path) -> Path:
    """Make one planted entry inert by renaming, never following a symlink; its new path.

    The parent is reached from / one component at a time without following any symlink: a
    daemon of the task swapping a folder on the way for a symlink must not turn this rename on
    a repository elsewhere.
    """
    from sandbox.mounts import _open_folder  # here: mounts imports this module

    try:
        parent = _open_folder(path.parent)
    except SandboxError as exc:
        raise OSError(f"{path.parent} changed while it was searched: {exc}") from None
    try:
        info = os.stat(path.name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            inner = os.open(
                path.name,
                os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                dir_fd=parent,
            )
            try:
                if _exists(HEAD, inner):
                    _rename_aside(HEAD, inner)
            finally:
                os.close(inner)
        if path.name != GIT:
            return path
        return path.parent / _rename_aside(GIT, parent)
    finally:
        os.close(parent)


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _rename_aside(name: str, dir_fd: int) -> str:
    for number in range(1, 10_000):
        new = f"{name}{QUARANTINE}{number}"
        if not _exists(new, dir_fd):
            os.rename(name, new, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return new
    raise OSError(f"no free quarantine name for {name}")


def quarantine_new(
    roots: Iterable[Path], known: Mapping[Path, Identity], *, skip: Collection[Path] = ()
) -> tuple[Path, ...]:
    """Rename aside every entry under `roots` not in `known` (those there at the start, by
    path and by what they are: one replaced since is new).

    Returns the entries found, as they were named.

    Raises:
        GitScanIncomplete: part of a root could not be searched, or an entry could not be made
            inert; everything that could be was, and the message names the rest.
    """
    found, problem = _scan(roots, skip, MAX_SCAN_FOLDERS)
    made_inert: list[Path] = []
    failed: list[str] = []
    for path in sorted(p for p in found if p not in known or identity(p) != known[p]):
        try:
            moved = quarantine(path)
        except OSError as exc:
            log.error("could not make the planted git entry %s inert: %s", path, exc)
            failed.append(f"{path} ({exc.strerror or exc})")
            continue
        log.warning("renamed aside a git entry a sandbox made: %s -> %s", path, moved)
        made_inert.append(path)
    problems = [problem] if problem else []
    if failed:
        problems.append(
            f"could not make these planted git repositories inert: {', '.join(failed)}; "
            "do not run git there before removing them"
        )
    if problems:
        if made_inert:
            problems.append(f"renamed aside: {', '.join(map(str, made_inert))}")
        raise GitScanIncomplete("; ".join(problems))
    return tuple(made_inert)


__all__ = ["GitScanIncomplete", "git_entries", "is_git_layout", "quarantine", "quarantine_new"]
