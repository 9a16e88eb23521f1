"""Agent tasks through the API: the real `anthropic` client and tool runner against the scripted
fake Messages API, the controller's store as approval gate, and (marked) a real Docker sandbox."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import Api, FakeFactory, LiveServer, wait_until

from computer_use.testing.fake_model import FakeModel, Fault, Reply, ToolCall
from controller.cli import main
from controller.settings import Settings

OWNER = (4321, 4321)


def submit_agent(api: Api, prompt: str, **body: Any) -> dict[str, Any]:
    response = api.post("/api/v1/tasks", json={"kind": "agent", "prompt": prompt, **body})
    assert response.status_code == 202, response.text
    task: dict[str, Any] = response.json()
    return task


def memory_call(path: str, text: str) -> ToolCall:
    return ToolCall("memory", {"command": "create", "path": path, "file_text": text}, toolset=None)


def test_an_agent_task_runs_to_its_answer_with_steps_tokens_and_memory(
    make_agent_api: Callable[..., Api], fake_model: FakeModel
) -> None:
    api = make_agent_api()
    fake_model.add(
        Reply(text="Saving that.", tool_calls=[memory_call("/memories/tea.md", "likes tea")]),
        Reply(text="Done: I will remember you like tea.", input_tokens=300, output_tokens=12),
    )
    task = submit_agent(
        api, "Remember that I like tea.", tools=["memory"], model="claude-sonnet-4-6"
    )
    assert task["kind"] == "agent" and task["agent"]["tools"] == ["memory"]
    # Writing to memory asks: the card shows the path and the text to store.
    api.wait_task(task["id"], ("waiting_for_approval",), timeout_s=30)
    request = api.get("/api/v1/approvals?state=pending").json()[0]
    assert (request["tool"], request["member"]) == ("memory", "create")
    assert "/memories/tea.md" in request["description"] and "likes tea" in request["description"]
    assert api.get("/api/v1/memory").json() == []  # nothing stored before the decision
    api.post(f"/api/v1/approvals/{request['id']}/decision", json={"decision": "approve"})
    done = api.wait_task(task["id"], timeout_s=30)
    assert done["status"] == "succeeded", done
    assert done["final_answer"] == "Done: I will remember you like tea."
    assert (done["tokens_in"], done["tokens_out"]) == (400, 32)
    assert done["cost_usd"] == pytest.approx((400 * 3 + 32 * 15) / 1e6)
    assert [s["kind"] for s in done["steps"]] == ["model", "tools", "model"]
    assert done["steps"][0]["tool_calls"][0]["name"] == "memory"
    assert api.get("/api/v1/memory/tea.md").json()["content"] == "likes tea"
    # The model is reached with the key and the task's model.
    first = fake_model.message_requests()[0]
    assert first.body["model"] == "claude-sonnet-4-6"


def test_a_thread_keeps_its_context_for_the_next_agent_task(
    make_agent_api: Callable[..., Api], fake_model: FakeModel
) -> None:
    api = make_agent_api()
    command = api.submit(["echo", "build 42 passed"], thread="work")
    api.wait_task(command["id"])
    fake_model.add(Reply(text="The build passed."))
    task = submit_agent(api, "Did the build pass?", tools=["memory"], thread="work")
    assert api.wait_task(task["id"], timeout_s=30)["status"] == "succeeded"
    told = fake_model.message_requests()[0].body["messages"][0]["content"]
    assert "echo build 42 passed" in told and "build 42 passed" in told
    assert told.rstrip().endswith("Did the build pass?")


def test_a_model_api_error_fails_the_task_with_status_and_message(
    make_agent_api: Callable[..., Api], fake_model: FakeModel
) -> None:
    api = make_agent_api()
    fake_model.add(Fault.unauthorized())
    task = submit_agent(api, "Hello", tools=["memory"])
    done = api.wait_task(task["id"], timeout_s=30)
    assert done["status"] == "failed"
    assert "rejected the key (401" in done["reason"] and "ANTHROPIC_API_KEY" in done["reason"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"tools": []}, "body.tools"),
        ({"tools": ["shell"]}, "body.tools"),
        ({"tools": ["bash", "bash"]}, "named twice"),
        ({"tools": ["memory"], "prompt": "x" * 20_001}, "body.prompt"),
        ({"tools": ["memory"], "max_steps": 0}, "body.max_steps"),
        ({"tools": ["memory"], "max_steps": 10_001}, "max_agent_steps"),
        ({"tools": ["computer"], "display": "host"}, "host_display"),
        ({"tools": ["memory"], "policy": {"default": "maybe"}}, "policy.default"),
        ({"tools": ["memory"], "policy": {"rules": [{"tool": "bash"}]}}, "policy.rules[0]"),
        ({"tools": ["browser"], "allowed_domains": ["http://x.test/"]}, "allowed_domains entry"),
        ({"tools": ["memory"], "display": "phone"}, "body.display"),
    ],
)
def test_bad_agent_submissions_are_422_naming_the_field(
    make_agent_api: Callable[..., Api], body: dict[str, Any], named: str
) -> None:
    api = make_agent_api()
    response = api.post("/api/v1/tasks", json={"kind": "agent", "prompt": "Do it", **body})
    assert response.status_code == 422, response.text
    assert named in response.json()["error"]["message"]
    assert api.get("/api/v1/tasks").json() == []


def test_an_agent_task_without_a_model_key_is_refused_at_submission(
    make_agent_api: Callable[..., Api],
) -> None:
    api = make_agent_api(key=None)
    response = api.post(
        "/api/v1/tasks", json={"kind": "agent", "prompt": "Hi", "tools": ["memory"]}
    )
    assert response.status_code == 422
    assert "ANTHROPIC_API_KEY" in response.json()["error"]["message"]


@pytest.fixture
def owned_projects(workspace: Path) -> Path:
    """The read-write grant, owned by a normal user, as a person's project folder is."""
    projects = workspace / "projects"
    for path in [projects, *projects.rglob("*")]:
        os.chown(path, *OWNER)
    return projects / "app"


