"""The engine's seccomp profile for a sandbox: Debian's maintained profile, made stricter.

runc installs the profile before it execs the container's first process and every `docker exec`,
so every process of a sandbox runs filtered from its first instruction: no window in which a
task could borrow an unfiltered process (the hole a filter loaded by the process itself left,
see images/sandbox/confine). The base is the Docker-format profile Debian's
golang-github-containers-common maintains (the one Podman uses), read from the host; it is not
copied into this repository, so it keeps up with new syscalls. Derived from it, as data:

- ptrace, process_vm_readv and process_vm_writev fail with EPERM: a task must not drive or write
  into another process of its user (Dispatch's own commands run as that user too).
- chmod, fchmod, fchmodat, fchmodat2, mknod and mknodat are allowed only without S_ISUID and
  S_ISGID in the mode, and refused with EPERM with either; open, openat and creat only when they
  do not create a file (no O_CREAT, no O_TMPFILE) or create it without either bit.
- openat2 (its mode sits behind a pointer seccomp cannot read) and io_uring (its operations
  never pass through seccomp) fail with ENOSYS, so programs fall back to the calls above.

A single rule's conditions are ANDed, but runc turns several conditions on the same argument
into separate (ORed) rules; every rule built here tests each argument at most once, so its
meaning does not depend on that quirk.
"""

from __future__ import annotations

import copy
import errno
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from sandbox.errors import SandboxError

BASE_PROFILE = Path("/usr/share/containers/seccomp.json")
BASE_PACKAGE = "golang-github-containers-common"
SETID_MASK = 0o6000
SETID_VALUES = (0o4000, 0o2000, 0o6000)  # "mode & 06000 != 0" as equalities seccomp can test
O_TMPFILE_BIT = 0o20000000  # __O_TMPFILE: O_TMPFILE without its O_DIRECTORY part
CREATING = (os.O_CREAT, O_TMPFILE_BIT)
REMOVED = frozenset({"ptrace", "process_vm_readv", "process_vm_writev"})
# syscall -> index of its mode argument
MODE_ARG = {
    "chmod": 1,
    "fchmod": 1,
    "fchmodat": 2,
    "fchmodat2": 2,
    "creat": 1,
    "mknod": 1,
    "mknodat": 2,
}
# syscall -> (index of flags, index of mode)
OPEN_ARGS = {"open": (1, 2), "openat": (2, 3)}
UNFILTERABLE = ("openat2", "io_uring_setup", "io_uring_enter", "io_uring_register")
CONDITIONAL = frozenset(MODE_ARG) | frozenset(OPEN_ARGS) | frozenset(UNFILTERABLE)


class SeccompProfileMissing(SandboxError):
    """The base seccomp profile is not installed on the host."""


def _masked(index: int, mask: int, value: int) -> dict[str, Any]:
    return {"index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}


def _rule(
    names: list[str], action: str, args: list[dict[str, Any]], errno_ret: int | None = None
) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": names, "action": action, "args": args}
    if errno_ret is not None:
        rule["errnoRet"] = errno_ret
    return rule


def derive(base: dict[str, Any]) -> dict[str, Any]:
    """Our profile from a Docker-format profile (pure: the base is not changed)."""
    profile = copy.deepcopy(base)
    kept = []
    for rule in profile.get("syscalls", []):
        names = [n for n in rule.get("names", []) if n not in REMOVED]
        if rule.get("action") == "SCMP_ACT_ALLOW":
            # Allowed below on conditions only; an unconditional allow would win over them.
            names = [n for n in names if n not in CONDITIONAL]
        if names:
            kept.append({**rule, "names": names})
    allow, deny = "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"
    for call, arg in MODE_ARG.items():
        kept.append(_rule([call], allow, [_masked(arg, SETID_MASK, 0)]))
        for bits in SETID_VALUES:
            kept.append(_rule([call], deny, [_masked(arg, SETID_MASK, bits)], errno.EPERM))
    creating_mask = os.O_CREAT | O_TMPFILE_BIT
    for call, (flags, mode) in OPEN_ARGS.items():
        kept.append(_rule([call], allow, [_masked(flags, creating_mask, 0)]))
        kept.append(_rule([call], allow, [_masked(mode, SETID_MASK, 0)]))
        for creating in CREATING:
            for bits in SETID_VALUES:
                args = [_masked(flags, creating, creating), _masked(mode, SETID_MASK, bits)]
                kept.append(_rule([call], deny, args, errno.EPERM))
    kept.append(_rule(sorted(REMOVED), deny, [], errno.EPERM))
    kept.append(_rule(list(UNFILTERABLE), deny, [], errno.ENOSYS))
    profile["syscalls"] = kept
    return profile


@cache
def _load(path: Path) -> str:
    try:
        base = json.loads(path.read_text())
    except FileNotFoundError:
        raise SeccompProfileMissing(
            f"the seccomp profile {path} is missing; install it with "
            f"`sudo apt-get install {BASE_PACKAGE}` (no sandbox starts without it)"
        ) from None
    except (OSError, ValueError) as exc:
        raise SeccompProfileMissing(
            f"cannot read the seccomp profile {path} ({exc}); reinstall it with "
            f"`sudo apt-get install --reinstall {BASE_PACKAGE}`"
        ) from None
    if not isinstance(base, dict) or not isinstance(base.get("syscalls"), list):
        raise SeccompProfileMissing(
            f"{path} is not a Docker-format seccomp profile (no syscalls list); reinstall it "
            f"with `sudo apt-get install --reinstall {BASE_PACKAGE}`"
        )
    return json.dumps(derive(base), separators=(",", ":"))


def profile_json(path: Path = BASE_PROFILE) -> str:
    """The sandbox's profile as the JSON the engine takes (`seccomp=` security option).

    Raises:
        SeccompProfileMissing: the base profile is not installed, naming the package.
    """
    return _load(path)


__all__ = ["BASE_PROFILE", "SeccompProfileMissing", "derive", "profile_json"]
