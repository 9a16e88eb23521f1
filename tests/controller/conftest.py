"""Fixtures for controller tests: settings in a temp dir, the app in process, a live server,
and a throwaway PostgreSQL server (`postgres_url`: a fresh database on it).

Unit tests use the fake sandbox backend through an injected factory (its handler knows one
extra command, `stream N DELAY_S`, that prints N lines DELAY_S apart, for streaming tests).
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from postgres import PostgresCluster, start_cluster

from computer_use.testing.fake_model import FakeModel
from controller.api.app import create_app
from controller.api.edge import server_config
from controller.client import Client, Event
from controller.execution.disk import free_mb as disk_free_mb
from controller.service import Controller
from controller.settings import Settings, load_settings
from sandbox import SandboxSpec, Stream
from sandbox.fake import FakeSandbox, default_handler

TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")
# TestClient's default Host, "testserver", is refused like any other name that is not this
# controller's.
LOCAL_BASE_URL = "http://127.0.0.1"


def wait_until(
    predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition"
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def test_handler(
    box: FakeSandbox, command: Sequence[str], emit: Callable[[Stream, bytes], None]
) -> int:
    if command[0] == "stream":
        count, delay_s = int(command[1]), float(command[2])
        for i in range(count):
            emit(Stream.STDOUT, f"line {i}\n".encode())
            box.wait(delay_s)
        return 0
    return default_handler(box, command, emit)


test_handler.__test__ = False  # type: ignore[attr-defined]


class FakeFactory:
    """Creates fake sandboxes and remembers them, so tests can see they were stopped."""

    def __init__(self) -> None:
        self.created: list[FakeSandbox] = []
        self.backends: list[str] = []  # the backend each was asked for

    def __call__(self, backend: str, spec: SandboxSpec) -> FakeSandbox:
        box = FakeSandbox(spec, handler=test_handler)
        self.created.append(box)
        self.backends.append(backend)
        return box


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A temp dir outside pytest's tree holding granted folders (rw `projects`, ro `readonly`)."""
    root = Path(tempfile.mkdtemp(prefix="dispatch-ctl-"))
    (root / "projects" / "app").mkdir(parents=True)
    (root / "readonly").mkdir()
    (root / "elsewhere").mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def write_config(workspace: Path, extra: str = "") -> Path:
    # In a folder of its own: the config file's folder may be inside no grant.
    config = workspace / "conf" / "config.toml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(
        f'[[folders]]\npath = "{workspace / "projects"}"\nmode = "rw"\n\n'
        f'[[folders]]\npath = "{workspace / "readonly"}"\nmode = "ro"\n' + extra
    )
    return config


@pytest.fixture
def make_settings(workspace: Path) -> Callable[..., Settings]:
    def make(**flags: Any) -> Settings:
        flags = {"data_dir": workspace / "data", "sandbox_backend": "fake", **flags}
        environ = {"XDG_CONFIG_HOME": str(workspace / "xdg-config")}
        return load_settings(flags, environ, config=write_config(workspace))

    return make


class Api:
    """The app in process (TestClient) with the owner token."""

    def __init__(
        self, app: FastAPI, client: TestClient, controller: Controller, factory: FakeFactory
    ) -> None:
        self.app = app
        self.client = client
        self.controller = controller
        self.factory = factory
        self.token = controller.owner_token
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def submit(self, command: list[str], **body: Any) -> dict[str, Any]:
        response = self.post("/api/v1/tasks", json={"command": command, **body})
        assert response.status_code == 202, response.text
        task: dict[str, Any] = response.json()
        return task

    def task(self, task_id: int) -> dict[str, Any]:
        response = self.get(f"/api/v1/tasks/{task_id}")
        assert response.status_code == 200, response.text
        task: dict[str, Any] = response.json()
        return task

    def wait_task(
        self, task_id: int, statuses: Sequence[str] = TERMINAL, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            seen.update(self.task(task_id))
            return seen if seen["status"] in statuses else None

        try:
            found: dict[str, Any] = wait_until(
                reached, timeout_s, f"task {task_id} to be {'/'.join(statuses)}"
            )
        except pytest.fail.Exception:
            print(f"task {task_id} when the wait ended: {seen.get('status')}: {seen.get('reason')}")
            raise
        return found


@pytest.fixture
def make_api(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Api]]:
    with ExitStack() as stack:

        def make(real_sandbox: bool = False, **flags: Any) -> Api:
            """The app with the fake sandbox, or with `real_sandbox` the configured backend."""
            factory = FakeFactory()
            settings = make_settings(**flags)
            if real_sandbox:
                controller = Controller(settings)
            else:
                controller = Controller(settings, factory=factory)
            app = create_app(controller.settings, controller=controller)
            client = stack.enter_context(
                TestClient(app, base_url=LOCAL_BASE_URL, raise_server_exceptions=False)
            )
            return Api(app, client, controller, factory)

        yield make


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