@pytest.mark.docker
def test_a_bash_step_in_a_read_write_folder_waits_for_approval_then_edits_the_file(
    make_agent_api: Callable[..., Api], fake_model: FakeModel, owned_projects: Path
) -> None:
    api = make_agent_api(real_sandbox=True, sandbox_backend="docker")
    app = owned_projects
    (app / "notes.txt").write_text("draft\n")
    os.chown(app / "notes.txt", *OWNER)
    bash = ToolCall("bash", {"command": "echo final >> notes.txt && cat notes.txt"}, toolset=None)
    fake_model.add(
        Reply(text="I will append to the notes.", tool_calls=[bash]),
        Reply(text="Appended."),
    )
    task = submit_agent(
        api,
        "Append 'final' to notes.txt",
        tools=["bash"],
        folders=[{"path": str(app), "mode": "rw"}],
    )
    waiting = api.wait_task(task["id"], ("waiting_for_approval",), timeout_s=90)
    assert waiting["status"] == "waiting_for_approval"
    pending = api.get("/api/v1/approvals?state=pending").json()
    assert len(pending) == 1
    request = pending[0]
    assert request["tool"] == "bash" and "echo final >> notes.txt" in request["description"]
    assert request["model_reason"] == "I will append to the notes."
    assert (app / "notes.txt").read_text() == "draft\n"  # nothing ran before the decision
    decided = api.post(f"/api/v1/approvals/{request['id']}/decision", json={"decision": "approve"})
    assert decided.status_code == 200, decided.text
    done = api.wait_task(task["id"], timeout_s=90)
    assert done["status"] == "succeeded", done
    assert (app / "notes.txt").read_text() == "draft\nfinal\n"
    assert (app / "notes.txt").stat().st_uid == OWNER[0]
    result = done["steps"][1]["results"][0]
    assert result["is_error"] is False and "draft\nfinal" in result["text"]


