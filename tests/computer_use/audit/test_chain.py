"""The log itself: write-ahead appends, one chain across processes, crashes and torn lines."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from computer_use.audit.chain import AuditLog
from computer_use.audit.entry import EMPTY_HEAD, Head, Kind
from computer_use.audit.timeline import steps, text
from computer_use.audit.verify import ProblemKind, verify
from computer_use.errors import AuditError
from tests.computer_use.audit.conftest import Built, screen

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from computer_use.audit.chain import AuditLog
    from computer_use.audit.entry import Kind

    log = AuditLog.open(Path(sys.argv[1]))
    task = int(sys.argv[2])
    for n in range(int(sys.argv[3])):
        log.append(Kind.MODEL_TURN, task=task, thread=1, data={"text": f"turn {n}"})
    if sys.argv[4] == "propose":
        log.append(
            Kind.ACTION_PROPOSED, task=task, thread=1,
            data={"action_id": "toolu_x", "tool": "computer", "description": "Type 'rm -rf'"},
            shots={"judged": Path(sys.argv[5]).read_bytes()},
        )
        print("proposed", flush=True)
        sys.stdin.read()  # the action "runs" until the process is killed
        log.append(Kind.ACTION_PERFORMED, task=task, thread=1,
                   data={"action_id": "toolu_x", "outcome": "done"})
    log.close()
    """
)


