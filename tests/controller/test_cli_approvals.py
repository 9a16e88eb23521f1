"""`dispatch approvals | approve | deny | memory` against a live server."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result
from conftest import LiveServer, wait_until

from controller.cli import main
from controller.store.approvals import NewApproval
from controller.store.tasks import NewTask
from sandbox import Network


@pytest.fixture
def run(live_server: LiveServer) -> object:
    env = {"DISPATCH_SERVER": live_server.url, "DISPATCH_TOKEN": live_server.token}

    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, list(args), env=env, input=input)

    return invoke


def pending(live_server: LiveServer, reason: str = "Pressing Send.") -> tuple[int, int]:
    controller = live_server.controller
    queued = controller.tasks.submit(
        NewTask(
            thread="cli", command=["sleep", "30"], mounts=(), network=Network.NONE, timeout_s=60
        )
    )
    wait_until(lambda: controller.tasks.get(queued.id).status.value == "running", 10, "running")
    approval = controller.approvals.request(
        NewApproval(
            task_id=queued.id,
            tool="computer",
            member="type",
            input={"text": "hello"},
            screen_input={"text": "hello"},
            description="Type 'hello'",
            model_reason=reason,
            policy_rule=None,
            screenshot_png=b"png",
            annotated_png=None,
        )
    )
    return queued.id, approval.id


def test_approvals_lists_pending_requests_with_the_models_words_escaped(run, live_server) -> None:  # type: ignore[no-untyped-def]
    task_id, approval_id = pending(live_server, reason="\x1b[2J\u202eevil")
    result = run("approvals")
    assert result.exit_code == 0, result.output
    assert f"{approval_id:>5}  {task_id:>5}  pending" in result.stdout
    assert "Type 'hello'" in result.stdout
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    assert "\\x1b[2J\\u202eevil" in result.stdout
    listed = json.loads(run("approvals", "--json").stdout)
    assert [a["id"] for a in listed] == [approval_id]
    live_server.controller.runner.cancel(task_id)


def test_approve_and_deny_decide_once(run, live_server) -> None:  # type: ignore[no-untyped-def]
    task_id, approval_id = pending(live_server)
    result = run("deny", str(approval_id), "--reason", "not now")
    assert (result.exit_code, result.stdout) == (
        0,
        f"approval {approval_id} denied: Type 'hello'\n",
    )
    assert live_server.controller.approvals.get(approval_id).decision_reason == "not now"
    again = run("approve", str(approval_id))
    assert again.exit_code == 1
    assert "already denied" in again.stderr
    assert run("approvals").stdout == "no approval requests are pending\n"
    live_server.controller.runner.cancel(task_id)


def test_memory_commands_round_trip(run) -> None:  # type: ignore[no-untyped-def]
    assert run("memory", "edit", "notes.md", "--file", "-", input="remember me").exit_code == 0
    listed = run("memory", "list")
    assert "/memories/notes.md" in listed.stdout
    assert run("memory", "show", "/memories/notes.md").stdout == "remember me\n"
    assert run("memory", "rm", "notes.md").exit_code == 0
    missing = run("memory", "show", "notes.md")
    assert missing.exit_code == 1 and "no memory file" in missing.stderr
