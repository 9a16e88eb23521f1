"""Which uid:gid a sandbox runs as: the owner of its granted folders, and never root.

Files the sandbox creates in a read-write folder then belong, on the host, to whoever owns that
folder, which is what a person expects after letting an agent work in their project. With only
read-only folders, their (non-root) owner is used so they can be read; else the invoking user,
and when that is root, the image's unprivileged `sandbox` user.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from sandbox.base import Mount
from sandbox.errors import GrantRefused

# The image's `sandbox` user, used when no read-write folder decides.
DEFAULT_USER = (1000, 1000)


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
        info = os.stat(mount.host)
        owners.setdefault((info.st_uid, info.st_gid), str(mount.host))
    if not owners:
        for mount in mounts:
            info = os.stat(mount.host)
            if info.st_uid != 0:
                return info.st_uid, info.st_gid
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
