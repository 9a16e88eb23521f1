"""A real `dispatch serve` killed with SIGKILL and started again: what was delivered is not
delivered again, what was not is delivered once after the restart, and a task the crash
interrupted is announced."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from harness import receiver_fixture, write_config  # noqa: F401
from receivers import Receiver, wait_until

from controller.client import Client

REPO = Path(__file__).parents[3]


class Serve:
    """`dispatch serve` in a subprocess on a free port, its data in `workspace`."""

    def __init__(self, workspace: Path, notify: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = workspace / "data"
        self.log = workspace / "serve.log"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "DISPATCH_DATA_DIR": str(self.data_dir),
            "DISPATCH_CONFIG": str(write_config(workspace, notify)),
            "DISPATCH_PORT": str(self.port),
            "DISPATCH_SANDBOX_BACKEND": "fake",
            "XDG_CONFIG_HOME": str(workspace / "xdg-config"),
        }
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

    def outbox(self) -> list[dict[str, Any]]:
        """Straight from the database."""
        engine = sqlalchemy.create_engine(f"sqlite:///{self.data_dir / 'dispatch.db'}")
        try:
            with engine.connect() as db:
                rows = db.exec_driver_sql(
                    "SELECT event_id, attempts, sent_at FROM notifications ORDER BY id"
                )
                return [dict(row._mapping) for row in rows]
        finally:
            engine.dispose()


@pytest.fixture
def serve(workspace: Path, receiver: Receiver) -> Iterator[Serve]:
    server = Serve(workspace, f'[notify.webhook]\nurl = "{receiver.url}"\n')
    yield server
    server.stop()
    print(f"--- {server.log} ---\n{server.log.read_text()[-4000:]}")


def delivered(receiver: Receiver) -> list[tuple[int, str, int]]:
    """(event id, event, task id) of each message the receiver accepted, in order."""
    bodies = [r.json() for r in receiver.requests]
    return [(b["event_id"], b["event"], b["task"]["id"]) for b in bodies]


def test_sigkill_neither_repeats_nor_loses_a_notification(serve: Serve, receiver: Receiver) -> None:
    serve.start()
    with serve.client() as client:
        early = [client.submit(["echo", name], thread=name) for name in ("a", "b")]
        wait_until(lambda: len(receiver.requests) == 2, 15, "the first two notifications")
        # Marked sent in the database: these must never go out again.
        wait_until(lambda: all(r["sent_at"] for r in serve.outbox()), 10, "the sent marks")

        receiver.statuses = [503] * 1000  # the receiver goes down
        late = client.submit(["echo", "c"], thread="c")
        wait_until(lambda: client.task(late["id"])["status"] == "succeeded", 15, "task c")
        running = client.submit(["sleep", "60"], thread="d")
        wait_until(lambda: client.task(running["id"])["status"] == "running", 15, "running")
        wait_until(lambda: receiver.refused, 15, "a refused try")
    serve.kill()
    unsent = [r for r in serve.outbox() if not r["sent_at"]]
    assert len(unsent) == 1 and unsent[0]["attempts"] >= 1

    receiver.statuses = []  # back up
    serve.start()
    with serve.client() as client:
        wait_until(lambda: len(receiver.requests) == 4, 30, "the notifications left unsent")
        after = client.submit(["echo", "e"], thread="e")
        wait_until(lambda: len(receiver.requests) == 5, 15, "the notification after restart")

    got = delivered(receiver)
    assert Counter(event_id for event_id, _, _ in got).most_common(1)[0][1] == 1, got
    assert {(event, task) for _, event, task in got} == {
        ("task.succeeded", early[0]["id"]),
        ("task.succeeded", early[1]["id"]),
        ("task.succeeded", late["id"]),
        ("task.interrupted", running["id"]),
        ("task.succeeded", after["id"]),
    }
    assert got[:2] == delivered(receiver)[:2]  # the first two, once, before the crash
    wait_until(lambda: all(r["sent_at"] for r in serve.outbox()), 10, "every row marked sent")
