"""Checking an audit log: every byte as written, every link in place, every screenshot intact.

    verify(audit_dir, task=None, head=None) -> Report

One pass over the lines: each entry's bytes must hash to the hash beside them, its seq must be
the next number and its prev the hash of the line before. At the first line that breaks this the
pass stops, looks at the lines after it, and says what happened and which entry it was:

    edited      the entry's bytes do not match its hash
    inserted    the lines around it link to each other without it
    removed     the next entry is missing; none further on has its number
    reordered   an entry where another number belongs, which comes later (or came before)
    rewritten   the entry records a hash for the one before that is not that entry's: the one
                before was changed and its own hash recomputed
    corrupt     a line that is not an entry (inside the log; at its end it is `torn`)
    torn        the last line is cut short: a crash during an append that was never acknowledged

Then the screenshots the checked entries name (only the task's, with `task`): each file must
hash to its name (altered otherwise) and exist, unless a `screenshots_pruned` entry after every
entry naming it records that retention removed it (counted as pruned). Given a head taken
earlier, the log must still hold that entry with that hash: otherwise it was `truncated` (cut
before it) or it does `not extend` the head (rewritten at or before it; a consistent rewrite can
only be caught this way, and only the head's entry can be named).

An action proposed with no result after it (no `action_performed`, no refusing decision) is
reported as unfinished: that is what a crash between the two looks like.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from computer_use.audit import entry as E
from computer_use.audit.chain import LOG_NAME, SHOTS_NAME
from computer_use.audit.entry import GENESIS, Head, Kind
from computer_use.audit.report import Problem, ProblemKind, Report, Unfinished
from computer_use.audit.shots import ScreenshotStore

REFUSING_DECISIONS = frozenset({"denied", "expired", "cancelled", "deny"})
HASH_CHUNK_BYTES = 1 << 20


@dataclass
class _Ref:
    first_seq: int
    first_line: int
    last_seq: int
    last_line: int


@dataclass
class _Scan:
    """What the pass collects; `prev`/`expected` are where the chain stands."""

    expected: int
    prev: str
    prev_prev: str
    head: Head
    entries: int = 0
    task_entries: int = 0
    repairs: int = 0
    refs: dict[str, _Ref] = field(default_factory=dict)
    pruned: dict[str, int] = field(default_factory=dict)
    open_actions: dict[tuple[int | None, str], Unfinished] = field(default_factory=dict)
    problem: Problem | None = None


@dataclass(frozen=True)
class _Link:
    seq: int | None
    prev: str | None
    hash: str | None


def _link(line: bytes) -> _Link:
    parts = E.split(line.rstrip(b"\n"))
    if parts is None:
        return _Link(None, None, None)
    body, _ = parts
    fields = E.chain_fields(body)
    if fields is None:
        return _Link(None, None, None)
    return _Link(fields["seq"], fields["prev"], hashlib.sha256(body).hexdigest())


def _classify(scan: _Scan, line_no: int, current: _Link, rest: list[bytes]) -> Problem:
    """Name what broke the chain at `line_no` (`current`), looking at the lines after it."""
    expected, prev = scan.expected, scan.prev
    after = [_link(line) for line in rest[:2]]
    nxt = after[0] if after else None
    if (
        nxt is not None
        and nxt.seq == expected
        and nxt.prev == prev
        and (len(after) < 2 or (after[1].seq == expected + 1 and after[1].prev == nxt.hash))
    ):
        return Problem(
            ProblemKind.INSERTED,
            current.seq,
            line_no,
            f"inserted: the entries before and after it (line {line_no - 1} and "
            f"{line_no + 1}) link to each other",
        )
    if line_no > 1 and current.seq == expected - 1 and current.prev == scan.prev_prev:
        return Problem(
            ProblemKind.INSERTED,
            expected - 1,
            line_no - 1,
            f"inserted: entry {current.seq} on the next line links to the entry before it",
        )
    assert current.seq is not None
    if current.seq > expected:
        later = any(_link(line).seq == expected for line in rest)
        if later:
            return Problem(
                ProblemKind.REORDERED,
                current.seq,
                line_no,
                f"out of order: entry {expected} should be here and comes later",
            )
        gone = f"{expected}" if current.seq == expected + 1 else f"{expected} to {current.seq - 1}"
        return Problem(
            ProblemKind.REMOVED,
            expected,
            line_no,
            f"missing: entry {current.seq} follows entry {expected - 1}; {gone} removed",
        )
    if current.seq < expected:
        return Problem(
            ProblemKind.REORDERED,
            current.seq,
            line_no,
            f"out of order: found after entry {expected - 1}",
        )
    if expected - 1 < 1:
        return Problem(
            ProblemKind.REWRITTEN,
            current.seq,
            line_no,
            "the first entry does not start the chain (its prev is not 64 zeros)",
        )
    return Problem(
        ProblemKind.REWRITTEN,
        expected - 1,
        line_no - 1,
        f"changed and its hash recomputed: entry {expected} records a different hash for it",
    )


def _scan(
    lines: Iterator[bytes],
    task: int | None,
    head: Head | None,
    first: tuple[int, str] | None = None,
) -> _Scan:
    """The chain pass. `first` is (seq, prev) the lines start at: the log's (1, zeros) unless
    checking an export's span, which starts wherever the task did."""
    start_seq, start_prev = first or (1, GENESIS)
    scan = _Scan(start_seq, start_prev, start_prev, Head(start_seq - 1, start_prev))
    # The loop runs once per entry: locals, bytes compared as bytes, nothing made per entry
    # that is not needed.
    sha256, split, chain_tail, refs = hashlib.sha256, E.split_raw, E.chain_tail, scan.refs
    expected, prev_b, prev_prev_b = start_seq, start_prev.encode(), start_prev.encode()
    head_seq = head.seq if head is not None else -1
    task_b = str(task).encode() if task is not None else None
    line_no = entries = task_entries = 0
    problem: Problem | None = None
    for raw in lines:
        line_no += 1
        if raw[-1:] != b"\n":
            problem = Problem(
                ProblemKind.TORN,
                None,
                line_no,
                f"the last line ({len(raw)} bytes) is cut short: an append interrupted by a "
                "crash and never acknowledged; the controller sets it aside when it next opens "
                "the log",
            )
            break
        parts = split(raw[:-1])
        tail = chain_tail(parts[0]) if parts is not None else None
        if parts is None or tail is None:
            rest = list(lines)
            problem = Problem(
                ProblemKind.TORN if not rest else ProblemKind.CORRUPT,
                None,
                line_no,
                "the last line is not a whole entry: a crash during an append that was never "
                "acknowledged; the controller sets it aside when it next opens the log"
                if not rest
                else "not an entry (not the log's line layout, or its fields are damaged)",
            )
            break
        body, stored = parts
        digest = sha256(body).hexdigest().encode()
        kind, link, seq_b, shots, entry_task, _, _ = tail
        seq = int(seq_b)
        if digest != stored:
            problem = Problem(
                ProblemKind.EDITED, seq, line_no, "edited: its bytes do not match its hash"
            )
            break
        if seq != expected or link != prev_b:
            scan.expected, scan.prev = expected, prev_b.decode()
            scan.prev_prev = prev_prev_b.decode()
            problem = _classify(
                scan, line_no, _Link(seq, link.decode(), digest.decode()), list(lines)
            )
            break
        if seq == head_seq and head is not None and digest.decode() != head.hash:
            problem = Problem(
                ProblemKind.NOT_EXTENDING,
                seq,
                line_no,
                f"its hash is not the one in the given head ({head.hash[:12]}...): the log was "
                f"rewritten at or before entry {seq}",
            )
            break
        entries += 1
        prev_prev_b, prev_b, expected = prev_b, digest, seq + 1
        mine = task_b is None or entry_task == task_b
        if mine:
            task_entries += 1
            if shots:
                for role_hash in E.shot_hashes(shots):
                    ref = refs.get(role_hash)
                    if ref is None:
                        refs[role_hash] = _Ref(seq, line_no, seq, line_no)
                    else:
                        ref.last_seq, ref.last_line = seq, line_no
        if kind in _DATA_KINDS:
            number = None if entry_task == b"null" else int(entry_task)
            _note(scan, kind.decode(), number, seq, E.data_of(body), mine)
    prev, prev_prev = prev_b.decode(), prev_prev_b.decode()
    scan.expected, scan.prev, scan.prev_prev = expected, prev, prev_prev
    scan.entries, scan.task_entries, scan.problem = entries, task_entries, problem
    scan.head = Head(expected - 1, prev)
    if problem is None and head is not None and scan.head.seq < head.seq:
        scan.problem = Problem(
            ProblemKind.TRUNCATED,
            scan.head.seq + 1,
            line_no + 1,
            f"missing: the log ends at entry {scan.head.seq} but the given head is entry "
            f"{head.seq}; the entries after {scan.head.seq} were cut",
        )
    return scan


