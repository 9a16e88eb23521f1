"""One task's audit trail written out to be read and checked without the data directory.

    out/
      entries.jsonl   the task's entries: the log's own lines, byte for byte
      chain.jsonl     the chain proof: every line of the log from the entry just before the
                      task's first to the entry just after its last (other tasks' entries in
                      between included, since their bytes are what the links hash)
      head.json       the log's head when exported, the task and its span
      shots/          the screenshots its entries name, as <sha256>.<png|jpg|webp>
      index.html      the timeline: every step in words with its screenshots; no scripts, no
                      network, opens from the folder

`verify_export(out)` checks, with nothing but the folder: every line of the proof hashes right
and links to the one before (the first line's own link is the one thing it cannot check); the
task's entries are exactly the proof's lines of that task; every screenshot hashes to its name;
the head, when it falls inside the span, is that entry. A head beyond the span (other tasks ran
after) is checked against the live log: `dispatch audit verify --head` with it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from computer_use.audit import entry as E
from computer_use.audit import timeline
from computer_use.audit.chain import LOG_NAME, SHOTS_NAME
from computer_use.audit.entry import EMPTY_HEAD, Head
from computer_use.audit.report import Problem, ProblemKind, Report
from computer_use.audit.shots import ScreenshotStore, media_type
from computer_use.audit.verify import check

ENTRIES = "entries.jsonl"
CHAIN = "chain.jsonl"
HEAD = "head.json"
SHOTS = "shots"
INDEX = "index.html"


class NoSuchTask(LookupError):
    """The log has no entry for that task."""


def _lines(path: Path) -> Iterator[tuple[bytes, dict[str, Any] | None, str]]:
    """Each whole line of the log with its chain fields (None if damaged) and its hash."""
    with open(path, "rb", buffering=1 << 20) as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                return
            parts = E.split(raw[:-1])
            if parts is None:
                yield raw, None, ""
                continue
            yield raw, E.chain_fields(parts[0]), hashlib.sha256(parts[0]).hexdigest()


def export_task(audit_dir: Path, task: int, out: Path) -> Report:
    """Write task `task`'s trail from the log in `audit_dir` to `out`; the export's check.

    Raises:
        NoSuchTask: no entry of the log is the task's.
        FileExistsError: `out` exists and is not an empty folder.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder with --out")
    positions, head = [], EMPTY_HEAD
    for index, (_, fields, digest) in enumerate(_lines(audit_dir / LOG_NAME)):
        if fields is not None:
            head = Head(fields["seq"], digest)
            if fields["task"] == task:
                positions.append(index)
    if not positions:
        raise NoSuchTask(f"the audit log has no entry for task {task}")
    first, last = max(0, positions[0] - 1), positions[-1] + 1
    out.mkdir(parents=True, exist_ok=True)
    (out / SHOTS).mkdir()
    found: list[E.Entry] = []
    seqs: list[int] = []
    with open(out / ENTRIES, "wb") as entries, open(out / CHAIN, "wb") as chain:
        for index, (raw, fields, _) in enumerate(_lines(audit_dir / LOG_NAME)):
            if index > last:
                break
            if index < first:
                continue
            chain.write(raw)
            if fields is None:
                continue
            seqs.append(fields["seq"])
            if fields["task"] == task:
                entries.write(raw)
                parsed = E.decode(raw[:-1])
                if parsed is not None:
                    found.append(parsed)
    store = ScreenshotStore(audit_dir / SHOTS_NAME)
    names: dict[str, str] = {}
    for item in found:
        for digest in item.shots.values():
            source = store.path(digest)
            if digest in names or not source.exists():
                continue
            with open(source, "rb") as handle:
                _, extension = media_type(handle.read(16))
            names[digest] = f"{SHOTS}/{digest}.{extension}"
            shutil.copyfile(source, out / names[digest])
    span = {"first": seqs[0] if seqs else None, "last": seqs[-1] if seqs else None}
    meta = {"head": head.to_json(), "task": task, "span": span}
    (out / HEAD).write_text(json.dumps(meta, indent=2) + "\n")
    report = verify_export(out)
    html = timeline.page(task, timeline.steps(found), head, names.get, report.summary())
    (out / INDEX).write_text(html, encoding="utf-8")
    return report


def verify_export(out: Path, head: Head | None = None) -> Report:
    """Check an export on its own (see the module docstring); `head` instead of the one in it.

    Raises:
        FileNotFoundError: `out` is not an export (no head.json or chain.jsonl).
    """
    meta = json.loads((out / HEAD).read_text())
    task = int(meta["task"])
    given = head or Head(int(meta["head"]["seq"]), str(meta["head"]["hash"]))
    lines = (out / CHAIN).read_bytes().splitlines(keepends=True)
    fields = [E.chain_fields((E.split(line.rstrip(b"\n")) or (b"",))[0]) for line in lines]
    start: dict[str, Any] = fields[0] if fields and fields[0] else {"seq": 1, "prev": E.GENESIS}
    end = next((f["seq"] for f in reversed(fields) if f), 0)
    inside = given.seq <= end
    note = (
        f"head {given.seq} checked inside the proof"
        if inside
        else f"head {given} is past this export: check the live log with `dispatch audit "
        f"verify --head {given}`"
    )
    shots = {path.name.partition(".")[0]: path for path in (out / SHOTS).iterdir()}
    report = check(
        lines,
        lambda digest: shots.get(digest, out / SHOTS / digest),
        task=task,
        head=given if inside else None,
        first=(int(start["seq"]), str(start["prev"])),
        note=note,
    )
    if report.problem is not None:
        return report
    # The task's entries must be exactly the proof's lines of that task, in order.
    expected = [line for line, f in zip(lines, fields, strict=True) if f and f["task"] == task]
    listed = (out / ENTRIES).read_bytes().splitlines(keepends=True)
    for number, (mine, theirs) in enumerate(zip(listed, expected, strict=False), 1):
        if mine != theirs:
            return _bad(report, number, "differs from the same entry in the chain proof")
    if len(listed) != len(expected):
        return _bad(
            report,
            min(len(listed), len(expected)) + 1,
            f"entries.jsonl has {len(listed)} entries, the proof {len(expected)} of this task",
        )
    return report


def _bad(report: Report, line: int, message: str) -> Report:
    problem = Problem(ProblemKind.EDITED, None, line, f"{ENTRIES} line {line} {message}")
    return replace(report, problem=problem)
