"""How fast an approval request reaches the phone as a Web Push notification.

    .venv/bin/python bench/notify.py [--runs 50] [--devices 1]

Starts the controller in process (SQLite with fsync in a temporary data directory, the fake
sandbox) with one task running and `--devices` devices subscribed to Web Push at a push service
stand-in on loopback: a real HTTP server that decrypts each payload with its subscription's
private key (RFC 8291, `http_ece`), as the phone's browser would. For each run an approval
request is stored (the toolset's call, with its event and outbox rows in one transaction), and
timed until the decrypted payload naming it has reached the stand-in for every device; then it
is approved, so the task can ask again.

Printed: from the request being made, and from its transaction having committed, to the
payload's arrival (the last device's, with several), median and p95. Goal: push <= 50 ms.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from controller.service import Controller  # noqa: E402
from controller.settings import load_settings  # noqa: E402
from controller.store.approvals import NewApproval  # noqa: E402
from controller.store.models import Task, TaskStatus  # noqa: E402
from controller.store.tasks import NewTask  # noqa: E402
from sandbox import Network  # noqa: E402


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class PushStandIn:
    """A push service on loopback that decrypts what it is given, as the browser would."""

    def __init__(self, devices: int) -> None:
        self.keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(devices)]
        self.secrets = [os.urandom(16) for _ in range(devices)]
        self.arrived: dict[int, list[float]] = {}
        self.changed = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                device = int(self.path.rsplit("/", 1)[-1])
                plain = http_ece.decrypt(
                    body,
                    private_key=owner.keys[device],
                    auth_secret=owner.secrets[device],
                    version="aes128gcm",
                )
                at = time.perf_counter()
                payload = json.loads(plain)
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if payload["approval"] is None:
                    return  # the task's own notices (it is interrupted at the end)
                with owner.changed:
                    owner.arrived.setdefault(payload["approval"]["id"], []).append(at)
                    owner.changed.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def subscription(self, device: int) -> tuple[str, str, str]:
        point = (
            self.keys[device]
            .public_key()
            .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        )
        return f"{self.url}/push/{device}", b64url(point), b64url(self.secrets[device])

    def wait(self, approval_id: int, count: int) -> float:
        with self.changed:
            if not self.changed.wait_for(
                lambda: len(self.arrived.get(approval_id, ())) >= count, timeout=10
            ):
                raise SystemExit(f"approval {approval_id}'s push never arrived")
            return max(self.arrived[approval_id])


def pending_approval(task_id: int) -> NewApproval:
    """An approval request for a click, without images (the benches time its announcement)."""
    return NewApproval(
        task_id=task_id,
        tool="computer",
        member="left_click",
        input={"coordinate": [812, 430]},
        screen_input={"coordinate": [812, 430]},
        description="Click 'Send' at (812, 430)",
        model_reason="The reply is ready.",
        policy_rule=None,
        screenshot_png=None,
        annotated_png=None,
    )


def print_rows(rows: dict[str, list[float]]) -> None:
    """Each case's median and p95, in ms."""
    width = max(len(name) for name in rows) + 2
    print(f"{'case':<{width}}{'median ms':>11}{'p95 ms':>10}")
    for name, values in rows.items():
        print(
            f"{name:<{width}}{statistics.median(values) * 1000:>11.1f}{p95(values) * 1000:>10.1f}"
        )


def running_task(controller: Controller) -> Task:
    """A task that sleeps an hour, once the controller runs it (requests need a running task)."""
    task = controller.tasks.submit(
        NewTask(
            thread="bench",
            command=["sleep", "3600"],
            mounts=(),
            network=Network.NONE,
            timeout_s=3600.0,
        )
    )
    while controller.tasks.get(task.id).status is not TaskStatus.RUNNING:
        time.sleep(0.01)
    return task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dispatch-bench-notify-"))
    (root / "config.toml").write_text("[notify.webpush]\nallow_http_endpoints = true\n")
    settings = load_settings(
        {"data_dir": root / "data", "sandbox_backend": "fake", "log_level": "warning"},
        {"XDG_CONFIG_HOME": str(root / "xdg")},
        config=root / "config.toml",
    )
    stand_in = PushStandIn(args.devices)
    controller = Controller(settings)
    controller.start()
    try:
        for device in range(args.devices):
            issued = controller.auth.issue_pairing_code()
            phone, _ = controller.auth.pair(issued.code, f"phone-{device}", "127.0.0.1")
            controller.notify.store.subscribe(phone.id, *stand_in.subscription(device))
        task = running_task(controller)

        from_request, from_commit = [], []
        for _ in range(args.runs + 3):  # the first three warm up, untimed
            asked = time.perf_counter()
            approval = controller.approvals.request(pending_approval(task.id))
            committed = time.perf_counter()
            arrived = stand_in.wait(approval.id, args.devices)
            from_request.append(arrived - asked)
            from_commit.append(arrived - committed)
            controller.approvals.decide(approval.id, approve=True, device_id=None)
        rows = {
            "request -> push decrypted": from_request[3:],
            "commit -> push decrypted": from_commit[3:],
        }
        print(
            f"approval -> Web Push, {args.runs} runs, {args.devices} device(s), SQLite with "
            "fsync, push stand-in on loopback"
        )
        print_rows(rows)
    finally:
        controller.stop()
        stand_in.server.shutdown()


if __name__ == "__main__":
    main()
