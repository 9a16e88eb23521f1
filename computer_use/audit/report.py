"""What a verification found: a `Report`, and when something is wrong, the `Problem` that names
the first bad entry. Both turn into JSON for the API (`to_json`) and one line for a terminal."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from computer_use.audit.entry import Head


class ProblemKind(enum.StrEnum):
    EDITED = "edited"
    INSERTED = "inserted"
    REMOVED = "removed"
    REORDERED = "reordered"
    REWRITTEN = "rewritten"
    CORRUPT = "corrupt"
    TORN = "torn"
    SCREENSHOT_ALTERED = "screenshot altered"
    SCREENSHOT_MISSING = "screenshot missing"
    TRUNCATED = "truncated"
    NOT_EXTENDING = "does not extend the head"


@dataclass(frozen=True)
class Problem:
    """The first bad entry: what is wrong, its seq (None if unknown), its line in the file."""

    kind: ProblemKind
    seq: int | None
    line: int
    message: str

    def __str__(self) -> str:
        where = f"entry {self.seq}" if self.seq is not None else "an entry"
        return f"{where} (line {self.line}): {self.kind}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "seq": self.seq,
            "line": self.line,
            "message": self.message,
        }


@dataclass(frozen=True)
class Unfinished:
    """A proposed action with no recorded result."""

    task: int | None
    seq: int
    action_id: str
    description: str


@dataclass(frozen=True)
class Report:
    """What `verify` found; `ok` when nothing is wrong, else `problem` names the first bad entry."""

    entries: int
    head: Head
    task: int | None = None
    task_entries: int = 0
    shots_checked: int = 0
    shots_pruned: int = 0
    repairs: int = 0
    unfinished: tuple[Unfinished, ...] = ()
    problem: Problem | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        """One line for a terminal or a log."""
        if self.problem is not None:
            return f"audit log NOT intact: {self.problem}"
        scope = (
            f"task {self.task}: {self.task_entries} entries intact in a chain of {self.entries}"
            if self.task is not None
            else f"audit log intact: {self.entries} entries"
        )
        last = f"head {self.head}" if self.task is None else f"chain checked to {self.head}"
        extra = [last, f"{self.shots_checked} screenshots checked"]
        if self.shots_pruned:
            extra.append(f"{self.shots_pruned} pruned by retention")
        if self.unfinished:
            extra.append(f"{len(self.unfinished)} actions with no recorded result")
        if self.repairs:
            extra.append(f"{self.repairs} torn line(s) set aside after a crash")
        if self.note:
            extra.append(self.note)
        return f"{scope}; " + "; ".join(extra)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head": self.head.to_json(),
            "task": self.task,
            "task_entries": self.task_entries,
            "screenshots_checked": self.shots_checked,
            "screenshots_pruned": self.shots_pruned,
            "repairs": self.repairs,
            "unfinished": [u.__dict__ for u in self.unfinished],
            "problem": self.problem.to_json() if self.problem else None,
            "summary": self.summary(),
        }
