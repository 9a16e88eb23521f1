"""Folder grants: the one place that decides which host folders a sandbox may see.

A grant names a host folder. It is resolved (symlinks followed) and the resolved folder is what
gets mounted, at the same absolute path inside the sandbox. Sensitive places are refused, as is
any folder that contains one of them.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path

from sandbox.base import SCRATCH_PATHS, Mount
from sandbox.errors import GrantRefused
from sandbox.host.gitplant import is_git_layout
from sandbox.host.walk import walk

GIT = ".git"
# How many folders one read-write folder may hold for the search for `.git` folders.
MAX_WALK_FOLDERS = 100_000
SYSTEM_SENSITIVE = ("/", "/proc", "/sys", "/dev", "/etc", "/boot", "/run", "/var/run")
# The engine's socket and state: reaching either is reaching root on the host.
ENGINE_PATHS = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/libvirt",
)
# Credentials, and places whose contents run at the next login: write access there is control.
HOME_SENSITIVE = (
    ".ssh",
    ".gnupg",
    ".aws",
    ".config/gcloud",
    ".docker",
    ".kube",
    ".password-store",
    ".local/share/keyrings",
    ".mozilla",
    ".config/google-chrome",
    ".config/chromium",
    ".config/autostart",
    ".config/systemd",
    ".local/bin",
)


def parse_grant(text: str) -> tuple[str, bool]:
    """Split `PATH[:ro|:rw]` into (path, read_only); read-only unless `:rw` is given.

    Raises:
        GrantRefused: the text is empty or names a mode other than ro/rw.
    """
    path, sep, mode = text.rpartition(":")
    if not sep or "/" in mode:
        path, mode = text, "ro"
    if mode not in ("ro", "rw"):
        raise GrantRefused(f"folder grant {text!r} has mode {mode!r}; use PATH, PATH:ro or PATH:rw")
    if not path:
        raise GrantRefused(f"folder grant {text!r} names no folder; use PATH[:ro|:rw]")
    return path, mode == "ro"


def sensitive_paths(home: Path, protected: Iterable[Path] = ()) -> list[Path]:
    """Every path a grant may neither be, be inside of, nor contain."""
    candidates = [Path(p) for p in (*SYSTEM_SENSITIVE, *ENGINE_PATHS)]
    # Every real user's credentials, not only this user's: granting /home must not leak them.
    homes = {home} | {
        Path(u.pw_dir) for u in pwd.getpwall() if u.pw_dir.startswith(("/home/", "/root"))
    }
    candidates += [h / rel for h in sorted(homes) for rel in HOME_SENSITIVE]
    docker_host = os.environ.get("DOCKER_HOST", "")
    if docker_host.startswith("unix://"):
        candidates.append(Path(docker_host.removeprefix("unix://")))
    candidates += [Path(p) for p in protected]
    found: list[Path] = []
    for path in candidates:
        # Compare both the path as named and where it really points.
        for form in (path.expanduser().absolute(), path.expanduser().resolve()):
            if form not in found:
                found.append(form)
    return found


def _contains(parent: Path, child: Path) -> bool:
    return child == parent or parent in child.parents


def _refuse_sensitive(path: Path, named: str, via: str, sensitive: Iterable[Path]) -> None:
    for place in sensitive:
        if path == place:
            raise GrantRefused(
                f"folder {named!r}{via} is the sensitive path {place}; "
                "grant a project folder instead"
            )
        # "/" contains everything, so only "/" itself is refused for it.
        if place != Path("/") and _contains(place, path):
            raise GrantRefused(
                f"folder {named!r}{via} is inside the sensitive path {place}; "
                "grant a project folder instead"
            )
        if _contains(path, place):
            raise GrantRefused(
                f"folder {named!r}{via} contains the sensitive path {place}; "
                "grant a narrower folder that does not include it"
            )


def _refuse_scratch(path: Path, named: str, via: str) -> None:
    for scratch in SCRATCH_PATHS:
        if (
            path == scratch
            or _contains(path, scratch)
            or (scratch != Path("/tmp") and _contains(scratch, path))
        ):
            raise GrantRefused(
                f"folder {named!r}{via} would be hidden by the sandbox's own scratch space "
                f"{scratch}; grant a folder inside /tmp or elsewhere instead"
            )


def _open_folder(path: Path) -> int:
    """An fd of a folder reached from / without following any symlink.

    Raises:
        GrantRefused: a component is (now) a symlink, missing or not a folder.
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("/", flags)
    for part in path.parts[1:]:
        try:
            child = os.open(part, flags, dir_fd=fd)
        except OSError:
            os.close(fd)
            raise GrantRefused(
                f"folder {path} changed while it was being checked (a part of it is now a "
                "symlink or missing); check what is rewriting it and grant it again"
            ) from None
        os.close(fd)
        fd = child
    return fd


