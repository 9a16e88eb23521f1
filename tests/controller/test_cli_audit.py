"""`dispatch audit verify | show | export` on a real log: exit codes and what they print."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from controller.cli import main
from tests.computer_use.audit.conftest import Built, build


@pytest.fixture
def built(tmp_path: Path) -> Built:
    return build(tmp_path / "data" / "audit")


Run = Callable[..., Result]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "DISPATCH_DATA_DIR": None}

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, ["audit", *args], env=env)

    return invoke


def test_verify_prints_one_line_and_exits_0_when_intact(run: Run, built: Built) -> None:
    result = run("verify", "--data-dir", str(built.root.parent))
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1
    assert result.output.startswith("audit log intact: 18 entries; head 18:")


def test_verify_exits_1_naming_the_first_bad_entry(run: Run, built: Built) -> None:
    lines = built.lines()
    del lines[4]
    built.write(lines)
    result = run("verify", "--data-dir", str(built.root.parent))
    assert result.exit_code == 1
    assert result.output.startswith("audit log NOT intact: entry 5 (line 5): removed: missing")


def test_verify_against_a_head_catches_a_cut_tail(run: Run, built: Built) -> None:
    head = f"{built.entries[-1].seq}:{built.entries[-1].hash}"
    built.write(built.lines()[:-1])
    data_dir = str(built.root.parent)
    assert run("verify", "--data-dir", data_dir).exit_code == 0
    result = run("verify", "--data-dir", data_dir, "--head", head)
    assert result.exit_code == 1
    assert "entry 18 (line 18): truncated" in result.output


def test_verify_json_reports_the_problem_for_programs(run: Run, built: Built) -> None:
    lines = built.lines()
    assert b'"input_tokens":812' in lines[3]
    lines[3] = lines[3].replace(b"812", b"813")
    built.write(lines)
    result = run("verify", "--json", "--task", "2", "--data-dir", str(built.root.parent))
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False
    assert report["problem"] == {
        "kind": "edited",
        "seq": 4,
        "line": 4,
        "message": "edited: its bytes do not match its hash",
    }


def test_a_torn_tail_exits_75(run: Run, built: Built) -> None:
    built.log_path.write_bytes(built.log_path.read_bytes() + b'{"entry":{"da')
    result = run("verify", "--data-dir", str(built.root.parent))
    assert result.exit_code == 75
    assert "torn" in result.output and "line 19" in result.output


def test_bad_usage_exits_2_saying_what_to_fix(run: Run, built: Built, tmp_path: Path) -> None:
    result = run("verify", "--data-dir", str(built.root.parent), "--head", "12")
    assert result.exit_code == 2 and "a head is SEQ:HASH" in result.output
    result = run("verify", "--data-dir", str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and "no audit log at" in result.output


def test_show_prints_a_tasks_steps_in_words(run: Run, built: Built) -> None:
    result = run("show", "3", "--data-dir", str(built.root.parent))
    assert result.exit_code == 0, result.output
    assert "Task submitted by phone" in result.output
    assert "Proposed: Click at (270, 165)" in result.output
    assert "Denied by Ann's phone on device 3: Click at (270, 165)" in result.output
    assert "Reason: not now" in result.output
    assert "NO RESULT" not in result.output  # a denial is the action's end
    assert run("show", "99", "--data-dir", str(built.root.parent)).exit_code == 1


def test_export_writes_a_folder_that_verify_export_checks(
    run, built: Built, tmp_path: Path
) -> None:
    out = tmp_path / "task-2"
    result = run("export", "2", "--out", str(out), "--data-dir", str(built.root.parent))
    assert result.exit_code == 0, result.output
    assert (out / "index.html").exists()
    result = run("verify", "--export", str(out))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("task 2: 8 entries intact in a chain of 10")
    (out / "entries.jsonl").write_bytes(b"")
    assert run("verify", "--export", str(out)).exit_code == 1
    again = run("export", "2", "--out", str(out), "--data-dir", str(built.root.parent))
    assert again.exit_code == 2 and "not empty" in again.output
