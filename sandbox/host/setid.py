"""The second line against setuid/setgid files: find them on the host after a command, strip them.

The first line is the engine's seccomp profile (sandbox/seccomp.py), with the `confine` filter
inside the sandbox as a second (images/sandbox/confine): both refuse to set either bit. Should
that ever fail, a setuid file left in a
read-write folder would run with its owner's rights the next time anyone on the host starts it.
So after each command the read-write folders are searched on the host, and regular files whose
bits appeared while it ran (their ctime is at or after its start) lose them. Files that already
had the bits are the person's own and are left alone.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Collection, Iterable
from pathlib import Path

from sandbox.errors import SandboxError
from sandbox.host.walk import HostWalk

log = logging.getLogger(__name__)

SETID_BITS = stat.S_ISUID | stat.S_ISGID
# Most folders searched in one root: the search runs after every command, on the host.
MAX_SCAN_FOLDERS = 200_000
# File timestamps come from the kernel's coarse clock, which lags time.time() by up to a tick.
CLOCK_SLACK_S = 0.05


class SetidScanIncomplete(SandboxError):
    """Part of a read-write folder could not be searched: a setuid file may be left there.

    What could be searched was; `stripped` names the files whose bits were removed.
    """

    def __init__(self, message: str, stripped: tuple[Path, ...]) -> None:
        super().__init__(message)
        self.stripped = stripped


def strip_setid(
    roots: Iterable[Path],
    *,
    since: float,
    skip: Collection[Path] = (),
    max_folders: int = MAX_SCAN_FOLDERS,
) -> tuple[Path, ...]:
    """Remove setuid/setgid bits that appeared on files under `roots` since `since` (epoch s).

    Args:
        roots: the read-write folders the command could write.
        since: when the command started (time.time()).
        skip: folders not to enter (read-only mounts inside a root).
        max_folders: the most folders to search in one root.

    Returns the files found with a new bit, in the order found. A file whose bits could not be
    removed (Dispatch may not own it) is still returned, and the failure logged.

    Raises:
        SetidScanIncomplete: a folder could not be read (a task can `chmod 000` one to hide a
            file in it), or a root holds more than `max_folders` folders. Everything else was
            still searched; the error names what was not, and the fix.
    """
    found: list[Path] = []
    walk = HostWalk(max_folders)
    for here, dirs, files in walk.folders(roots):
        dirs[:] = [d for d in dirs if here / d not in skip]
        for name in files:
            path = here / name
            try:
                info = os.lstat(path)
            except OSError as exc:  # unsearchable, or a path too long: not searched, say so
                walk.could_not_read(exc)
                continue
            if (
                stat.S_ISREG(info.st_mode)
                and info.st_mode & SETID_BITS
                and info.st_ctime >= since - CLOCK_SLACK_S
            ):
                _strip(path, info)
                found.append(path)
    message = walk.problem("setuid/setgid files")
    if message:
        log.error("%s", message)
        raise SetidScanIncomplete(message, tuple(found))
    return tuple(found)


def _strip(path: Path, seen: os.stat_result) -> None:
    """Clear both bits on the very file that was seen, never on what a symlink points to."""
    try:
        # O_PATH needs no read permission; chmod through /proc/self/fd acts on that inode.
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        log.error("could not remove the setuid/setgid bits of %s: %s", path, exc)
        return
    try:
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino) or not stat.S_ISREG(
            info.st_mode
        ):
            log.error("%s changed while its setuid/setgid bits were being removed", path)
            return
        os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(info.st_mode) & ~SETID_BITS)
        log.warning("removed the setuid/setgid bits a sandbox set on %s", path)
    except OSError as exc:
        log.error("could not remove the setuid/setgid bits of %s: %s", path, exc)
    finally:
        os.close(fd)
