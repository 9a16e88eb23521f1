"""What the searches at a sandbox's stop found or could not finish, as a task's end says it.

The backends keep it on the sandbox (`git_quarantined_at_stop`, `setid_stripped_at_stop`,
`scan_problem_at_stop`; sandbox/host/scan.py `at_stop`); the runner reads it here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sandbox import ExecResult, Sandbox


@dataclass(frozen=True)
class StopFindings:
    """What the searches at the stop of a task's sandboxes did, or could not finish."""

    problem: str | None = None
    quarantined: tuple[Path, ...] = ()
    stripped: tuple[Path, ...] = ()

    def said(self) -> str:
        """ "; ..." naming all of it; empty when there is nothing to say."""
        parts = [f"; and {self.problem}"] if self.problem else []
        if self.quarantined:
            parts.append(
                "; it left git repositories where git is protected, renamed aside: "
                + ", ".join(map(str, self.quarantined))
            )
        if self.stripped:
            parts.append(
                "; it left setuid/setgid files, their bits removed: "
                + ", ".join(map(str, self.stripped))
            )
        return "".join(parts)

    def failure(self) -> str | None:
        """The task's reason to fail on account of it, or None."""
        said = self.said()
        return f"the sandbox failed at its stop{said}" if said else None


def at_stop_of(boxes: Iterable[Sandbox]) -> StopFindings:
    problems: list[str] = []
    quarantined: list[Path] = []
    stripped: list[Path] = []
    for box in boxes:
        problem = getattr(box, "scan_problem_at_stop", None)
        if problem:
            problems.append(problem)
        quarantined += getattr(box, "git_quarantined_at_stop", ())
        stripped += getattr(box, "setid_stripped_at_stop", ())
    return StopFindings("; ".join(problems) or None, tuple(quarantined), tuple(stripped))


def left_behind(result: ExecResult | None) -> str:
    """ "; ..." naming what the searches found after a command stopped early, or ""."""
    if result is None:
        return ""
    return StopFindings(quarantined=result.git_quarantined, stripped=result.setid_stripped).said()
