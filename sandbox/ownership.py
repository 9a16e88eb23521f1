"""Which uid:gid a sandbox runs as, never root, and whether that user can write its folders.

The controller runs a task as the owner of the configured grant holding its folders (or the
`sandbox_user` setting); see controller/execution/folders.py. `sandbox_user` here is the rule for
`dispatch sandbox run`, where the person running it names the folders themselves: the owner of
the read-write folders, so files the sandbox creates belong to them on the host. With only
read-only folders, their (non-root) owner is used so they can be read; else the invoking user,
and when that is root, the image's unprivileged `sandbox` user.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Sequence
from pathlib import Path

from sandbox.base import Mount
from sandbox.errors import GrantRefused

# The image's `sandbox` user, used when no read-write folder decides.
DEFAULT_USER = (1000, 1000)


def owner_of(path: Path) -> tuple[int, int]:
    """The uid:gid owning `path`, with root's group (gid 0) replaced by the owner's own group.

    Folders owned by a user but group root are common (made with sudo, then chowned); the
    sandbox runs in no group of root's all the same.
    """
    info = os.stat(path)
    if info.st_gid != 0:
        return info.st_uid, info.st_gid
    try:
        gid = pwd.getpwuid(info.st_uid).pw_gid
    except KeyError:
        gid = 0
    return info.st_uid, gid or info.st_uid


def sandbox_user(mounts: Sequence[Mount]) -> tuple[int, int]:
    """Return the uid:gid to run as.

    Raises:
        GrantRefused: a read-write folder is owned by root, or read-write folders have
            different owners.
    """
    owners: dict[tuple[int, int], str] = {}
    for mount in mounts:
        if mount.read_only:
            continue
        owners.setdefault(owner_of(mount.host), str(mount.host))
    if not owners:
        for mount in mounts:
            owner = owner_of(mount.host)
            if owner[0] != 0:
                return owner
        uid = os.getuid()
        return (uid, os.getgid()) if uid != 0 else DEFAULT_USER
    uids = {uid for uid, _ in owners}
    if 0 in uids:
        folder = next(path for (uid, _), path in owners.items() if uid == 0)
        raise GrantRefused(
            f"read-write folder {folder} is owned by root, and the sandbox never runs as root; "
            f"give it to a normal user (`chown -R USER {folder}`) or grant it read-only (:ro)"
        )
    if len(uids) > 1:
        listed = ", ".join(f"{path} (uid {uid})" for (uid, _), path in owners.items())
        raise GrantRefused(
            f"read-write folders have different owners: {listed}; the sandbox runs as one user, "
            "so grant folders of one owner read-write and the rest read-only"
        )
    return next(iter(owners))


def parse_user(text: str) -> tuple[int, int]:
    """Read `NAME` (a user of this machine, with its primary group) or `UID:GID`.

    Raises:
        ValueError: unknown name, malformed numbers, or root (uid or gid 0); the message says
            which and what to write instead.
    """
    if ":" in text:
        uid_text, _, gid_text = text.partition(":")
        if not (uid_text.isdigit() and gid_text.isdigit()):
            raise ValueError('is not a user; write a user name or "UID:GID" such as "1000:1000"')
        user = int(uid_text), int(gid_text)
    else:
        try:
            entry = pwd.getpwnam(text)
        except KeyError:
            raise ValueError(
                'names no user of this machine; write an existing user name or "UID:GID"'
            ) from None
        user = entry.pw_uid, entry.pw_gid
    if 0 in user:
        raise ValueError(
            "is root (or root's group); the sandbox never runs as either, name a normal user"
        )
    return user


def describe_user(uid: int, gid: int | None = None) -> str:
    """`alice (uid 1000)`, or `uid 1000` for a uid this machine has no name for."""
    try:
        name = "root" if uid == 0 else pwd.getpwuid(uid).pw_name
    except KeyError:
        text = f"uid {uid}"
    else:
        text = f"{name} (uid {uid})"
    if gid is not None:
        try:
            text += f", group {grp.getgrgid(gid).gr_name}"
        except KeyError:
            text += f", gid {gid}"
    return text


def check_writable(folder: Path, user: tuple[int, int]) -> None:
    """Refuse a read-write folder the sandbox user could not write (by its owner and mode bits).

    Raises:
        GrantRefused: naming the folder, its owner and mode, the user, and the ways out.
    """
    info = os.stat(folder)
    uid, gid = user
    mode = stat.S_IMODE(info.st_mode)
    if uid == info.st_uid:
        allowed = mode & 0o300 == 0o300
    elif gid == info.st_gid:
        allowed = mode & 0o030 == 0o030
    else:
        allowed = mode & 0o003 == 0o003
    if allowed:
        return
    owner = describe_user(info.st_uid)
    raise GrantRefused(
        f"read-write folder {folder} is owned by {owner} with mode {mode:04o}, so the sandbox "
        f"user ({describe_user(uid, gid)}) cannot write it; give it to that user "
        f"(`chown -R {uid}:{gid} {folder}`), run the sandbox as its owner (the sandbox_user "
        "setting), or ask for it read-only"
    )