def _writer(root: Path, task: int, turns: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), str(task), str(turns), *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_append_returns_the_durable_entry_and_moves_the_head(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as log:
        assert log.head() == EMPTY_HEAD
        first = log.append(Kind.TASK_STARTED, task=4, thread=2, data={})
        second = log.append(Kind.TASK_FINISHED, task=4, thread=2, data={"status": "failed"})
        assert (first.seq, second.seq, second.prev) == (1, 2, first.hash)
        assert log.head() == Head(2, second.hash)
    assert [e.hash for e in AuditLog(tmp_path).entries()] == [first.hash, second.hash]


def test_an_entry_missing_what_its_kind_needs_is_refused(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as log:
        with pytest.raises(AuditError, match="needs data keys action_id, outcome"):
            log.append(Kind.ACTION_PERFORMED, task=1, thread=1, data={})
        with pytest.raises(AuditError, match="not plain JSON"):
            log.append(Kind.TASK_STARTED, task=1, thread=1, data={"when": object()})
        assert log.head() == EMPTY_HEAD


def test_a_screenshot_that_cannot_be_stored_stops_the_entry(tmp_path: Path) -> None:
    shot = screen("full disk")
    with AuditLog.open(tmp_path) as log:
        # A file where the screenshot's folder must go: its write fails like a full disk would.
        log.screenshots.root.mkdir()
        (log.screenshots.root / hashlib.sha256(shot).hexdigest()[:2]).write_bytes(b"")
        with pytest.raises(AuditError, match="could not be written"):
            log.append(Kind.MODEL_TURN, task=1, thread=1, data={"text": "x"}, shots={"seen": shot})
        assert log.head() == EMPTY_HEAD  # the entry was not written before its screenshot


def test_naming_a_screenshot_that_was_never_stored_is_refused(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as log, pytest.raises(AuditError, match="never stored"):
        log.append(Kind.MODEL_TURN, task=1, thread=1, data={"text": "x"}, shots={"seen": "a" * 64})


def test_threads_appending_at_once_write_one_chain(tmp_path: Path) -> None:
    shots = [screen(f"thread {n}") for n in range(4)]
    with AuditLog.open(tmp_path) as log:

        def work(n: int) -> None:
            for turn in range(25):
                log.append(
                    Kind.MODEL_TURN,
                    task=n,
                    thread=n,
                    data={"text": f"turn {turn}"},
                    shots={"seen": shots[n]} if turn % 5 == 0 else None,
                )

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert log.head().seq == 100
    report = verify(tmp_path)
    assert report.ok and (report.entries, report.shots_checked) == (100, 4)


def test_processes_appending_at_once_write_one_chain(tmp_path: Path) -> None:
    writers = [_writer(tmp_path, task, 40, "stop") for task in (1, 2, 3)]
    with AuditLog.open(tmp_path) as log:
        for n in range(40):
            log.append(Kind.MODEL_TURN, task=9, thread=1, data={"text": f"mine {n}"})
    for writer in writers:
        writer.communicate(timeout=60)
        assert writer.returncode == 0
    report = verify(tmp_path)
    assert report.ok, report.summary()
    assert report.entries == 160


def test_a_writer_killed_between_proposal_and_result_leaves_a_verifiable_unfinished_action(
    built: Built, tmp_path: Path
) -> None:
    judged = tmp_path / "judged.png"
    judged.write_bytes(screen("about to type"))
    writer = _writer(built.root, 7, 2, "propose", str(judged))
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "proposed"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
    assert writer.returncode == -signal.SIGKILL
    report = verify(built.root)
    assert report.ok, report.summary()
    assert [(u.task, u.action_id) for u in report.unfinished] == [(7, "toolu_x")]
    assert "1 actions with no recorded result" in report.summary()
    shown = text(steps(AuditLog(built.root).entries(7)))
    assert "Proposed: Type 'rm -rf' - NO RESULT RECORDED" in shown
    with AuditLog.open(built.root) as log:  # the controller starts again and carries on
        log.append(Kind.TASK_FINISHED, task=7, thread=1, data={"status": "interrupted"})
    assert verify(built.root).ok


def test_a_torn_last_line_is_reported_then_set_aside_on_the_record(built: Built) -> None:
    whole = built.log_path.read_bytes()
    torn = b'{"entry":{"data":{"text":"half a li'
    built.log_path.write_bytes(whole + torn)
    problem = verify(built.root).problem
    assert problem is not None
    assert (problem.kind, problem.line) == (ProblemKind.TORN, 19)
    with AuditLog.open(built.root) as log:
        head = log.head()
    repaired = list(AuditLog(built.root).entries())[-1]
    assert (repaired.kind, repaired.seq, head.seq) == (Kind.LOG_REPAIRED, 19, 19)
    assert repaired.data["bytes"] == len(torn)
    assert (built.root / repaired.data["saved_as"]).read_bytes() == torn
    report = verify(built.root)
    assert report.ok and report.repairs == 1
    assert "1 torn line(s) set aside" in report.summary()


def test_a_garbage_last_line_from_a_lost_write_is_torn_too(built: Built) -> None:
    built.log_path.write_bytes(built.log_path.read_bytes() + b"\0" * 300 + b"\n")
    problem = verify(built.root).problem
    assert problem is not None and problem.kind is ProblemKind.TORN
    with AuditLog.open(built.root):
        pass
    assert verify(built.root).ok


def test_an_edited_last_entry_is_not_mistaken_for_a_crash(built: Built) -> None:
    lines = built.lines()
    lines[-1] = lines[-1].replace(b"exit 0", b"exit 1")
    built.write(lines)
    with pytest.raises(AuditError, match="does not match its hash: it was edited"):
        AuditLog.open(built.root)


def test_a_log_cut_behind_the_writers_back_is_not_written_to(built: Built) -> None:
    with AuditLog.open(built.root) as log:
        log.append(Kind.TASK_STARTED, task=8, thread=1, data={})
        built.write(built.lines()[:-2])
        with pytest.raises(AuditError, match="shrank"):
            log.append(Kind.TASK_STARTED, task=8, thread=1, data={})


def test_the_head_follows_entries_another_process_wrote(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path) as log:
        log.append(Kind.TASK_STARTED, task=1, thread=1, data={})
        writer = _writer(tmp_path, 2, 3, "stop")
        writer.communicate(timeout=60)
        assert log.head().seq == 4
        assert log.append(Kind.TASK_STARTED, task=1, thread=1, data={}).seq == 5
    assert verify(tmp_path).ok


def test_a_tasks_entries_come_from_an_index_kept_up_to_date(built: Built) -> None:
    log = AuditLog(built.root)
    assert [e.seq for e in log.entries(3)] == [e.seq for e in built.entries if e.task == 3]
    writer = _writer(built.root, 3, 2, "stop")  # another process appends to task 3
    writer.communicate(timeout=60)
    found = list(log.entries(3))
    assert [e.data.get("text") for e in found[-2:]] == ["turn 0", "turn 1"]
    assert list(log.entries(99)) == []


def test_verify_never_reads_an_append_half_done(built: Built) -> None:
    """An append in progress (the writer holds the lock, half its line is on disk) is waited
    for, not reported as a torn line."""
    import fcntl

    from computer_use.audit import entry as E

    line, _ = E.encode(
        {
            "seq": 19,
            "prev": built.entries[-1].hash,
            "time": "2026-12-06T20:00:00.000000Z",
            "task": 4,
            "thread": 1,
            "kind": "task_started",
            "data": {},
            "shots": {},
        }
    )
    with open(built.log_path, "ab") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)
        writer.write(line[:40])
        writer.flush()
        results: list[object] = []
        checker = threading.Thread(target=lambda: results.append(verify(built.root)))
        checker.start()
        checker.join(0.5)
        assert checker.is_alive() and not results  # waiting for the append to finish
        writer.write(line[40:])
        writer.flush()
        fcntl.flock(writer.fileno(), fcntl.LOCK_UN)
    checker.join(30)
    (report,) = results
    assert report.ok and report.entries == 19  # type: ignore[attr-defined]
