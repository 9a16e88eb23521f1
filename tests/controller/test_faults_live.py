"""Faults of the machine against a real `dispatch serve` and the real Docker engine.

A full disk: the controller's data directory and the granted folder sit on a 64 MiB tmpfs that
a task fills. An unreachable engine: the controller's DOCKER_HOST is a socket of the test's
own, forwarded to the real engine only while the test says so (the shared engine itself is
never stopped: other suites use it).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from conftest import wait_until
from test_recovery import ServeProcess, finished

from controller.client import ClientError
from controller.execution.disk import free_mb as disk_free_mb

pytestmark = [pytest.mark.docker, pytest.mark.slow]
OWNER = (4321, 4321)  # the sandbox runs as the owner of its read-write folders; never root
ENGINE_SOCKET = "/var/run/docker.sock"


def fill(parts: int) -> list[str]:
    """A command writing `parts` files of 1 MiB, one every 0.25 s, then waiting: it takes the
    disk below the floor and (under any load) never quite fills it."""
    return [
        "sh",
        "-c",
        f"echo writing; i=0; while [ $i -lt {parts} ]; do head -c 1048576 /dev/zero > part$i; "
        "i=$((i+1)); sleep 0.25; done; sleep 600",
    ]


@pytest.fixture
def serve(workspace: Path) -> Iterator[Any]:
    made: list[ServeProcess] = []

    def make(**env: str) -> ServeProcess:
        process = ServeProcess(workspace, "docker", 1)
        process.env.update(env)
        made.append(process)
        process.start()
        return process

    yield make
    for process in made:
        process.stop()
        print(f"--- {process.log} ---\n{process.log.read_text()[-4000:]}")


def remove_container(sandbox_id: str | None) -> None:
    if sandbox_id:
        with contextlib.suppress(docker.errors.NotFound):
            docker.from_env().containers.get(sandbox_id).remove(force=True)


def test_a_full_disk_stops_the_writer_refuses_work_and_everything_resumes(
    small_disk: Path, serve: Any
) -> None:
    app = small_disk / "projects" / "app"
    for folder in (small_disk / "projects", app):
        os.chown(folder, *OWNER)
    server = serve(DISPATCH_MIN_FREE_MB="16")
    with server.client() as client:
        parts = int(disk_free_mb(app)) - 6  # 6 MiB left: below the floor, not full
        writer = client.submit(fill(parts), thread="w", folders=[(str(app), "rw")])
        after = client.submit(["echo", "after the writer"], thread="w")
        to_cancel = client.submit(["echo", "never"], thread="w")

        stopped = finished(client, writer["id"])
        assert (stopped["status"], stopped["outcome"]) == ("failed", "stopped"), stopped
        assert stopped["reason"].startswith(f"stopped: disk nearly full ({app} has ")
        assert "Dispatch needs at least 16 MiB (min_free_mb)" in stopped["reason"]
        assert stopped["output"][0]["text"] == "writing\n"
        with pytest.raises(docker.errors.NotFound):  # its sandbox is gone
            docker.from_env().containers.get(stopped["sandbox_id"])
        written = sorted(app.glob("part*"))
        assert len(written) >= parts - 16  # it did fill the disk

        with pytest.raises(ClientError) as refused:
            client.submit(["echo", "refused"])
        assert refused.value.status == 507 and refused.value.code == "insufficient_storage"
        assert "the data directory's disk is nearly full" in str(refused.value)
        assert "Dispatch needs at least 16 MiB (min_free_mb); free some space" in str(refused.value)
        # The writer's thread goes on only once there is space again.
        assert client.task(after["id"])["status"] == "queued"
        assert client.cancel(to_cancel["id"])["status"] == "cancelled"

        for part in written:
            part.unlink()
        resumed = finished(client, after["id"])
        assert resumed["output"] == [{"stream": "stdout", "text": "after the writer\n"}]
        accepted = client.submit(["echo", "space again"])
        assert finished(client, accepted["id"])["status"] == "succeeded"
    assert server.process is not None and server.process.poll() is None  # never restarted


class EngineProxy:
    """A unix socket that forwards to the real engine while started; stopped, it is gone and
    every connection through it is cut, as when the engine dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.path.unlink(missing_ok=True)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(ENGINE_SOCKET)
            with self._lock:
                self._connections += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@pytest.fixture
def engine(workspace: Path) -> Iterator[EngineProxy]:
    proxy = EngineProxy(workspace / "engine.sock")
    yield proxy
    proxy.stop()


def test_tasks_wait_for_an_unreachable_engine_and_a_lost_engine_fails_only_its_task(
    engine: EngineProxy, serve: Any
) -> None:
    server = serve(DOCKER_HOST=f"unix://{engine.path}")  # nothing listens there yet
    leaked: str | None = None
    try:
        with server.client() as client:
            first = client.submit(["echo", "hello"], thread="e")
            waiting = wait_until(
                lambda: (t := client.task(first["id"]))["reason"] and t, 60, "a waiting reason"
            )
            assert waiting["status"] == "queued"
            assert waiting["reason"].startswith("waiting for the Docker engine: ")
            assert str(engine.path) in waiting["reason"] and "retrying in" in waiting["reason"]

            engine.start()  # the engine comes back
            done = finished(client, first["id"])
            assert (done["status"], done["reason"]) == ("succeeded", None)
            assert done["output"] == [{"stream": "stdout", "text": "hello\n"}]

            running = client.submit(["sh", "-c", "echo started; sleep 600"], thread="e")
            after = client.submit(["echo", "next"], thread="e")
            wait_until(lambda: client.task(running["id"])["output"], 60, "the task to start")
            leaked = client.task(running["id"])["sandbox_id"]
            engine.stop()  # the engine vanishes mid-run

            lost = finished(client, running["id"])
            assert lost["status"] == "failed", lost
            assert lost["reason"].startswith("the sandbox failed: "), lost
            # The thread goes on: its next task waits for the engine, then runs.
            wait_until(
                lambda: (
                    "waiting for the Docker engine" in (client.task(after["id"])["reason"] or "")
                ),
                60,
                "the next task to wait for the engine",
            )
            engine.start()
            resumed = finished(client, after["id"])
            assert resumed["output"] == [{"stream": "stdout", "text": "next\n"}]
    finally:
        remove_container(leaked)  # its removal failed while the engine was gone