@pytest.mark.docker
def test_a_denied_bash_step_is_not_run_and_the_model_hears_why(
    make_agent_api: Callable[..., Api], fake_model: FakeModel, owned_projects: Path
) -> None:
    api = make_agent_api(real_sandbox=True, sandbox_backend="docker")
    app = owned_projects
    bash = ToolCall("bash", {"command": "rm -rf ./*"}, toolset=None)
    fake_model.add(Reply(text="Cleaning up.", tool_calls=[bash]), Reply(text="Understood."))
    (app / "keep.txt").write_text("keep")
    task = submit_agent(api, "Tidy up", tools=["bash"], folders=[{"path": str(app), "mode": "rw"}])
    api.wait_task(task["id"], ("waiting_for_approval",), timeout_s=90)
    request = api.get("/api/v1/approvals?state=pending").json()[0]
    api.post(
        f"/api/v1/approvals/{request['id']}/decision",
        json={"decision": "deny", "reason": "keep my files"},
    )
    done = api.wait_task(task["id"], timeout_s=90)
    assert done["status"] == "failed"
    assert done["reason"].startswith("stopped after a denial: The person denied this action")
    assert "keep my files" in done["reason"]
    assert (app / "keep.txt").read_text() == "keep"
    told = fake_model.message_requests()[1].body["messages"][-1]["content"][0]
    assert told["is_error"] is True and "keep my files" in str(told["content"])


@pytest.mark.docker
def test_cancelling_a_task_waiting_for_approval_voids_its_request(
    make_agent_api: Callable[..., Api], fake_model: FakeModel, owned_projects: Path
) -> None:
    api = make_agent_api(real_sandbox=True, sandbox_backend="docker")
    bash = ToolCall("bash", {"command": "touch made-it"}, toolset=None)
    fake_model.add(Reply(tool_calls=[bash]))
    task = submit_agent(
        api, "Touch", tools=["bash"], folders=[{"path": str(owned_projects), "mode": "rw"}]
    )
    api.wait_task(task["id"], ("waiting_for_approval",), timeout_s=90)
    request = api.get("/api/v1/approvals?state=pending").json()[0]
    assert api.post(f"/api/v1/tasks/{task['id']}/cancel").status_code == 200
    done = api.wait_task(task["id"], timeout_s=60)
    assert done["status"] == "cancelled"
    wait_until(
        lambda: api.get(f"/api/v1/approvals/{request['id']}").json()["state"] == "void",
        10,
        "the request to be voided",
    )
    late = api.post(f"/api/v1/approvals/{request['id']}/decision", json={"decision": "approve"})
    assert late.status_code == 409
    assert not (owned_projects / "made-it").exists()


def test_submit_agent_prints_the_steps_and_the_answer_and_logs_shows_them(
    make_settings: Callable[..., Settings], fake_model: FakeModel
) -> None:
    settings = replace(
        make_settings(),
        anthropic_api_key="test-key",
        anthropic_base_url=fake_model.url,
        # The owner's choice: memory writes run without asking (the default asks).
        policy={"rules": [{"tool": "memory", "decision": "allow"}]},
    )
    server = LiveServer(settings, FakeFactory())
    server.start()
    try:
        fake_model.add(
            Reply(text="Noting \x1b[2Jit.", tool_calls=[memory_call("/memories/a.md", "a")]),
            Reply(text="Done."),
        )
        env = {"DISPATCH_SERVER": server.url, "DISPATCH_TOKEN": server.token}
        result = CliRunner().invoke(
            main, ["submit", "--agent", "Note a", "--tool", "memory", "--wait"], env=env
        )
        assert result.exit_code == 0, result.output
        assert "[step 1] model: Noting \\x1b[2Jit." in result.stdout
        assert result.stdout.rstrip().endswith("answer: Done.")
        task_id = server.controller.tasks.search()[0].id
        logs = CliRunner().invoke(main, ["logs", str(task_id)], env=env)
    finally:
        server.stop()
    assert logs.exit_code == 0, logs.output
    assert "[step 1] model: Noting \\x1b[2Jit." in logs.stdout
    assert '[step 1] calls memory {"command": "create"' in logs.stdout
    assert "[step 2] result: File created successfully at: /memories/a.md" in logs.stdout
    assert logs.stdout.rstrip().endswith("answer: Done.")
    both = CliRunner().invoke(main, ["submit", "--agent", "x", "--", "ls"], env=env)
    assert both.exit_code == 2 and "not both or neither" in both.output
