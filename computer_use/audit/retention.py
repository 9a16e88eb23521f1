"""Retention: screenshot files older than N days removed, on the record.

`prune(log, older_than_days)` finds every screenshot whose newest mention in the log is older
than the cut-off, appends `screenshots_pruned` entries listing their hashes (durably, first), and
only then deletes the files. The entries that named them stay, hashes and all, so the chain still
verifies; `verify` counts such files as pruned rather than missing, but only for entries before
the record: a file missing for an entry written after it was pruned is still reported.

A crash between the record and the deletions leaves files the record calls pruned: harmless,
they are checked like any other and the next prune does not list them again. A screenshot put
in the last hour (`shots.RECENT_S`) is kept whatever its age in the log, because identical screens
share one file and an entry about to be appended may name it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from computer_use.audit.chain import AuditLog
from computer_use.audit.entry import Kind, now_iso
from computer_use.audit.shots import fsync_dir

SECONDS_PER_DAY = 86_400
# Hashes listed per `screenshots_pruned` entry, to keep entries small.
HASHES_PER_ENTRY = 500


@dataclass(frozen=True)
class Pruned:
    """What one `prune` removed."""

    files: int
    bytes: int
    entries: tuple[int, ...]  # the seqs of the screenshots_pruned entries it wrote


def prune(log: AuditLog, older_than_days: float, *, now_s: float | None = None) -> Pruned:
    """Remove screenshot files last named more than `older_than_days` ago, recording it first.

    Raises:
        AuditError: the record could not be written (nothing is deleted then).
    """
    if older_than_days < 0:
        raise ValueError(f"older_than_days must be 0 or more, got {older_than_days}")
    now = log._clock() if now_s is None else now_s
    cutoff = now_iso(now - older_than_days * SECONDS_PER_DAY)
    newest: dict[str, str] = {}
    already: set[str] = set()
    for found in log.entries():
        for digest in found.shots.values():
            newest[digest] = found.time
        if found.kind is Kind.SCREENSHOTS_PRUNED:
            already.update(found.data.get("shots", ()))
    doomed: list[tuple[str, Path, int]] = []
    for digest, when in sorted(newest.items(), key=lambda item: item[1]):
        path = log.screenshots.path(digest)
        if when >= cutoff or digest in already or log.screenshots.recently_put(digest):
            continue
        with contextlib.suppress(FileNotFoundError):
            doomed.append((digest, path, path.stat().st_size))
    seqs = []
    for start in range(0, len(doomed), HASHES_PER_ENTRY):
        chunk = doomed[start : start + HASHES_PER_ENTRY]
        recorded = log.append(
            Kind.SCREENSHOTS_PRUNED,
            task=None,
            thread=None,
            data={"older_than_days": older_than_days, "shots": [d for d, _, _ in chunk]},
        )
        seqs.append(recorded.seq)
    folders = set()
    for _, path, _ in doomed:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        folders.add(path.parent)
    for folder in folders:
        fsync_dir(folder)
    return Pruned(len(doomed), sum(size for _, _, size in doomed), tuple(seqs))
