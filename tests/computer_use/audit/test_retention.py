"""Retention removes old screenshot files on the record; verification still passes."""

from __future__ import annotations

import time
from pathlib import Path

from computer_use.audit.chain import AuditLog
from computer_use.audit.entry import Kind
from computer_use.audit.retention import SECONDS_PER_DAY, prune
from computer_use.audit.verify import ProblemKind, verify
from tests.computer_use.audit.conftest import screen

NOW = time.time()


def _old_and_new(root: Path) -> tuple[str, str]:
    clock = [NOW - 40 * SECONDS_PER_DAY]
    with AuditLog.open(root, clock=lambda: clock[0]) as log:
        old = log.append(
            Kind.MODEL_TURN, task=1, thread=1, data={"text": "old"}, shots={"seen": screen("old")}
        )
        clock[0] = NOW - SECONDS_PER_DAY
        new = log.append(
            Kind.MODEL_TURN, task=2, thread=1, data={"text": "new"}, shots={"seen": screen("new")}
        )
    return old.shots["seen"], new.shots["seen"]


def _file(root: Path, digest: str) -> Path:
    return root / "shots" / digest[:2] / digest


def test_old_screenshots_are_pruned_on_the_record_and_verify_counts_them(tmp_path: Path) -> None:
    old, new = _old_and_new(tmp_path)
    with AuditLog.open(tmp_path) as log:
        pruned = prune(log, 30, now_s=NOW)
    assert pruned.files == 1 and pruned.bytes > 0
    assert not _file(tmp_path, old).exists() and _file(tmp_path, new).exists()
    record = list(AuditLog(tmp_path).entries())[-1]
    assert (record.kind, record.seq, record.data["shots"]) == (Kind.SCREENSHOTS_PRUNED, 3, [old])
    report = verify(tmp_path)
    assert report.ok, report.summary()
    assert (report.shots_checked, report.shots_pruned) == (1, 1)
    assert "1 pruned by retention" in report.summary()
    with AuditLog.open(tmp_path) as log:
        assert prune(log, 30, now_s=NOW).files == 0  # nothing listed twice


def test_a_screenshot_deleted_without_a_record_is_still_missing(tmp_path: Path) -> None:
    _, new = _old_and_new(tmp_path)
    with AuditLog.open(tmp_path) as log:
        prune(log, 30, now_s=NOW)
    _file(tmp_path, new).unlink()
    problem = verify(tmp_path).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.SCREENSHOT_MISSING, 2)


def test_an_entry_written_after_the_prune_cannot_hide_behind_it(tmp_path: Path) -> None:
    old, _ = _old_and_new(tmp_path)
    with AuditLog.open(tmp_path) as log:
        prune(log, 30, now_s=NOW)
        log.screenshots.path(old).parent.mkdir(exist_ok=True)
        log.screenshots.path(old).write_bytes(screen("old"))  # back for a moment, then gone
        late = log.append(Kind.MODEL_TURN, task=3, thread=1, data={"text": "x"}, shots={"s": old})
    _file(tmp_path, old).unlink()
    problem = verify(tmp_path).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.SCREENSHOT_MISSING, late.seq)


def test_a_screenshot_put_recently_is_kept_whatever_its_age_in_the_log(tmp_path: Path) -> None:
    old, _ = _old_and_new(tmp_path)
    with AuditLog.open(tmp_path) as log:
        assert log.screenshots.put(screen("old")) == old  # the same screen again, just now
        log.flush()
        assert prune(log, 30, now_s=NOW).files == 0
    assert _file(tmp_path, old).exists()
