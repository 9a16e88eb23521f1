"""What every backend checks on the host after a command ran with read-write folders.

A command may leave setuid or setgid files in a read-write folder (stripped: on the host they
would run as their owner) or make a git repository where git is protected (renamed aside: its
hooks and config would run on the host the next time someone types `git` there). Both scans
run on the host, whatever isolated the command, so the Docker and libvirt backends share them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from sandbox.base import ExecResult, Mount, SandboxSpec
from sandbox.host.gitplant import Identity, quarantine_new
from sandbox.host.setid import SetidScanIncomplete, strip_setid


def git_roots(spec: SandboxSpec) -> list[Path]:
    """The read-write folders where a new repository is not allowed: each read-write mount
    where the deepest grant says so, and each grant that says so again inside one that does
    not (`git_skip` keeps the searches out of the folders where git is writable)."""
    writable = [m.host for m in spec.mounts if not m.read_only]
    roots = [host for host in writable if _git_protected(host, spec)]
    for folder in spec.git_protected:
        over = [m for m in spec.mounts if _covers(m.host, folder)]
        # Only where the task may write: a read-only grant's new repositories are the person's.
        if folder not in roots and over and not max(over, key=_depth).read_only:
            roots.append(folder)
    return roots


def _depth(mount: Mount) -> int:
    return len(mount.host.parts)


def _covers(outer: Path, path: Path) -> bool:
    return path == outer or outer in path.parents


def _git_protected(path: Path, spec: SandboxSpec) -> bool:
    """Whether the deepest of the git grants covering `path` protects git there."""
    deciding = [(g, False) for g in spec.git_writable if _covers(g, path)]
    deciding += [(g, True) for g in spec.git_protected if _covers(g, path)]
    if not deciding:
        return True
    return max(deciding, key=lambda d: len(d[0].parts))[1]


def git_skip(spec: SandboxSpec) -> set[Path]:
    return {m.host for m in spec.mounts} | set(spec.git_writable)


def after_exec(
    result: ExecResult,
    spec: SandboxSpec,
    *,
    started_at: float,
    git_known: Mapping[Path, Identity] | None,
) -> ExecResult:
    """`result` with what the scans stripped and renamed aside (`started_at`: when the sandbox
    started, so a file a daemon of the task made between commands counts too; `git_known`: the
    repositories there before; None when the sandbox is stopping, and its stop() searches)."""
    writable = [m.host for m in spec.mounts if not m.read_only]
    if not writable:
        return result
    stripped = strip_setid(writable, since=started_at, skip={m.host for m in spec.mounts})
    planted = (
        () if git_known is None else quarantine_new(git_roots(spec), git_known, skip=git_skip(spec))
    )
    if stripped or planted:
        return replace(result, setid_stripped=stripped, git_quarantined=planted)
    return result


def at_stop(
    spec: SandboxSpec, *, started_at: float, git_known: Mapping[Path, Identity]
) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """Both scans once the sandbox is gone, for what a daemon of the task left after the last
    command: the setuid files stripped, the repositories renamed aside.

    Raises:
        SetidScanIncomplete, GitScanIncomplete: a folder could not all be searched; both scans
            ran all the same.
    """
    writable = [m.host for m in spec.mounts if not m.read_only]
    stripped: tuple[Path, ...] = ()
    unfinished: SetidScanIncomplete | None = None
    try:
        stripped = strip_setid(writable, since=started_at, skip={m.host for m in spec.mounts})
    except SetidScanIncomplete as exc:
        stripped, unfinished = exc.stripped, exc
    planted = quarantine_new(git_roots(spec), git_known, skip=git_skip(spec))
    if unfinished is not None:
        raise unfinished
    return stripped, planted
