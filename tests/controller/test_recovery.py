"""Crash recovery: a real `dispatch serve` process killed with SIGKILL, then started again.

Every task that was running is `interrupted` (output kept, a reason given, not re-run), its
sandbox is removed, queued tasks continue in order, and no accepted task is lost.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest
import sqlalchemy
from conftest import TERMINAL, wait_until, write_config

from controller.client import Client

REPO = Path(__file__).parents[2]
STREAM = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.05; done"]


class ServeProcess:
    """`dispatch serve` in a subprocess, on a free port, with its own data directory."""

    def __init__(
        self, workspace: Path, backend: str, max_concurrent: int, database_url: str | None = None
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = workspace / "data"
        self.log = workspace / "serve.log"
        self.database_url = database_url or f"sqlite:///{self.data_dir / 'dispatch.db'}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "DISPATCH_DATA_DIR": str(self.data_dir),
            "DISPATCH_CONFIG": str(write_config(workspace)),
            "DISPATCH_PORT": str(self.port),
            "DISPATCH_SANDBOX_BACKEND": backend,
            "DISPATCH_MAX_CONCURRENT_TASKS": str(max_concurrent),
            "XDG_CONFIG_HOME": str(workspace / "xdg-config"),
        }
        if database_url is not None:
            self.env["DISPATCH_DATABASE_URL"] = database_url
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "controller", "serve", "--no-pair"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._healthy, 30, f"dispatch serve on {self.url} (log: {self.log})")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"dispatch serve exited: {self.log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self) -> Client:
        return Client.connect(self.url, None, {"DISPATCH_DATA_DIR": str(self.data_dir)})

    def rows(self) -> dict[int, tuple[str, int]]:
        """Straight from the database: task id -> (status, output events)."""
        engine = sqlalchemy.create_engine(self.database_url)
        try:
            with engine.connect() as db:
                statuses = dict(db.exec_driver_sql("SELECT id, status FROM tasks").all())
                counts = dict(
                    db.exec_driver_sql(
                        "SELECT task_id, count(*) FROM events "
                        "WHERE kind = 'task.output' GROUP BY task_id"
                    ).all()
                )
        finally:
            engine.dispose()
        return {i: (s, counts.get(i, 0)) for i, s in statuses.items()}


@pytest.fixture
def serve(workspace: Path) -> Iterator[Any]:
    made: list[ServeProcess] = []

    def make(
        backend: str = "fake", max_concurrent: int = 1, database_url: str | None = None
    ) -> ServeProcess:
        process = ServeProcess(workspace, backend, max_concurrent, database_url)
        made.append(process)
        process.start()
        return process

    yield make
    for process in made:
        process.stop()
        # Shown by pytest only when the test failed.
        print(f"--- {process.log} ---\n{process.log.read_text()[-4000:]}")


def finished(client: Client, task_id: int) -> dict[str, Any]:
    found: dict[str, Any] = wait_until(
        lambda: (t := client.task(task_id))["status"] in TERMINAL and t, 60, f"task {task_id}"
    )
    return found


def test_sigkill_with_tasks_running_and_queued(serve: Any) -> None:
    check_sigkill_with_tasks_running_and_queued(serve("fake", max_concurrent=1))


def check_sigkill_with_tasks_running_and_queued(server: ServeProcess) -> None:
    """Kill the controller with a task running and others queued; restart; check the outcome.

    Shared by the SQLite and PostgreSQL suites."""
    with server.client() as client:
        running = client.submit(["sleep", "60"], thread="one")
        after_running = client.submit(["echo", "one-2"], thread="one")
        queued = [client.submit(["echo", f"two-{i}"], thread="two") for i in range(3)]
        wait_until(lambda: client.task(running["id"])["status"] == "running", 10, "running")
    server.kill()
    rows = server.rows()
    assert rows[running["id"]][0] == "running"  # what a crash leaves behind
    assert {rows[t["id"]][0] for t in [after_running, *queued]} == {"queued"}

    server.start()
    with server.client() as client:
        interrupted = finished(client, running["id"])
        assert interrupted["status"] == "interrupted"
        assert f"dispatch retry {running['id']}" in interrupted["reason"]
        later = [finished(client, t["id"]) for t in [after_running, *queued]]
        assert [t["status"] for t in later] == ["succeeded"] * 4
        assert [t["output"][0]["text"] for t in later[1:]] == ["two-0\n", "two-1\n", "two-2\n"]
        starts = [t["started_at"] for t in later[1:]]
        assert starts == sorted(starts)  # thread "two" kept its order
        assert client.task(running["id"])["started_at"] == interrupted["started_at"]  # not re-run
        retried = client.retry(running["id"])
        assert retried["retry_of"] == running["id"] and retried["status"] == "queued"
        client.cancel(retried["id"])


def test_repeated_sigkill_during_submission_loses_no_accepted_task(serve: Any) -> None:
    server = serve("fake", max_concurrent=2)
    accepted: list[dict[str, Any]] = []
    for round_ in range(3):
        stop = threading.Event()
        this_round: list[dict[str, Any]] = []

        def submit_until_stopped(
            name: str, into: list[dict[str, Any]], stop: threading.Event
        ) -> None:
            with server.client() as client:
                i = 0
                while not stop.is_set():
                    try:
                        into.append(client.submit(["echo", f"{name}-{i}"], thread=name))
                    except Exception:  # the server died mid-request: not accepted
                        return
                    i += 1

        submitters = [
            threading.Thread(target=submit_until_stopped, args=(f"r{round_}t{n}", this_round, stop))
            for n in range(3)
        ]
        for thread in submitters:
            thread.start()
        wait_until(lambda r=this_round: len(r) >= 20, 20, "submissions")  # type: ignore[misc]
        server.kill()  # while tasks are being accepted, queued, run and finished
        stop.set()
        for thread in submitters:
            thread.join(10)
        accepted += this_round
        server.start()
    with server.client() as client:
        done = {t["id"]: finished(client, t["id"]) for t in accepted}
    assert len(done) == len(accepted) >= 60
    assert {t["status"] for t in done.values()} <= {"succeeded", "interrupted"}
    by_thread: dict[int, list[dict[str, Any]]] = {}
    for task in done.values():
        by_thread.setdefault(task["thread_id"], []).append(task)
    for tasks in by_thread.values():
        ran = sorted((t for t in tasks if t["status"] == "succeeded"), key=lambda t: t["id"])
        assert [t["started_at"] for t in ran] == sorted(t["started_at"] for t in ran)


def _sandbox_exists(sandbox_id: str) -> bool:
    """By the task's own container id: other controllers' tasks carry the same task ids."""
    try:
        docker.from_env().containers.get(sandbox_id)
    except docker.errors.NotFound:
        return False
    return True


@pytest.mark.docker
def test_sigkill_while_output_streams_in_docker(serve: Any) -> None:
    server = serve("docker", max_concurrent=1)
    with server.client() as client:
        streaming = client.submit(STREAM, thread="d")
        queued = client.submit(["echo", "after the crash"], thread="d")
        wait_until(
            lambda: (
                "line 5\n" in "".join(c["text"] for c in client.task(streaming["id"])["output"])
            ),
            60,
            "output to stream",
        )
        sandbox_id = client.task(streaming["id"])["sandbox_id"]
    assert sandbox_id and _sandbox_exists(sandbox_id)
    server.kill()
    kept = server.rows()[streaming["id"]][1]
    assert kept > 0  # output was persisted as it streamed

    server.start()
    with server.client() as client:
        interrupted = finished(client, streaming["id"])
        assert interrupted["status"] == "interrupted" and "retry" in interrupted["reason"]
        assert interrupted["output"][0]["text"].startswith("line 1\nline 2\n")
        assert finished(client, queued["id"])["output"] == [
            {"stream": "stdout", "text": "after the crash\n"}
        ]
    assert not _sandbox_exists(sandbox_id)  # removed at restart


def test_sigkill_with_an_approval_pending_expires_it_and_the_action_never_runs(
    serve: Any, fake_model: Any
) -> None:
    from computer_use.testing.fake_model import Reply, ToolCall

    server = serve()
    server.stop()
    server.env.update({"ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": fake_model.url})
    server.start()
    call = ToolCall(
        "memory", {"command": "create", "path": "/memories/x.md", "file_text": "x"}, toolset=None
    )
    fake_model.add(Reply(text="Writing it down.", tool_calls=[call]))
    with server.client() as client:
        body = {
            "kind": "agent",
            "prompt": "Remember x",
            "tools": ["memory"],
            "policy": {"default": "ask"},  # the task's own: even memory asks
        }
        task = client.request("POST", "/api/v1/tasks", json=body)
        wait_until(
            lambda: client.task(task["id"])["status"] == "waiting_for_approval",
            30,
            "the approval request",
        )
        [pending] = client.request("GET", "/api/v1/approvals?state=pending")
    server.kill()

    server.start()
    with server.client() as client:
        after = client.task(task["id"])
        assert after["status"] == "interrupted", after
        request = client.request("GET", f"/api/v1/approvals/{pending['id']}")
        assert request["state"] == "expired"
        late = httpx.post(
            f"{server.url}/api/v1/approvals/{pending['id']}/decision",
            json={"decision": "approve"},
            headers={"Authorization": f"Bearer {client.token}"},
        )
        assert late.status_code == 409
        assert client.request("GET", "/api/v1/memory") == []
    # The model was asked once; nothing ran the call after the restart.
    assert len(fake_model.message_requests()) == 1
