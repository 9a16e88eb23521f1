"""The client commands against a live server: output, exit codes, token discovery."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import CliRunner, Result
from conftest import LiveServer, wait_until

from controller.cli import main
from controller.cli.exit_codes import ExitCode
from controller.client import Client
from controller.local import write_private


@pytest.fixture
def run(live_server: LiveServer) -> object:
    env = {"DISPATCH_SERVER": live_server.url, "DISPATCH_TOKEN": live_server.token}

    def invoke(*args: str, **extra_env: str) -> Result:
        return CliRunner().invoke(main, list(args), env={**env, **extra_env})

    return invoke


def test_submit_wait_streams_output_and_exits_with_the_task_code(run, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    result = run("submit", "--wait", "--folder", f"{workspace / 'projects'}:rw", "--", "echo", "hi")
    assert (result.exit_code, result.stdout) == (0, "hi\n")
    assert run("submit", "--wait", "--", "exit", "7").exit_code == 7
    assert run("submit", "--wait", "--timeout", "0.2", "--", "sleep", "5").exit_code == 124


def test_a_refused_folder_exits_120_with_the_reason(run, workspace: Path) -> None:  # type: ignore[no-untyped-def]
    result = run("submit", "--folder", str(workspace / "elsewhere"), "--", "true")
    assert result.exit_code == 120
    assert "elsewhere" in result.stderr and "not granted" in result.stderr


def test_a_cancelled_task_makes_wait_exit_130(run, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    outcome: list[Result] = []
    waiter = threading.Thread(
        target=lambda: outcome.append(run("submit", "--wait", "--", "sleep", "30"))
    )
    waiter.start()
    task_id = wait_until(lambda: live_server.controller.tasks.search(), 10, "the task")[0].id
    # Not a second CliRunner: it swaps sys.stdout, which the waiting one is using.
    with Client(live_server.url, live_server.token) as client:
        assert client.cancel(task_id)["status"] == "cancelled"
    waiter.join(10)
    assert outcome[0].exit_code == 130


def test_cancel_prints_the_new_state(run, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    with Client(live_server.url, live_server.token) as client:
        task = client.submit(["sleep", "30"])
    wait_until(lambda: live_server.controller.runner.running, 10, "the task to run")
    assert run("cancel", str(task["id"])).stdout == f"task {task['id']} cancelled\n"
    assert run("cancel", str(task["id"])).exit_code == 1  # already finished: 409


def test_tasks_logs_and_retry(run) -> None:  # type: ignore[no-untyped-def]
    queued = run("submit", "--thread", "cli", "--", "echo", "again")
    assert queued.exit_code == 0 and queued.stdout.startswith("task ")
    task_id = int(queued.stdout.split()[1])
    assert run("logs", "--follow", str(task_id)).stdout == "again\n"
    assert run("logs", str(task_id)).stdout == "again\n"
    listed = json.loads(run("tasks", "--json").stdout)
    assert [t["id"] for t in listed] == [task_id] and listed[0]["status"] == "succeeded"
    assert "echo again" in run("tasks").stdout
    retried = run("retry", str(task_id))
    assert retried.exit_code == 0 and f"(retry of {task_id})" in retried.stdout
    missing = run("logs", "999")
    assert missing.exit_code == 1 and "no task 999" in missing.stderr


def test_the_local_cli_needs_no_pairing(live_server: LiveServer) -> None:
    data_dir = live_server.controller.settings.data_dir
    # What `dispatch serve` records for the CLI on its machine.
    write_private(data_dir / "controller.json", json.dumps({"url": live_server.url}))
    env = {"DISPATCH_SERVER": "", "DISPATCH_DATA_DIR": str(data_dir), "DISPATCH_TOKEN": ""}
    result = CliRunner().invoke(main, ["tasks", "--json"], env=env)
    assert result.exit_code == 0, result.output
    # Naming the local controller's own URL is still the local controller.
    result = CliRunner().invoke(main, ["tasks", "--json", "--server", live_server.url], env=env)
    assert result.exit_code == 0, result.output


class Recorder(BaseHTTPRequestHandler):
    """Answers every GET with `[]` and keeps the Authorization headers it was sent."""

    seen: list[str | None]

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str | None]]]:
    """Some other server on 127.0.0.1: its URL, and the Authorization headers it received."""
    seen: list[str | None] = []
    handler = type("Handler", (Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_the_owner_token_is_never_sent_to_a_server_named_explicitly(
    listener: tuple[str, list[str | None]], tmp_path: Path
) -> None:
    url, seen = listener
    data_dir = tmp_path / "data"
    write_private(data_dir / "owner-token", "the-owner-token\n")
    env = {"DISPATCH_DATA_DIR": str(data_dir), "DISPATCH_TOKEN": "", "DISPATCH_SERVER": ""}
    by_flag = CliRunner().invoke(main, ["tasks", "--server", url], env=env)
    by_env = CliRunner().invoke(main, ["tasks"], env={**env, "DISPATCH_SERVER": url})
    for result in (by_flag, by_env):
        assert result.exit_code == ExitCode.UNAUTHORIZED, result.output
        assert "--token" in result.stderr and url in result.stderr
    assert not any(header and "the-owner-token" in header for header in seen), seen
    # With a token of its own, the named server gets that token (and only that one).
    given = CliRunner().invoke(main, ["tasks", "--server", url, "--token", "given"], env=env)
    assert given.exit_code == 0, given.output
    assert seen == ["Bearer given"]


def test_bad_token_and_unreachable_server_have_their_own_codes(run) -> None:  # type: ignore[no-untyped-def]
    bad = run("tasks", DISPATCH_TOKEN="nope")
    assert bad.exit_code == 4 and "pair this device" in bad.stderr
    gone = run("tasks", DISPATCH_SERVER="http://127.0.0.1:9")
    assert gone.exit_code == 3 and "cannot reach the controller" in gone.stderr


def test_pair_and_devices(run, live_server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    issued = json.loads(run("pair", "--json").stdout)
    assert issued["url"].endswith(issued["code"])
    # The printed URL names the configured port; this server listens on another.
    printed = urlsplit(issued["url"])
    page = httpx.get(f"{live_server.url}{printed.path}?{printed.query}")
    assert page.status_code == 200, page.text
    assert f'value="{issued["code"]}"' in page.text
    shown = run("pair")
    assert "Pairing code:" in shown.stdout and "█" in shown.stdout  # the QR code
    devices = json.loads(run("devices", "--json").stdout)
    assert devices[0]["is_owner"]
    refused = run("devices", "revoke", str(devices[0]["id"]))
    assert refused.exit_code == 1 and "owner token" in refused.stderr