class LiveServer:
    """The app on a real loopback port, served by uvicorn in a thread."""

    def __init__(self, settings: Settings, factory: FakeFactory) -> None:
        self.factory = factory
        self.controller = Controller(settings, factory=factory)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # As `dispatch serve` configures it: the edge limits, no proxy headers unless trusted.
        config = server_config(
            create_app(settings, controller=self.controller),
            settings,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self._sock = sock
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]})

    def start(self) -> None:
        self.thread.start()
        wait_until(lambda: self.server.started, 20, "the live server to start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        self._sock.close()

    @property
    def token(self) -> str:
        return self.controller.owner_token

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_live_server(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def make(**flags: Any) -> LiveServer:
        server = LiveServer(make_settings(**flags), FakeFactory())
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def live_server(make_live_server: Callable[..., LiveServer]) -> LiveServer:
    return make_live_server()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL server for this test session; fails (not skips) when it is not installed."""
    cluster = start_cluster()
    print(f"PostgreSQL cluster {cluster.root} on port {cluster.port}")
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server."""
    url = postgres_cluster.create_database()
    yield url
    # Shown by pytest only when the test failed.
    print(f"database {url}; server log:\n{postgres_cluster.log_tail(2000)}")


def take(events: Iterator[Event], count: int) -> list[Event]:
    """The next `count` events of a stream (fewer if it ends)."""
    taken: list[Event] = []
    for event in events:
        taken.append(event)
        if len(taken) == count:
            break
    return taken


def reconnect_until_caught_up(
    client: Client, server: LiveServer, tasks: Sequence[dict[str, Any]], every: int
) -> list[int]:
    """Read /api/v1/events in short connections, each resuming after the last id seen, while the
    tasks still write events; returns every id received, in order."""
    start = 0
    collected: list[int] = []
    while True:
        done = all(client.task(t["id"])["status"] in TERMINAL for t in tasks)
        newest = server.controller.events.last_id()
        if done and start == newest:
            return collected
        batch = take(client.events(after=start, reconnect=False), min(every, newest - start) or 1)
        collected += [e.id for e in batch]
        start = collected[-1]


@pytest.fixture
def small_disk(workspace: Path) -> Iterator[Path]:
    """`workspace` on a 64 MiB tmpfs of its own (data dir, config and granted folders), so a
    test can fill it; unmounted at the end. Needs root (CI runs the suite as root)."""
    if os.geteuid() != 0:
        pytest.fail("the full-disk tests mount a tmpfs and must run as root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(workspace)], check=True)
    try:
        (workspace / "projects" / "app").mkdir(parents=True)
        (workspace / "readonly").mkdir()
        (workspace / "elsewhere").mkdir()
        yield workspace
    finally:
        # Lazily: a server still holding the database open must not keep the mount.
        subprocess.run(["umount", "-l", str(workspace)], check=False)


def fill_disk(folder: Path, leave_mb: float = 0.0) -> Path:
    """A file in `folder` filling its filesystem until `leave_mb` MiB are left (0: full)."""
    filler = folder / "filler"
    chunk = b"\0" * (256 * 1024)
    with filler.open("wb", buffering=0) as out:
        try:
            while disk_free_mb(folder) > leave_mb + 0.25:
                out.write(chunk)
                out.flush()
            if leave_mb == 0:
                while True:  # the last bytes, down to the last block
                    out.write(b"\0" * 4096)
                    out.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


# --- agent tasks: the scripted fake Messages API and an app that reaches it -------------------


@pytest.fixture
def make_agent_api(
    make_settings: Callable[..., Settings], fake_model: FakeModel
) -> Iterator[Callable[..., Api]]:
    with ExitStack() as stack:

        def make(real_sandbox: bool = False, key: str | None = "test-key", **flags: Any) -> Api:
            settings = replace(
                make_settings(**flags),
                anthropic_api_key=key,
                anthropic_base_url=fake_model.url,
            )
            factory = FakeFactory()
            controller = (
                Controller(settings) if real_sandbox else Controller(settings, factory=factory)
            )
            app = create_app(settings, controller=controller)
            client = stack.enter_context(
                TestClient(app, base_url=LOCAL_BASE_URL, raise_server_exceptions=False)
            )
            return Api(app, client, controller, factory)

        yield make
