"""Command tasks in real Docker sandboxes, through the API."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
import pytest
from conftest import Api, wait_until

pytestmark = pytest.mark.docker
OWNER = (4321, 4321)  # the sandbox runs as the owner of its read-write folders; never root


@pytest.fixture
def api(make_api: Callable[..., Api], workspace: Path) -> Api:
    for folder in (workspace / "projects", workspace / "projects" / "app"):
        os.chown(folder, *OWNER)
    return make_api(real_sandbox=True, sandbox_backend="docker")


def container_exists(task: dict[str, object]) -> bool:
    """Whether the task's own sandbox container exists (other controllers reuse task ids)."""
    assert task["sandbox_id"], f"task {task['id']} never recorded a sandbox"
    try:
        docker.from_env().containers.get(str(task["sandbox_id"]))
    except docker.errors.NotFound:
        return False
    return True


def test_a_task_writes_to_its_read_write_folder_and_streams_output(
    api: Api, workspace: Path
) -> None:
    app = workspace / "projects" / "app"
    task = api.submit(
        ["sh", "-c", "echo start; pwd; echo made > result.txt; echo oops >&2"],
        folders=[{"path": str(app), "mode": "rw"}],
    )
    done = api.wait_task(task["id"], timeout_s=60)
    assert done["status"] == "succeeded", done
    assert (app / "result.txt").read_text() == "made\n"
    assert (app / "result.txt").stat().st_uid == OWNER[0]
    text = {"stdout": "", "stderr": ""}  # a stream may arrive in several chunks
    for chunk in done["output"]:
        text[chunk["stream"]] += chunk["text"]
    assert text["stdout"] == f"start\n{app}\n" and text["stderr"] == "oops\n"
    assert not container_exists(done)


def test_a_read_only_folder_cannot_be_written(api: Api, workspace: Path) -> None:
    ro = workspace / "readonly"
    task = api.submit(["sh", "-c", f"touch {ro}/x"], folders=[{"path": str(ro), "mode": "ro"}])
    done = api.wait_task(task["id"], timeout_s=60)
    assert done["status"] == "failed" and done["exit_code"] != 0
    assert not (ro / "x").exists()


def test_a_timeout_kills_the_command(api: Api) -> None:
    done = api.wait_task(api.submit(["sleep", "60"], timeout_s=1)["id"], timeout_s=60)
    assert (done["status"], done["outcome"]) == ("failed", "timed_out")
    assert done["duration_s"] < 30


def test_cancel_kills_a_running_task_and_removes_its_container(api: Api) -> None:
    task = api.submit(["sh", "-c", "echo started; sleep 60"])
    wait_until(lambda: api.task(task["id"])["output"], 60, "the task to start")
    running = api.task(task["id"])
    assert container_exists(running)
    response = api.post(f"/api/v1/tasks/{task['id']}/cancel")
    assert response.json()["status"] == "cancelled"
    assert not container_exists(running)


def test_a_root_owned_read_write_folder_is_refused_at_submission(api: Api, workspace: Path) -> None:
    root_owned = workspace / "projects" / "rootowned"
    root_owned.mkdir()
    os.chown(root_owned, 0, 0)
    response = api.post(
        "/api/v1/tasks",
        json={"command": ["true"], "folders": [{"path": str(root_owned), "mode": "rw"}]},
    )
    assert response.status_code == 422
    assert "owned by root" in response.json()["error"]["message"]
