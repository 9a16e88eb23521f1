"""Checking the folders a task names against the grants in the configuration."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from controller.errors import FolderNotGranted
from controller.settings import Settings
from sandbox import GrantRefused, Mount
from sandbox.mounts import validate_mount
from sandbox.ownership import sandbox_user

MAX_PATH_CHARS = 4096


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def check_folder(path: str, mode: str, settings: Settings) -> Mount:
    """Resolve one requested folder and check it lies in a grant that allows `mode`.

    Raises:
        FolderNotGranted: the folder is missing, sensitive, outside every grant, or asks for
            read-write where only read-only is granted. The message names the folder.
    """
    if mode not in ("ro", "rw"):
        raise FolderNotGranted(f'folder {path!r} has mode {mode!r}; use "ro" or "rw"')
    if "\x00" in path or not path or len(path) > MAX_PATH_CHARS:
        raise FolderNotGranted(f"folder {path[:200]!r} is not a valid path; name a granted folder")
    # A relative path would be read from the controller's working directory, which the
    # person submitting cannot see; make them say what they mean.
    if not (path.startswith("/") or path.startswith("~")):
        raise FolderNotGranted(
            f"folder {path!r} is relative; give an absolute path (or one starting with ~)"
        )
    grants = settings.folders
    try:
        mount = validate_mount(
            path,
            read_only=mode == "ro",
            protected=settings.protected_paths,
            allowed_roots=[g.path for g in grants],
        )
    except GrantRefused as exc:
        raise FolderNotGranted(f"folder {path!r} is not granted: {exc}") from None
    covering = [g for g in grants if _inside(g.path, mount.host)]
    if mode == "rw" and not any(g.mode == "rw" for g in covering):
        granted = ", ".join(str(g.path) for g in covering)
        raise FolderNotGranted(
            f'folder {path!r} is granted read-only (by {granted}); ask for mode "ro", or '
            'grant it with mode = "rw" in the config file'
        )
    return mount


def check_folders(requested: Iterable[tuple[str, str]], settings: Settings) -> tuple[Mount, ...]:
    """Check every requested folder; the same folder twice keeps the wider mode.

    Raises:
        FolderNotGranted: see `check_folder`; also when the Docker sandbox could not run as
            the folders' owner (a root-owned read-write folder, or mixed owners).
    """
    mounts: dict[Path, Mount] = {}
    for path, mode in requested:
        mount = check_folder(path, mode, settings)
        previous = mounts.get(mount.host)
        if previous is None or previous.read_only:
            mounts[mount.host] = mount
    found = tuple(mounts.values())
    if settings.sandbox_backend == "docker":
        # Refuse now what the sandbox would refuse when the task starts.
        try:
            sandbox_user(found)
        except GrantRefused as exc:
            raise FolderNotGranted(str(exc)) from None
    return found
