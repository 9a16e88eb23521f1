"""Faults of the machine, with the fake sandbox: an unreachable engine and a full disk.

The disk tests run the controller on a 64 MiB tmpfs of its own (`small_disk`) and fill it.
"""

from __future__ import annotations

import errno
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import (
    LOCAL_BASE_URL,
    Api,
    FakeFactory,
    LiveServer,
    fill_disk,
    test_handler,
    wait_until,
)
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

import sandbox
from controller.api.app import create_app
from controller.cli import main
from controller.errors import ConfigError
from controller.execution.disk import free_mb as disk_free_mb
from controller.execution.disk import is_disk_full
from controller.service import Controller
from controller.settings import Settings
from sandbox import SandboxSpec, Stream
from sandbox.fake import FakeSandbox

CHUNK = b"x" * (256 * 1024)


def fault_handler(
    box: FakeSandbox, command: Sequence[str], emit: Callable[[Stream, bytes], None]
) -> int:
    """`fill PATH`: write into PATH (on the host: the fake mounts nothing) until 4 MiB are left,
    then wait to be stopped;
    `gate NAME`: print 'before', wait for the test to open the gate, print 'after';
    `lose-engine`: the engine vanishes under the running command."""
    if command[0] == "fill":
        path = Path(command[1])
        with path.open("ab") as out:
            while True:
                if disk_free_mb(path.parent) > 4:
                    out.write(CHUNK)
                    out.flush()
                box.wait(0.05)
    if command[0] == "gate":
        emit(Stream.STDOUT, b"before\n")
        while not GATES[command[1]].is_set():
            box.wait(0.02)
        emit(Stream.STDOUT, b"after\n")
        return 0
    if command[0] == "lose-engine":
        emit(Stream.STDOUT, b"started\n")
        raise sandbox.EngineUnavailable("lost the Docker engine while running a command (gone)")
    return test_handler(box, command, emit)


GATES: dict[str, threading.Event] = {}


class FlakyEngine(FakeFactory):
    """Fake sandboxes whose start fails with EngineUnavailable while `down` is set."""

    def __init__(self, message: str = "cannot reach the engine (connection refused)") -> None:
        super().__init__()
        self.down = threading.Event()
        self.refused = 0
        self.message = message

    def __call__(self, backend: str, spec: SandboxSpec) -> FakeSandbox:
        box = FlakySandbox(spec, self)
        self.created.append(box)
        return box


class FlakySandbox(FakeSandbox):
    def __init__(self, spec: SandboxSpec, engine: FlakyEngine) -> None:
        super().__init__(spec, handler=fault_handler)
        self.engine = engine

    def start(self) -> None:
        if self.engine.down.is_set():
            self.engine.refused += 1
            raise sandbox.EngineUnavailable(self.engine.message)
        super().start()


@pytest.fixture
def make_app(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Api]]:
    with ExitStack() as stack:

        def make(factory: FakeFactory | None = None, **flags: Any) -> Api:
            factory = factory or FlakyEngine()
            controller = Controller(make_settings(**flags), factory=factory)
            app = create_app(controller.settings, controller=controller)
            client = stack.enter_context(
                TestClient(app, base_url=LOCAL_BASE_URL, raise_server_exceptions=False)
            )
            return Api(app, client, controller, factory)

        yield make


def states(api: Api, task_id: int) -> list[dict[str, Any]]:
    """The task's `task.state` events, oldest first."""
    rows = api.controller.events.after(0, task_id)
    return [r.data for r in rows if r.kind == "task.state"]


# --- the engine ------------------------------------------------------------------------


def test_tasks_wait_in_order_for_an_unreachable_engine_then_run(
    make_app: Callable[..., Api],
) -> None:
    engine = FlakyEngine()
    engine.down.set()
    api = make_app(engine)
    first = api.submit(["echo", "one"], thread="t")
    second = api.submit(["echo", "two"], thread="t")
    other = api.submit(["echo", "three"], thread="u")
    # Tried, put back, tried again after a longer pause: never failed. Read from the task's
    # events, not its current reason, which a slow poll on a busy machine can miss.
    wait_until(
        lambda: any("retrying in 2 s" in (s["reason"] or "") for s in states(api, first["id"])),
        60,
        "a second attempt to start a sandbox",
    )
    waiting = wait_until(
        lambda: (t := api.task(first["id"]))["status"] == "queued" and t, 10, "queued again"
    )
    assert waiting["status"] == "queued", waiting
    assert waiting["reason"].startswith("waiting for the fake engine: cannot reach the engine")
    assert "retrying in" in waiting["reason"]
    pauses = [s["reason"] for s in states(api, first["id"]) if s["reason"]]
    assert any("retrying in 1 s" in r for r in pauses) and any(
        "retrying in 2 s" in r for r in pauses
    )
    assert all(api.task(t["id"])["status"] == "queued" for t in (second, other))

    engine.down.clear()
    done = [api.wait_task(t["id"], timeout_s=60) for t in (first, second, other)]
    assert [t["status"] for t in done] == ["succeeded"] * 3
    assert [t["reason"] for t in done] == [None] * 3  # the waiting reason is gone
    assert done[0]["started_at"] <= done[1]["started_at"]  # thread t kept its order
    assert done[0]["output"] == [{"stream": "stdout", "text": "one\n"}]


