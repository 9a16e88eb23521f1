"""Checking the folders a task names against the grants, and planning what its sandbox mounts.

Grants may nest. The deepest grant covering a folder decides: whether it may be written, whether
its `.git` folders may be, and so, when a task asks for a read-write folder holding a narrower
grant, that inner folder is mounted over it with its own mode. A task never chooses who its
sandbox runs as: it runs as the owner of the grants its read-write folders come from (or as the
`sandbox_user` setting), never as the owner of a folder the task named, never as root.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from controller.errors import FolderNotGranted
from controller.settings import FolderGrant, Settings
from sandbox import GrantRefused, Mount
from sandbox.mounts import GIT, folder_identity, git_mounts, is_git_folder, validate_mount
from sandbox.ownership import DEFAULT_USER, check_writable, describe_user, owner_of

MAX_PATH_CHARS = 4096


@dataclass(frozen=True)
class FolderPlan:
    """A task's folders as its sandbox will see them, and who the sandbox runs as."""

    # The folders the task named, each once, in its order.
    requested: tuple[Mount, ...]
    # Those, then the sub-mounts: narrower grants of another mode, and read-only `.git`s.
    mounts: tuple[Mount, ...]
    # uid:gid; None with the fake backend, which runs nothing as anyone.
    user: tuple[int, int] | None
    # Grants whose git folders the task may write, and so make (SandboxSpec.git_writable).
    git_writable: tuple[Path, ...] = ()
    # Grants without git_writable inside one with it (SandboxSpec.git_protected).
    git_protected: tuple[Path, ...] = ()


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def _depth(path: Path) -> int:
    return len(path.parts)


def deciding_grant(path: Path, grants: Iterable[FolderGrant]) -> FolderGrant | None:
    """The deepest grant covering `path`: the one whose mode and git_writable apply there."""
    covering = [g for g in grants if _inside(g.path, path)]
    return max(covering, key=lambda g: _depth(g.path), default=None)


