"""Network "allowlist" through the controller: the API field, presets, network_resolve, the log.

The Docker tests run a real controller whose config maps `allowed.test` to 127.0.0.1, where local
servers stand in for the internet.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import LOCAL_BASE_URL, Api, FakeFactory, LiveServer, wait_until, write_config
from fastapi.testclient import TestClient
from sqlalchemy import select

from computer_use.testing.fake_model import FakeModel
from controller.api.app import create_app
from controller.cli import main
from controller.errors import ConfigError
from controller.service import Controller
from controller.settings import load_settings
from controller.store.models import Event, TaskStatus
from controller.store.network import NetworkLog
from sandbox.egress import EgressRecord
from tests.sandbox.egress_sites import SECRET, SMALL, Site, serve

CONFIG = """
network_resolve = {"allowed.test" = "127.0.0.1"}

[network.presets]
local-site = ["allowed.test:PORT"]
"""


def network_config(workspace: Path, extra: str) -> Path:
    """config.toml with `extra` first: top-level keys must come before the [[folders]] tables."""
    config = write_config(workspace)
    config.write_text(extra + "\n" + config.read_text())
    return config


@pytest.fixture
def make_network_api(workspace: Path) -> Iterator[Callable[..., Api]]:
    """The app with `extra` appended to its config.toml; the real backend unless told."""
    with ExitStack() as stack:

        def make(extra: str, *, real_sandbox: bool = False) -> Api:
            config = network_config(workspace, extra)
            flags: dict[str, Any] = {"data_dir": workspace / "data"}
            flags["sandbox_backend"] = "docker" if real_sandbox else "fake"
            settings = load_settings(
                flags, {"XDG_CONFIG_HOME": str(workspace / "xdg-config")}, config=config
            )
            factory = FakeFactory()
            controller = (
                Controller(settings) if real_sandbox else Controller(settings, factory=factory)
            )
            app = create_app(controller.settings, controller=controller)
            client = stack.enter_context(
                TestClient(app, base_url=LOCAL_BASE_URL, raise_server_exceptions=False)
            )
            return Api(app, client, controller, factory)

        yield make


def submit_raw(api: Api, network: Any) -> Any:
    return api.post("/api/v1/tasks", json={"command": ["true"], "network": network})


def test_an_allow_list_is_stored_with_presets_expanded(
    make_network_api: Callable[..., Api],
) -> None:
    api = make_network_api(CONFIG.replace("PORT", "8443"))
    response = submit_raw(api, {"allow": ["python-packages", "local-site", "*.example.com"]})
    assert response.status_code == 202, response.text
    task = response.json()
    assert task["network"] == "allowlist"
    assert task["network_allow"] == [
        "pypi.org",
        "files.pythonhosted.org",
        "allowed.test:8443",
        "*.example.com",
    ]
    assert api.task(task["id"])["network_allow"] == task["network_allow"]
    # A retry keeps the list.
    api.wait_task(task["id"])
    retried = api.post(f"/api/v1/tasks/{task['id']}/retry").json()
    assert (retried["network"], retried["network_allow"]) == ("allowlist", task["network_allow"])


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("127.0.0.1", "is an IP address"),
        ("no-such-preset", "neither a domain nor a network preset (presets: local-site, python"),
        ("example.com:99999", "port"),
        ("exa mple.com", "not a domain name"),
    ],
)
def test_a_bad_allow_entry_is_refused_with_the_fix(
    make_network_api: Callable[..., Api], entry: str, says: str
) -> None:
    api = make_network_api(CONFIG.replace("PORT", "8443"))
    response = submit_raw(api, {"allow": [entry]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_network_allow" and says in error["message"]


def test_none_and_open_still_work_and_an_empty_list_is_refused(
    make_network_api: Callable[..., Api],
) -> None:
    api = make_network_api("")
    for choice in ("none", "open"):
        response = submit_raw(api, choice)
        assert response.status_code == 202 and response.json()["network"] == choice
        assert response.json()["network_allow"] == []
    assert submit_raw(api, {"allow": []}).status_code == 422
    assert submit_raw(api, "allowlist").status_code == 422


def test_bad_presets_and_resolve_mappings_stop_start_up(workspace: Path) -> None:
    for extra, says in (
        ('network_resolve = {"allowed.test" = "not-an-address"}', "not an IP address"),
        ('[network.presets]\nbad = ["10.0.0.1"]', "is an IP address"),
        ('[network.presets]\n"a.b" = ["pypi.org"]', "without dots"),
    ):
        with pytest.raises(ConfigError, match=says):
            load_settings({}, {}, config=network_config(workspace, extra))


def test_the_network_log_over_the_api_and_the_cli(
    make_network_api: Callable[..., Api], workspace: Path
) -> None:
    api = make_network_api("")
    task = submit_raw(api, {"allow": ["pypi.org"]}).json()
    log = NetworkLog(api.controller.db)
    log.add(task["id"], EgressRecord(1.0e9, "pypi.org", 443, "CONNECT", True, "", 600, 90000, 200))
    log.add(
        task["id"],
        EgressRecord(1.0e9 + 1, "evil.test", 443, "CONNECT", False, "not on the list", 0, 0, 403),
    )
    found = api.get(f"/api/v1/tasks/{task['id']}/network").json()
    assert found["allow"] == ["pypi.org"] and found["refused"] == 1
    assert [(r["domain"], r["allowed"], r["bytes_down"]) for r in found["requests"]] == [
        ("pypi.org", True, 90000),
        ("evil.test", False, 0),
    ]
    assert api.get("/api/v1/tasks/999999/network").status_code == 404


def test_dispatch_logs_network_prints_each_request(live_server: LiveServer) -> None:
    env = {"DISPATCH_SERVER": live_server.url, "DISPATCH_TOKEN": live_server.token}
    runner = CliRunner()
    submitted = runner.invoke(
        main, ["submit", "--allow", "pypi.org", "--json", "--", "true"], env=env
    )
    assert submitted.exit_code == 0, submitted.output
    task = json.loads(submitted.stdout)
    assert task["network_allow"] == ["pypi.org"]
    NetworkLog(live_server.controller.db).add(
        task["id"], EgressRecord(1.0e9, "evil.test", 80, "GET", False, "not on the list", 0, 0, 403)
    )
    result = runner.invoke(main, ["logs", str(task["id"]), "--network"], env=env)
    assert result.exit_code == 0, result.output
    assert "allowed: pypi.org" in result.stdout
    assert "refused  GET      evil.test:80" in result.stdout and "not on the list" in result.stdout
    assert "1 requests, 1 refused" in result.stdout


# --- real Docker ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_site() -> Iterator[Site]:
    with serve() as site:
        yield site


@pytest.mark.docker
def test_a_task_reaches_only_its_allowed_names_and_every_request_is_logged(
    make_network_api: Callable[..., Api], http_site: Site
) -> None:
    api = make_network_api(CONFIG.replace("PORT", str(http_site.port)), real_sandbox=True)
    script = (
        f"curl -fsS http://allowed.test:{http_site.port}/small; "
        "curl -sS -o /dev/null -w '%{http_code}\\n' http://pypi.org/simple/; "
        "curl -sS https://other.test/ || echo tunnel refused"
    )
    response = api.post(
        "/api/v1/tasks",
        json={"command": ["sh", "-c", script], "network": {"allow": ["local-site"]}},
    )
    assert response.status_code == 202, response.text
    done = api.wait_task(response.json()["id"], timeout_s=120)
    stdout = "".join(c["text"] for c in done["output"] if c["stream"] == "stdout")
    assert stdout == SMALL.decode() + "403\ntunnel refused\n", done
    found = api.get(f"/api/v1/tasks/{done['id']}/network").json()
    assert [(r["domain"], r["port"], r["method"], r["allowed"]) for r in found["requests"]] == [
        ("allowed.test", http_site.port, "GET", True),
        ("pypi.org", 80, "GET", False),
        ("other.test", 443, "CONNECT", False),
    ]
    assert found["requests"][0]["bytes_down"] > len(SMALL)
    # Each request was also an event of the task, for whoever watches it live.
    with api.controller.db.read() as session:
        evented = session.scalars(
            select(Event.data).where(Event.task_id == done["id"], Event.kind == "task.network")
        ).all()
    assert [(e["domain"], e["allowed"]) for e in evented] == [
        ("allowed.test", True),
        ("pypi.org", False),
        ("other.test", False),
    ]


@pytest.mark.docker
def test_without_the_mapping_the_name_does_not_reach_the_host(
    make_network_api: Callable[..., Api], http_site: Site
) -> None:
    # Allowed by name, but network_resolve does not map it: the host's server is not reached.
    api = make_network_api("", real_sandbox=True)
    before = len(http_site.paths)
    url = f"http://allowed.test:{http_site.port}/secret"
    response = api.post(
        "/api/v1/tasks",
        json={
            "command": ["curl", "-sS", url],
            "network": {"allow": [f"allowed.test:{http_site.port}"]},
        },
    )
    assert response.status_code == 202, response.text
    done = api.wait_task(response.json()["id"], timeout_s=120)
    stdout = "".join(c["text"] for c in done["output"])
    assert "Dispatch refused allowed.test" in stdout and SECRET.decode() not in stdout
    assert len(http_site.paths) == before


def test_submit_wait_says_when_the_network_refused_something(live_server: LiveServer) -> None:
    env = {"DISPATCH_SERVER": live_server.url, "DISPATCH_TOKEN": live_server.token}
    outcome: list[Any] = []
    waiter = threading.Thread(
        target=lambda: outcome.append(
            CliRunner().invoke(
                main,
                ["submit", "--wait", "--allow", "pypi.org", "--", "stream", "30", "0.1"],
                env=env,
            )
        )
    )
    waiter.start()
    tasks = live_server.controller.tasks
    task = wait_until(lambda: tasks.search(status=TaskStatus.RUNNING), 10, "the task to run")[0]
    NetworkLog(live_server.controller.db, live_server.controller.events).add(
        task.id,
        EgressRecord(time.time(), "evil.test", 443, "CONNECT", False, "not on the list", 0, 0, 403),
        thread_id=task.thread_id,
    )
    waiter.join(30)
    result = outcome[0]
    assert result.exit_code == 0, result.output
    assert "dispatch: network: refused evil.test:443 (not on the list)" in result.stderr


@pytest.mark.docker
@pytest.mark.browser
def test_the_agents_browser_goes_through_the_same_proxy_and_list(
    workspace: Path, http_site: Site, fake_model: FakeModel
) -> None:
    from computer_use.testing.fake_model import Reply, ToolCall

    config = network_config(workspace, CONFIG.replace("PORT", str(http_site.port)))
    settings = load_settings(
        {"data_dir": workspace / "data", "sandbox_backend": "docker"},
        {"XDG_CONFIG_HOME": str(workspace / "xdg-config"), **fake_model.environ()},
        config=config,
    )
    controller = Controller(settings)
    page = f"http://allowed.test:{http_site.port}/small"
    fake_model.add(
        Reply(text="Opening it.", tool_calls=[ToolCall("navigate", {"url": page}, "browser")]),
        Reply(tool_calls=[ToolCall("get_page_text", {}, toolset="browser")]),
        Reply(text="It says hello."),
    )
    with TestClient(create_app(settings, controller=controller), base_url=LOCAL_BASE_URL) as client:
        api = Api(client.app, client, controller, FakeFactory())  # type: ignore[arg-type]
        response = api.post(
            "/api/v1/tasks",
            json={
                "kind": "agent",
                "prompt": "Read the page",
                "tools": ["browser"],
                "network": {"allow": ["local-site"]},
                "timeout_s": 300,
            },
        )
        assert response.status_code == 202, response.text
        task_id = response.json()["id"]
        api.wait_task(task_id, ("waiting_for_approval",), timeout_s=180)
        request = api.get("/api/v1/approvals?state=pending").json()[0]
        api.post(f"/api/v1/approvals/{request['id']}/decision", json={"decision": "approve"})
        done = api.wait_task(task_id, timeout_s=180)
        assert done["status"] == "succeeded", done
        text = [s for s in done["steps"] if s["kind"] == "tools"][1]["results"][0]["text"]
        # No DNS in the sandbox: allowed.test loaded only through the proxy's network_resolve.
        assert SMALL.decode().strip() in text
        found = api.get(f"/api/v1/tasks/{task_id}/network").json()["requests"]
        assert ("allowed.test", http_site.port, True) in [
            (r["domain"], r["port"], r["allowed"]) for r in found
        ]
        audited = api.get(f"/api/v1/tasks/{task_id}/audit").json()
        assert any(
            s["kind"] == "network_request" and s["data"]["domain"] == "allowed.test"
            for s in audited
        )