def test_submit_wait_says_why_a_task_waits_for_the_engine(
    make_settings: Callable[..., Settings],
) -> None:
    # The reason carries the engine's own words, so terminal escapes in it must stay inert.
    engine = FlakyEngine("cannot reach the engine \x1b[2J(connection refused)")
    engine.down.set()
    server = LiveServer(make_settings(), engine)
    server.start()
    try:
        env = {"DISPATCH_SERVER": server.url, "DISPATCH_TOKEN": server.token}
        outcome: list[Result] = []
        waiter = threading.Thread(
            target=lambda: outcome.append(
                CliRunner().invoke(main, ["submit", "--wait", "--", "echo", "one"], env=env)
            )
        )
        waiter.start()
        wait_until(lambda: engine.refused >= 2, 60, "two attempts to start a sandbox")
        engine.down.clear()
        waiter.join(60)
    finally:
        server.stop()
    result = outcome[0]
    assert (result.exit_code, result.stdout) == (0, "one\n"), result.stderr
    assert "waiting for the fake engine: cannot reach the engine" in result.stderr
    assert "retrying in" in result.stderr
    assert "\x1b" not in result.stderr and "\\x1b[2J" in result.stderr


def test_a_task_whose_engine_vanishes_mid_run_fails_and_its_thread_continues(
    make_app: Callable[..., Api],
) -> None:
    api = make_app()
    lost = api.submit(["lose-engine"], thread="t")
    after = api.submit(["echo", "next"], thread="t")
    failed = api.wait_task(lost["id"])
    assert failed["status"] == "failed"
    assert failed["reason"] == (
        "the sandbox failed: lost the Docker engine while running a command (gone)"
    )
    assert api.wait_task(after["id"])["status"] == "succeeded"


def test_a_cancelled_task_waiting_for_the_engine_is_not_queued_again(
    make_app: Callable[..., Api],
) -> None:
    engine = FlakyEngine()
    engine.down.set()
    api = make_app(engine)
    task = api.submit(["echo", "one"])
    wait_until(lambda: api.task(task["id"])["reason"], 30, "the waiting reason")
    response = api.post(f"/api/v1/tasks/{task['id']}/cancel")
    assert response.json()["status"] == "cancelled", response.text
    engine.down.clear()
    follow = api.submit(["echo", "two"])
    assert api.wait_task(follow["id"], timeout_s=60)["status"] == "succeeded"
    assert api.task(task["id"])["status"] == "cancelled"


# --- the disk --------------------------------------------------------------------------


@pytest.mark.slow
def test_below_the_floor_submissions_get_507_tasks_wait_and_resume_when_space_returns(
    small_disk: Path, make_app: Callable[..., Api]
) -> None:
    api = make_app(min_free_mb=16)
    app_dir = small_disk / "projects" / "app"
    rw = [{"path": str(app_dir), "mode": "rw"}]
    writer = api.submit(["fill", str(app_dir / "big")], folders=rw, thread="w")
    after_writer = api.submit(["echo", "after"], thread="w")

    stopped = api.wait_task(writer["id"], timeout_s=60)
    assert stopped["status"] == "failed" and stopped["outcome"] == "stopped"
    assert stopped["reason"].startswith(f"stopped: disk nearly full ({app_dir} has ")
    assert "Dispatch needs at least 16 MiB (min_free_mb)" in stopped["reason"]
    assert api.factory.created[0].spec.mounts[0].host == app_dir  # the sandbox stopped:
    assert api.factory.created[0]._stopped or not api.factory.created[0]._running

    retry = api.post(f"/api/v1/tasks/{stopped['id']}/retry")
    assert retry.status_code == 507, retry.text
    refused = api.post("/api/v1/tasks", json={"command": ["echo", "x"]})
    assert refused.status_code == 507, refused.text
    error = refused.json()["error"]
    assert error["code"] == "insufficient_storage"
    assert "Dispatch needs at least 16 MiB (min_free_mb)" in error["message"]
    assert "free some space" in error["message"]
    # Nothing starts while the data directory's disk is low (the writer's thread neither).
    wait_until(lambda: api.controller.runner.paused, 10, "the runner to pause")
    assert api.task(after_writer["id"])["status"] == "queued"
    cancelled = api.post(f"/api/v1/tasks/{after_writer['id']}/cancel")
    assert cancelled.json()["status"] == "cancelled", cancelled.text

    (app_dir / "big").unlink()
    accepted = api.submit(["echo", "space again"], thread="w")
    done = api.wait_task(accepted["id"], timeout_s=30)
    assert done["output"] == [{"stream": "stdout", "text": "space again\n"}]
    assert api.controller.runner.paused is None