_DATA_KINDS = frozenset(
    kind.value.encode()
    for kind in (
        Kind.ACTION_PROPOSED,
        Kind.ACTION_PERFORMED,
        Kind.APPROVAL_DECIDED,
        Kind.SCREENSHOTS_PRUNED,
        Kind.LOG_REPAIRED,
    )
)


def _note(scan: _Scan, kind: str, task: int | None, seq: int, data: Any, mine: bool) -> None:
    if kind == Kind.SCREENSHOTS_PRUNED:
        for digest in data.get("shots", ()):
            scan.pruned[digest] = seq
    elif kind == Kind.LOG_REPAIRED:
        scan.repairs += 1
    elif not mine:
        return
    elif kind == Kind.ACTION_PROPOSED:
        action = str(data.get("action_id"))
        scan.open_actions[(task, action)] = Unfinished(
            task, seq, action, str(data.get("description", ""))
        )
    elif kind == Kind.ACTION_PERFORMED or (
        kind == Kind.APPROVAL_DECIDED and data.get("decision") in REFUSING_DECISIONS
    ):
        scan.open_actions.pop((task, str(data.get("action_id"))), None)


def file_sha256(path: Path) -> str | None:
    """The file's SHA-256, or None if it does not exist."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def _check_shots(scan: _Scan, shot_path: Callable[[str], Path]) -> tuple[int, int, Problem | None]:
    """(checked, pruned, first problem) for the screenshots the checked entries name."""
    refs = sorted(scan.refs.items(), key=lambda item: item[1].first_seq)
    workers = min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        found = list(pool.map(lambda item: file_sha256(shot_path(item[0])), refs))
    checked = pruned = 0
    problems: list[Problem] = []
    for (digest, ref), actual in zip(refs, found, strict=True):
        pruned_at = scan.pruned.get(digest)
        if actual is None and pruned_at is not None and ref.last_seq < pruned_at:
            pruned += 1
        elif actual is None:
            named = (ref.last_seq, ref.last_line) if pruned_at else (ref.first_seq, ref.first_line)
            problems.append(
                Problem(
                    ProblemKind.SCREENSHOT_MISSING,
                    named[0],
                    named[1],
                    f"screenshot {digest[:12]}... is missing"
                    + (" (pruned before this entry named it)" if pruned_at else ""),
                )
            )
        elif actual != digest:
            problems.append(
                Problem(
                    ProblemKind.SCREENSHOT_ALTERED,
                    ref.first_seq,
                    ref.first_line,
                    f"screenshot {digest[:12]}... was altered (its bytes hash to {actual[:12]}...)",
                )
            )
        else:
            checked += 1
    return checked, pruned, min(problems, key=lambda p: p.line) if problems else None


def check(
    lines: Iterable[bytes],
    shot_path: Callable[[str], Path],
    *,
    task: int | None = None,
    head: Head | None = None,
    first: tuple[int, str] | None = None,
    note: str = "",
) -> Report:
    """Verify log lines (each with its newline) and the screenshots `shot_path(hash)` names.

    `first` is the (seq, prev) the lines must start at; the default is a whole log's start.
    """
    scan = _scan(iter(lines), task, head, first)
    checked, pruned, shot_problem = _check_shots(scan, shot_path)
    problem = scan.problem
    if shot_problem is not None and (problem is None or shot_problem.line < problem.line):
        problem = shot_problem
    return Report(
        entries=scan.entries,
        head=scan.head,
        task=task,
        task_entries=scan.task_entries,
        shots_checked=checked,
        shots_pruned=pruned,
        repairs=scan.repairs,
        unfinished=tuple(sorted(scan.open_actions.values(), key=lambda u: u.seq)),
        problem=problem,
        note=note,
    )


def verify(audit_dir: Path, *, task: int | None = None, head: Head | None = None) -> Report:
    """Verify the controller's audit log in `audit_dir` (the data directory's `audit/`).

    Args:
        task: check only this task's screenshots and count its entries (the chain is always
            checked whole: removing a task's entries must break it).
        head: a head published earlier, which the log must still extend.

    A controller may be appending meanwhile: the log is read up to its size at the start,
    taken under a shared lock (so never in the middle of an append), and entries appended
    after that are not part of this check.

    Raises:
        FileNotFoundError: there is no log in `audit_dir`.
    """
    with open(audit_dir / LOG_NAME, "rb", buffering=1 << 20) as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        try:
            size = os.fstat(handle.fileno()).st_size
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        shots = ScreenshotStore(audit_dir / SHOTS_NAME).path
        return check(_up_to(handle, size), shots, task=task, head=head)


def _up_to(lines: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The lines that lie within the first `size` bytes."""
    seen = 0
    for raw in lines:
        seen += len(raw)
        if seen > size:
            return
        yield raw