def folder_identity(path: Path) -> tuple[int, int]:
    """(st_dev, st_ino) of a folder reached without following any symlink.

    Each component is opened with O_NOFOLLOW relative to its parent, so a symlink swapped into
    the path after it was resolved is refused instead of silently measured.

    Raises:
        GrantRefused: a component is (now) a symlink or not a folder.
    """
    fd = _open_folder(path)
    try:
        info = os.fstat(fd)
        return info.st_dev, info.st_ino
    finally:
        os.close(fd)


def entry_identity(path: Path) -> tuple[int, int]:
    """(st_dev, st_ino) of a folder or file reached without following any symlink.

    Raises:
        GrantRefused: a component is (now) a symlink, or the entry is neither file nor folder.
    """
    fd = _open_folder(path.parent)
    try:
        info = os.stat(path.name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        info = None
    finally:
        os.close(fd)
    if info is None or not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        raise GrantRefused(
            f"{path} changed while it was being checked (it is now a symlink or missing); "
            "check what is rewriting it and start the task again"
        )
    return info.st_dev, info.st_ino


def _is_plain(path: Path) -> bool:
    """A real folder or file (no symlink), still there.

    Raises:
        GrantRefused: it cannot be looked at (a task made its folder unsearchable, `chmod
            444`, so that it would be passed over and left writable).
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise GrantRefused(
            f"{path} cannot be looked at ({exc.strerror}), so it cannot be protected; make its "
            "folder searchable again (`chmod u+rx` on it) and check it for changes you did not "
            "make"
        ) from None
    return stat.S_ISDIR(mode) or stat.S_ISREG(mode)


def git_mounts(
    roots: Iterable[Path],
    *,
    git_writable: Callable[[Path], bool] = lambda _: False,
    skip: Collection[Path] = (),
    max_folders: int | None = None,
) -> tuple[Mount, ...]:
    """Read-only mounts over every `.git` folder or file inside the read-write `roots`.

    A task that could write `.git/hooks` or `.git/config` (`core.fsmonitor`, `core.pager`...)
    would run code on the host the next time the person uses git there. Moving the work tree
    aside and putting a new repository with planted hooks in its place would do the same, so the
    work tree and every folder between it and the root are pinned too: each is bind-mounted
    read-write onto itself, and a mount point cannot be renamed or removed. Symlinks named `.git`
    are not followed (the task could only have made them itself); folders in `skip` (the other
    mounts, each handled on its own) are not entered.

    Args:
        roots: the read-write folders to search.
        git_writable: whether the grant deciding a `.git` path lets the task write it.
        skip: folders not to enter.
        max_folders: the most folders to look through in one root (MAX_WALK_FOLDERS).

    Raises:
        GrantRefused: a root is itself inside a protected `.git`, or holds too many folders to
            search.
    """
    limit = MAX_WALK_FOLDERS if max_folders is None else max_folders
    found: list[Mount] = []
    pinned: set[Path] = set()
    for root in roots:
        if GIT in root.parts and not git_writable(root):
            raise GrantRefused(
                f"read-write folder {root} is inside a git folder, whose hooks and config run "
                "on the host; ask for it read-only, or set git_writable = true on its grant"
            )
        for above in (root, *root.parents):  # a bare repository has no .git to show it
            if is_git_folder(above) and not git_writable(root):
                where = "is" if above == root else "is inside"
                raise GrantRefused(
                    f"read-write folder {root} {where} the git folder {above} (a bare "
                    "repository, or one kept apart from its work tree), whose hooks and config "
                    "run on the host; ask for it read-only, or set git_writable = true on its "
                    "grant"
                )
        for count, (folder, dirs, files) in enumerate(walk(root, _unreadable)):
            if count >= limit:
                raise GrantRefused(
                    f"read-write folder {root} holds more than {limit} folders, too many "
                    "to look through for .git folders to protect; grant a narrower folder, or "
                    "set git_writable = true on its grant"
                )
            here = Path(folder)
            # A git folder not named .git (a bare repository, or one kept apart from its work
            # tree with --separate-git-dir): git takes it for one, so it is protected the same.
            if here != root and is_git_layout(here, {*dirs, *files}, dirs):
                path, dirs[:] = here, []
            elif GIT in dirs or GIT in files:
                path = here / GIT
            else:
                path = None
            # One the task named itself is mounted already, with the mode it asked for.
            if path is not None and path not in skip and _is_plain(path) and not git_writable(path):
                found.append(Mount(path, read_only=True, identity=entry_identity(path)))
                for pin in path.parents:
                    if pin == root or root not in pin.parents or pin in pinned:
                        break
                    pinned.add(pin)
                    found.append(Mount(pin, read_only=False, identity=folder_identity(pin)))
            dirs[:] = [d for d in dirs if d != GIT and here / d not in skip]
    return tuple(found)


def is_git_folder(folder: Path) -> bool:
    """Whether git takes `folder` for a git folder (False when it cannot be read)."""
    try:
        with os.scandir(folder) as listing:
            entries = [(e.name, e.is_dir()) for e in listing]
    except OSError:
        return False  # git, as its user, cannot read it either
    return is_git_layout(folder, {n for n, _ in entries}, {n for n, d in entries if d})


def _unreadable(error: OSError) -> None:
    """A folder the search cannot enter may hide a .git: refuse rather than pass it over."""
    raise GrantRefused(
        f"folder {error.filename} cannot be read ({error.strerror}), so its .git folders "
        "cannot be protected; make it readable again (`chmod u+rx` on it) and check it for "
        "changes, or grant git_writable = true if its git folders may be written"
    )


def validate_mount(
    path: str | Path,
    *,
    read_only: bool = True,
    home: Path | None = None,
    protected: Sequence[Path] = (),
    allowed_roots: Sequence[Path] | None = None,
) -> Mount:
    """Resolve and check one folder grant, returning the Mount to use.

    Args:
        path: the folder as the person named it (`~` is expanded, relative means from here).
        read_only: mount read-only (the default) or read-write.
        home: the home whose credential folders are protected (default: this user's).
        protected: extra paths to refuse, e.g. Dispatch's own data and config directories.
        allowed_roots: when given, the resolved folder must lie inside one of these.

    Raises:
        GrantRefused: the folder is missing, not a folder, sensitive, or outside the roots.
    """
    named = Path(os.path.normpath(Path.cwd() / Path(path).expanduser()))
    sensitive = sensitive_paths(home or Path.home(), protected)
    # Check the path as named first, so a missing ~/.ssh is refused as sensitive, not as missing.
    _refuse_sensitive(named, str(path), "", sensitive)
    try:
        resolved = named.resolve(strict=True)
    except FileNotFoundError:
        raise GrantRefused(
            f"folder {str(path)!r} does not exist; create it or fix the path"
        ) from None
    except (OSError, RuntimeError) as exc:
        raise GrantRefused(f"folder {str(path)!r} cannot be resolved: {exc}") from None
    if not resolved.is_dir():
        raise GrantRefused(
            f"{str(path)!r} is not a folder; grant the folder that contains it ({resolved.parent})"
        )
    via = "" if resolved == named else f" (it resolves to {resolved})"
    _refuse_sensitive(resolved, str(path), via, sensitive)
    if allowed_roots is not None:
        roots = [Path(r).expanduser().resolve() for r in allowed_roots]
        if not any(_contains(root, resolved) for root in roots):
            listed = ", ".join(str(r) for r in roots) or "(none configured)"
            raise GrantRefused(
                f"folder {str(path)!r}{via} is outside the allowed folders ({listed}); "
                "add it to the configuration or choose a folder inside one of them"
            )
    _refuse_scratch(resolved, str(path), via)
    return Mount(host=resolved, read_only=read_only, identity=folder_identity(resolved))


def validate_grants(
    grants: Iterable[str],
    *,
    home: Path | None = None,
    protected: Sequence[Path] = (),
    allowed_roots: Sequence[Path] | None = None,
) -> tuple[Mount, ...]:
    """Parse and validate `PATH[:ro|:rw]` strings; the same folder twice keeps the wider mode."""
    mounts: dict[Path, Mount] = {}
    for text in grants:
        path, read_only = parse_grant(text)
        mount = validate_mount(
            path, read_only=read_only, home=home, protected=protected, allowed_roots=allowed_roots
        )
        previous = mounts.get(mount.host)
        if previous is None or previous.read_only:
            mounts[mount.host] = mount
    return tuple(mounts.values())
