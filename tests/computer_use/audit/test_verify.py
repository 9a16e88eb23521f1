"""Every kind of tampering the issue lists is caught, and the right entry is named."""

from __future__ import annotations

import hashlib
import json

from computer_use.audit import entry as E
from computer_use.audit.entry import Head, Kind
from computer_use.audit.verify import ProblemKind, verify
from tests.computer_use.audit.conftest import Built


def _forge(seq: int, prev: str, task: int = 2) -> bytes:
    line, _ = E.encode(
        {
            "seq": seq,
            "prev": prev,
            "time": "2026-01-01T00:00:00.000000Z",
            "task": task,
            "thread": 2,
            "kind": "approval_decided",
            "data": {"action_id": "toolu_2_1", "decision": "approved", "by": "mallory"},
            "shots": {},
        }
    )
    return line


def _rehash(line: bytes, change) -> bytes:  # type: ignore[no-untyped-def]
    """The line with its entry changed by `change(dict)` and its own hash recomputed."""
    parsed = json.loads(line)
    change(parsed["entry"])
    return E.encode(parsed["entry"])[0]


def test_an_untouched_log_verifies_with_every_screenshot_checked(built: Built) -> None:
    report = verify(built.root)
    assert report.ok, report.summary()
    assert report.entries == len(built.entries) == 18
    assert report.head == Head(built.entries[-1].seq, built.entries[-1].hash)
    assert report.shots_checked == 7  # two tasks' seen, judged and annotated, one "after"
    assert report.unfinished == ()
    assert report.summary().startswith("audit log intact: 18 entries; head 18:")


def test_an_edited_field_names_that_entry(built: Built) -> None:
    lines = built.lines()
    decided = built.of(Kind.APPROVAL_DECIDED, 2)
    lines[decided.seq - 1] = lines[decided.seq - 1].replace(b'"approved"', b'"denied"')
    built.write(lines)
    problem = verify(built.root).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.line) == (
        ProblemKind.EDITED,
        decided.seq,
        decided.seq,
    )


def test_an_edit_with_its_hash_recomputed_names_that_entry(built: Built) -> None:
    lines = built.lines()
    target = built.of(Kind.APPROVAL_DECIDED, 2).seq
    lines[target - 1] = _rehash(lines[target - 1], lambda e: e["data"].update(by="mallory"))
    built.write(lines)
    problem = verify(built.root).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.REWRITTEN, target)


def test_a_deleted_entry_is_named_as_missing(built: Built) -> None:
    lines = built.lines()
    del lines[6]  # entry 7
    built.write(lines)
    problem = verify(built.root).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.line) == (ProblemKind.REMOVED, 7, 7)
    assert "entry 8 follows entry 6" in problem.message


def test_an_inserted_copy_of_an_entry_is_named(built: Built) -> None:
    lines = built.lines()
    lines.insert(5, lines[2])  # entry 3 again, as line 6
    built.write(lines)
    problem = verify(built.root).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.line) == (ProblemKind.INSERTED, 3, 6)


def test_an_inserted_entry_forged_to_link_is_named(built: Built) -> None:
    lines = built.lines()
    previous = built.entries[4]  # seq 5
    lines.insert(5, _forge(6, previous.hash))  # claims to be entry 6, links to 5
    built.write(lines)
    problem = verify(built.root).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.line) == (ProblemKind.INSERTED, 6, 6)
    assert "mallory" not in verify(built.root).summary()


def test_two_swapped_entries_are_named_as_reordered(built: Built) -> None:
    lines = built.lines()
    lines[9], lines[10] = lines[10], lines[9]  # entries 10 and 11
    built.write(lines)
    problem = verify(built.root).problem
    assert problem is not None
    assert (problem.kind, problem.seq, problem.line) == (ProblemKind.REORDERED, 11, 10)
    assert "entry 10 should be here" in problem.message


def test_a_changed_screenshot_byte_names_the_first_entry_showing_it(built: Built) -> None:
    proposed = built.of(Kind.ACTION_PROPOSED, 3)
    path = built.root / "shots" / proposed.shots["judged"][:2] / proposed.shots["judged"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    problem = verify(built.root).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.SCREENSHOT_ALTERED, proposed.seq)
    assert hashlib.sha256(bytes(data)).hexdigest()[:12] in problem.message


def test_a_deleted_screenshot_names_the_first_entry_showing_it(built: Built) -> None:
    performed = built.of(Kind.ACTION_PERFORMED, 2)
    digest = performed.shots["after"]
    (built.root / "shots" / digest[:2] / digest).unlink()
    problem = verify(built.root).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.SCREENSHOT_MISSING, performed.seq)


def test_a_cut_tail_is_caught_against_a_head_taken_earlier(built: Built) -> None:
    head = verify(built.root).head
    built.write(built.lines()[:-3])
    assert verify(built.root).ok  # on its own a cut log still links...
    problem = verify(built.root, head=head).problem  # ...but not to the published head
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.TRUNCATED, 16)
    assert "ends at entry 15 but the given head is entry 18" in problem.message


def test_a_consistent_rewrite_is_caught_against_a_head_taken_earlier(built: Built) -> None:
    head = verify(built.root).head
    lines = built.lines()
    prev = built.entries[7].hash  # rewrite from entry 9 on, every hash recomputed
    for index in range(8, len(lines)):

        def change(entry, prev=prev, index=index):  # type: ignore[no-untyped-def]
            entry["prev"] = prev
            if index == 8:
                entry["data"]["by"] = "mallory"

        lines[index] = _rehash(lines[index], change)
        prev = json.loads(lines[index])["hash"]
    built.write(lines)
    assert verify(built.root).ok
    problem = verify(built.root, head=head).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.NOT_EXTENDING, 18)


def test_a_task_filter_still_checks_the_whole_chain(built: Built) -> None:
    lines = built.lines()
    first = [i for i, e in enumerate(built.entries) if e.task == 3]
    for index in reversed(first):
        del lines[index]  # task 3's entries removed: the other tasks' chain must break
    built.write(lines)
    problem = verify(built.root, task=2).problem
    assert problem is not None
    assert (problem.kind, problem.seq) == (ProblemKind.REMOVED, first[0] + 1)


def test_a_task_filter_counts_that_tasks_entries_and_screenshots(built: Built) -> None:
    report = verify(built.root, task=3)
    assert report.ok
    assert report.task_entries == sum(1 for e in built.entries if e.task == 3)
    assert report.shots_checked == 3  # seen, judged, annotated; no "after" (denied)
    assert report.summary().startswith("task 3: 7 entries intact in a chain of 18")