def test_a_task_is_not_started_when_its_read_write_folder_is_below_the_floor(
    small_disk: Path, make_app: Callable[..., Api], tmp_path: Path
) -> None:
    api = make_app(min_free_mb=16, data_dir=tmp_path / "data")  # the data dir has space
    filler = fill_disk(small_disk / "elsewhere", leave_mb=8)
    app_dir = small_disk / "projects" / "app"
    task = api.submit(["echo", "x"], folders=[{"path": str(app_dir), "mode": "rw"}])
    done = api.wait_task(task["id"])
    assert done["status"] == "failed"
    assert done["reason"].startswith(f"stopped: disk nearly full ({app_dir} has ")
    assert api.factory.created[0].commands == []  # its command never ran
    filler.unlink()
    again = api.post(f"/api/v1/tasks/{task['id']}/retry").json()
    assert api.wait_task(again["id"])["status"] == "succeeded"


@pytest.mark.slow
def test_a_full_database_disk_answers_507_and_a_task_end_is_stored_once_space_returns(
    small_disk: Path, make_app: Callable[..., Api]
) -> None:
    api = make_app(min_free_mb=0)  # no floor: the database itself runs out of space
    GATES["full"] = threading.Event()
    task = api.submit(["gate", "full"], thread="a")
    running = api.submit(["sleep", "600"], thread="b")
    wait_until(lambda: api.task(task["id"])["output"], 10, "the first output")
    wait_until(lambda: api.task(running["id"])["status"] == "running", 10, "task b to run")

    filler = fill_disk(small_disk / "elsewhere")
    refused = api.post("/api/v1/tasks", json={"command": ["echo", "x"]})
    assert refused.status_code == 507, refused.text
    assert refused.json()["error"]["code"] == "insufficient_storage"
    assert "the database's disk is full" in refused.json()["error"]["message"]

    GATES["full"].set()  # the task ends while nothing can be written
    wait_until(lambda: api.controller.runner.unstored(task["id"]), 10, "a refused end")
    assert api.task(task["id"])["status"] == "running"
    # Cancel still kills a running task, though the database cannot take the request.
    cancel = api.post(f"/api/v1/tasks/{running['id']}/cancel")
    assert cancel.status_code == 507, cancel.text
    assert "was stopped and its sandbox removed" in cancel.json()["error"]["message"]
    killed = next(b for b in api.factory.created if b.commands == [["sleep", "600"]])
    assert killed._stopped

    filler.unlink()
    done = api.wait_task(task["id"], timeout_s=30)
    assert done["status"] == "succeeded"
    assert done["reason"] == "6 characters of its output were lost: the disk was full"
    assert done["output"] == [{"stream": "stdout", "text": "before\n"}]
    assert api.wait_task(running["id"], timeout_s=30)["status"] == "cancelled"
    assert api.submit(["echo", "again"])["status"] == "queued"


@pytest.mark.slow
def test_reads_keep_working_while_the_database_disk_is_full(
    small_disk: Path, make_app: Callable[..., Api], caplog: pytest.LogCaptureFixture
) -> None:
    api = make_app(min_free_mb=0)  # no floor: the database itself runs out of space
    task = api.submit(["echo", "hello"])
    api.wait_task(task["id"])
    code = api.post("/api/v1/pairing-codes").json()["code"]
    paired = api.client.post("/api/v1/pair", json={"code": code, "device_name": "phone"}).json()
    phone = {"Authorization": f"Bearer {paired['token']}"}

    filler = fill_disk(small_disk / "elsewhere")
    try:
        # The phone's first request would record when it was last seen: a write, which fails.
        response = api.client.get(f"/api/v1/tasks/{task['id']}", headers=phone)
        assert response.status_code == 200, response.text
        assert response.json()["output"] == [{"stream": "stdout", "text": "hello\n"}]
        assert "could not record that device" in caplog.text
        refused = api.client.post("/api/v1/threads", json={"name": "x"}, headers=phone)
        assert refused.status_code == 507, refused.text
    finally:
        filler.unlink()


def test_is_disk_full_recognises_the_drivers_errors() -> None:

    full = sqlite3.OperationalError("database or disk is full")
    assert is_disk_full(OperationalError("INSERT", {}, full))
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_disk_full(OperationalError("INSERT", {}, sqlite3.OperationalError("locked")))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))


def test_min_free_mb_is_a_setting_with_a_checked_range(
    make_settings: Callable[..., Settings],
) -> None:
    assert make_settings().min_free_mb == 512
    assert make_settings(min_free_mb="0").min_free_mb == 0
    with pytest.raises(ConfigError, match=r"min_free_mb \(from --min-free-mb\) = -1 must be"):
        make_settings(min_free_mb="-1")