def check_folder(path: str, mode: str, settings: Settings) -> Mount:
    """Resolve one requested folder and check the grant deciding it allows `mode`.

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
    try:
        mount = validate_mount(
            path,
            read_only=mode == "ro",
            protected=settings.protected_paths,
            allowed_roots=[g.path for g in settings.folders],
        )
    except GrantRefused as exc:
        raise FolderNotGranted(f"folder {path!r} is not granted: {exc}") from None
    grant = deciding_grant(mount.host, settings.folders)
    assert grant is not None  # validate_mount kept it inside a grant
    if mode == "rw" and grant.read_only:
        raise FolderNotGranted(
            f"folder {path!r} is granted read-only (by the grant of {grant.path}); ask for mode "
            '"ro", or grant it with mode = "rw" in the config file'
        )
    if mode == "rw" and GIT in mount.host.parts and not grant.git_writable:
        raise FolderNotGranted(
            f"folder {path!r} is inside a git folder, whose hooks and config run on the host; "
            f"ask for it read-only, or set git_writable = true on the grant of {grant.path}"
        )
    return mount


def check_folders(requested: Iterable[tuple[str, str]], settings: Settings) -> tuple[Mount, ...]:
    """Check every requested folder and who its sandbox would run as (for submission).

    Raises:
        FolderNotGranted: see `check_folder` and `plan_folders`.
    """
    return _plan(requested, settings, find_git=False).requested


def plan_folders(requested: Iterable[tuple[str, str]], settings: Settings) -> FolderPlan:
    """Check a task's folders and plan its sandbox's mounts and user (when the task starts).

    Raises:
        FolderNotGranted: a folder is not granted (`check_folder`); read-write folders come
            from grants of different owners or from a root-owned grant with no sandbox_user;
            the sandbox user cannot write a read-write folder; or a read-write folder is too
            large to search for `.git` folders. The message names the folder and the fix.
    """
    return _plan(requested, settings, find_git=True)


def _plan(
    requested: Iterable[tuple[str, str]], settings: Settings, *, find_git: bool
) -> FolderPlan:
    mounts: dict[Path, Mount] = {}
    for path, mode in requested:
        mount = check_folder(path, mode, settings)
        previous = mounts.get(mount.host)
        if previous is None or previous.read_only:
            mounts[mount.host] = mount
    named = tuple(mounts.values())
    try:
        nested, pins = _nested_grants(named, settings.folders)
        writable = [m for m in (*named, *nested) if not m.read_only]
        placed = (*named, *nested, *pins)
        user = None
        if settings.sandbox_backend != "fake":
            user = _user(writable, named, settings)
            for mount in writable:
                check_writable(mount.host, user)
        git: tuple[Mount, ...] = ()
        if find_git:
            git = git_mounts(
                [
                    m.host
                    for m in placed
                    if not m.read_only and _git_protected_in(m.host, settings.folders)
                ],
                git_writable=lambda p: _git_writable(p, settings.folders),
                skip={m.host for m in placed},
            )
        hosts = [m.host for m in (*placed, *git)]
        twice = sorted({h for h in hosts if hosts.count(h) > 1})
        if twice:  # which of two mounts wins differs between backends: never leave it to them
            raise GrantRefused(
                f"the folders of this task would mount {', '.join(map(str, twice))} twice; name "
                "fewer nested folders, or report this plan as a bug"
            )
    except GrantRefused as exc:
        raise FolderNotGranted(str(exc)) from None
    return FolderPlan(
        requested=named,
        mounts=(*placed, *git),
        user=user,
        git_writable=tuple(g.path for g in settings.folders if g.git_writable),
        git_protected=tuple(g.path for g in settings.folders if _git_apart(g, settings.folders)),
    )


def _git_writable(path: Path, grants: Sequence[FolderGrant]) -> bool:
    grant = deciding_grant(path, grants)
    return grant is not None and grant.git_writable


def _git_protected_in(folder: Path, grants: Sequence[FolderGrant]) -> bool:
    """Whether any `.git` in `folder` would be read-only (else there is no need to look)."""
    return not _git_writable(folder, grants) or any(
        folder in g.path.parents and not g.git_writable for g in grants
    )


def _nested_grants(
    named: Sequence[Mount], grants: Sequence[FolderGrant]
) -> tuple[list[Mount], list[Mount]]:
    """Sub-mounts for grants inside a read-write folder whose mode differs from around them.

    A folder the task itself named keeps the mode it asked for, and so does what lies in it.
    Returns the sub-mounts, and the pins: every folder between a sub-mount and the mount around
    it, bind-mounted onto itself with the mode around it, because a mount point cannot be
    renamed: a task could otherwise move a parent of a read-only grant aside (`mv a b`) and find
    the grant's folder, unprotected, under the new name in its next task.

    Raises:
        GrantRefused: a configured nested grant is missing (perhaps moved by an earlier task).
    """
    placed = list(named)
    extra: list[Mount] = []
    pins: dict[Path, Mount] = {}
    inner = [
        g
        for g in grants
        if g.path not in {m.host for m in named}
        and any(not m.read_only and m.host in g.path.parents for m in named)
    ]
    for grant in sorted(inner, key=lambda g: _depth(g.path)):
        around = [m for m in placed if _inside(m.host, grant.path)]
        above = max(around, key=lambda m: _depth(m.host))
        if above.read_only == grant.read_only:
            # A grant that protects git again inside a git-writable one, where the task may
            # write, is searched on its own after each command: pinned (mounted onto itself,
            # like the folders above it), it cannot be removed, moved or made a symlink. A
            # pin, not a sub-mount: it gives the task nothing it did not have.
            if not above.read_only and _git_apart(grant, grants) and grant.path.is_dir():
                pins[grant.path] = Mount(
                    grant.path, read_only=False, identity=folder_identity(grant.path)
                )
                _pin(grant.path, above, pins, placed)
            continue
        if above in named and above.read_only:
            continue
        if not grant.path.is_dir():
            raise GrantRefused(
                f"the {'read-only' if grant.read_only else 'read-write'} grant {grant.path} "
                f"inside read-write folder {above.host} is missing (moved or removed, perhaps "
                "by an earlier task); put the folder back, or remove its grant from the config "
                "file, and start the task again"
            )
        sub = Mount(grant.path, read_only=grant.read_only, identity=folder_identity(grant.path))
        placed.append(sub)
        extra.append(sub)
        _pin(grant.path, above, pins, placed)
    # The same for a folder the task named inside another it named read-write, whatever their
    # modes: moved along with a renamed parent, it would leave its old path to the task, where
    # the searches after each command pass over (they skip the other mounts) and where a
    # repository the task makes is taken for the one that was there.
    for mount in named:
        around = [m for m in named if m.host != mount.host and _inside(m.host, mount.host)]
        if around:
            above = max(around, key=lambda m: _depth(m.host))
            if not above.read_only:
                _pin(mount.host, above, pins, placed)
    return extra, list(pins.values())


def _git_apart(grant: FolderGrant, grants: Sequence[FolderGrant]) -> bool:
    """Whether `grant` protects git inside a grant that lets the task write git folders
    (and is not itself a git folder: the search of the folder around it mounts it read-only)."""
    if grant.git_writable:
        return False
    around = deciding_grant(grant.path.parent, grants)
    return around is not None and around.git_writable and not is_git_folder(grant.path)


def _pin(inner: Path, above: Mount, pins: dict[Path, Mount], placed: Sequence[Mount]) -> None:
    """Pin every folder between `inner` and the mount `above` it (see `_nested_grants`), each
    with the mode of the deepest mount over it, up to the first folder mounted already."""
    mounted = {m.host for m in placed}
    for pin in inner.parents:
        if pin == above.host or pin in pins or pin in mounted:
            break
        cover = max((m for m in placed if _inside(m.host, pin)), key=lambda m: _depth(m.host))
        pins[pin] = Mount(pin, read_only=cover.read_only, identity=folder_identity(pin))


def _user(writable: Sequence[Mount], named: Sequence[Mount], settings: Settings) -> tuple[int, int]:
    """Who the sandbox runs as: sandbox_user, else the owner of the deciding grants.

    Raises:
        GrantRefused: read-write folders from grants of different owners, or from a
            root-owned grant.
    """
    if settings.sandbox_user is not None:
        return settings.sandbox_user
    owners: dict[int, tuple[int, Mount, FolderGrant]] = {}
    for mount in writable:
        grant = deciding_grant(mount.host, settings.folders)
        assert grant is not None
        uid, gid = owner_of(grant.path)
        if uid == 0:
            raise GrantRefused(
                f"read-write folder {mount.host} is in the grant of {grant.path}, which is "
                "owned by root, and the sandbox never runs as root; give that folder to a "
                f'normal user (`chown USER {grant.path}`), or set sandbox_user = "USER" in '
                "the config file to run sandboxes as that user"
            )
        owners.setdefault(uid, (gid, mount, grant))
    if len(owners) > 1:
        listed = "; ".join(
            f"{mount.host} (grant {grant.path}, owned by {describe_user(uid)})"
            for uid, (_, mount, grant) in owners.items()
        )
        raise GrantRefused(
            f"read-write folders come from grants of different owners: {listed}; a sandbox "
            "runs as one user, so ask for the others read-only, or set sandbox_user in the "
            "config file"
        )
    if owners:
        uid, (gid, _, _) = next(iter(owners.items()))
        return uid, gid
    # Read-only folders only: the sandbox writes nothing on the host; run as someone who can
    # read them, never as root.
    for mount in named:
        grant = deciding_grant(mount.host, settings.folders)
        if grant is not None and owner_of(grant.path)[0] != 0:
            return owner_of(grant.path)
    uid = os.getuid()
    return (uid, os.getgid()) if uid != 0 else DEFAULT_USER
