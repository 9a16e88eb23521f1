"""The model's bash and edit tools, run in a real Docker sandbox on a granted folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from anthropic.tools import ToolError

from computer_use.agent.sandbox_tools import SandboxBash, SandboxEdit
from sandbox import SandboxSpec
from sandbox.mounts import validate_mount
from tests.sandbox.conftest import MakeSandbox

pytestmark = pytest.mark.docker


class Recorder:
    """A guard that records every call and refuses the commands it is told to."""

    def __init__(self, refuse: str | None = None) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.refuse = refuse

    def __call__(self, tool: str, member: str, args: Mapping[str, Any]) -> None:
        self.calls.append((tool, member, dict(args)))
        if self.refuse and self.refuse in str(args.get("command", "")):
            raise ToolError("The person denied this action: not that")


def test_bash_keeps_directory_and_variables_across_calls(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    box = make_sandbox("docker", SandboxSpec(mounts=(validate_mount(workspace, read_only=False),)))
    bash = SandboxBash(box, Recorder(), workdir=str(workspace))
    assert bash.call({"command": "pwd"}) == str(workspace)
    bash.call({"command": "mkdir sub && cd sub && export GREETING=hello"})
    assert bash.call({"command": 'echo "$PWD $GREETING"'}) == f"{workspace}/sub hello"
    # A command that exits still saves its state.
    bash.call({"command": "cd /tmp; exit 3"})
    assert bash.call({"command": "pwd"}) == "/tmp"
    assert bash.call({"restart": True}) == "the shell was restarted"
    assert bash.call({"command": "echo ${GREETING:-gone}"}) == "gone"


def test_bash_reports_status_and_timeout(make_sandbox: MakeSandbox) -> None:
    box = make_sandbox("docker")
    bash = SandboxBash(box, Recorder(), timeout_s=1.5)
    assert bash.call({"command": "echo out; echo err >&2; exit 4"}) == (
        "out\nerr\n[exited with status 4]"
    )
    timed = bash.call({"command": "sleep 30 & sleep 30"})
    assert "timed out after 1.5 s" in timed
    # The sandbox is still usable after the timeout killed the tree.
    assert bash.call({"command": "echo alive"}) == "alive"


def test_bash_asks_the_guard_first_and_a_refusal_runs_nothing(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    box = make_sandbox("docker", SandboxSpec(mounts=(validate_mount(workspace, read_only=False),)))
    guard = Recorder(refuse="rm ")
    bash = SandboxBash(box, guard)
    (workspace / "keep.txt").write_text("x")
    with pytest.raises(ToolError, match="denied"):
        bash.call({"command": f"rm {workspace}/keep.txt"})
    assert (workspace / "keep.txt").exists()
    assert guard.calls == [("bash", "command", {"command": f"rm {workspace}/keep.txt"})]


def test_edit_creates_replaces_inserts_and_views_in_a_read_write_grant(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    box = make_sandbox("docker", SandboxSpec(mounts=(validate_mount(workspace, read_only=False),)))
    guard = Recorder()
    edit = SandboxEdit(box, guard)
    target = workspace / "notes.txt"
    edit.call({"command": "create", "path": str(target), "file_text": "one\ntwo\nthree"})
    assert target.read_text() == "one\ntwo\nthree"
    edit.call({"command": "str_replace", "path": str(target), "old_str": "two", "new_str": "2"})
    edit.call({"command": "insert", "path": str(target), "insert_line": 1, "insert_text": "1.5"})
    assert target.read_text() == "one\n1.5\n2\nthree"
    view = edit.call({"command": "view", "path": str(target), "view_range": [2, 3]})
    assert view == "     2\t1.5\n     3\t2"
    assert str(target) in edit.call({"command": "view", "path": str(workspace)})
    with pytest.raises(ToolError, match="occurs 0 times"):
        edit.call({"command": "str_replace", "path": str(target), "old_str": "absent"})
    assert [c[1] for c in guard.calls] == [
        "create",
        "str_replace",
        "insert",
        "view",
        "view",
        "str_replace",
    ]


def test_edit_cannot_write_a_read_only_grant(make_sandbox: MakeSandbox, workspace: Path) -> None:
    (workspace / "keep.txt").write_text("original")
    box = make_sandbox("docker", SandboxSpec(mounts=(validate_mount(workspace),)))
    edit = SandboxEdit(box, Recorder())
    with pytest.raises(ToolError, match="cannot write"):
        edit.call({"command": "create", "path": str(workspace / "keep.txt"), "file_text": "x"})
    with pytest.raises(ToolError, match="absolute"):
        edit.call({"command": "view", "path": "relative.txt"})
    assert (workspace / "keep.txt").read_text() == "original"
