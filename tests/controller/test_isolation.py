"""Per-task isolation: `"isolation": "vm"` runs a task in a libvirt VM instead of a container."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable

import pytest
from click.testing import CliRunner
from conftest import Api, LiveServer

from controller.cli import main


def test_a_vm_task_is_stored_shown_retried_and_run_on_the_libvirt_backend(api: Api) -> None:
    response = api.post("/api/v1/tasks", json={"command": ["uname", "-r"], "isolation": "vm"})
    assert response.status_code == 202, response.text
    task = response.json()
    assert task["isolation"] == "vm"
    done = api.wait_task(task["id"])
    assert api.factory.backends == ["libvirt"]
    retried = api.post(f"/api/v1/tasks/{done['id']}/retry").json()
    assert retried["isolation"] == "vm"
    api.wait_task(retried["id"])
    assert api.factory.backends == ["libvirt", "libvirt"]
    # The default stays the configured backend.
    plain = api.submit(["true"])
    assert plain["isolation"] == "container"
    api.wait_task(plain["id"])
    assert api.factory.backends[-1] == "fake"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"command": ["true"], "network": {"allow": ["pypi.org"]}}, 'network "allowlist"'),
        (
            {"kind": "agent", "prompt": "look", "tools": ["computer"], "display": "sandbox"},
            "no desktop or browser",
        ),
        ({"command": ["true"], "isolation": "kvm"}, "isolation"),
    ],
)
def test_what_a_vm_cannot_do_yet_is_refused_with_the_fix(
    make_agent_api: Callable[..., Api], body: dict[str, object], says: str
) -> None:
    api = make_agent_api()
    response = api.post("/api/v1/tasks", json={"isolation": "vm", **body})
    assert response.status_code == 422, response.text
    assert says in response.json()["error"]["message"] or says in response.text
    assert api.get("/api/v1/tasks").json() == []


def test_dispatch_submit_vm_asks_for_it(live_server: LiveServer) -> None:
    env = {"DISPATCH_SERVER": live_server.url, "DISPATCH_TOKEN": live_server.token}
    result = CliRunner().invoke(main, ["submit", "--vm", "--json", "--", "true"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["isolation"] == "vm"


@pytest.mark.libvirt
def test_a_vm_task_runs_with_its_own_kernel(make_api: Callable[..., Api]) -> None:
    if not os.path.exists("/var/run/libvirt/libvirt-sock"):
        pytest.fail("libvirtd is not running: `make test` starts it")
    api = make_api(real_sandbox=True, sandbox_backend="docker")
    task = api.post(
        "/api/v1/tasks", json={"command": ["uname", "-r"], "isolation": "vm", "timeout_s": 300}
    ).json()
    done = api.wait_task(task["id"], timeout_s=300)
    assert done["status"] == "succeeded", done
    kernel = "".join(c["text"] for c in done["output"] if c["stream"] == "stdout").strip()
    assert kernel and kernel != platform.release()
