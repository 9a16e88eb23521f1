"""How fast an approval request reaches a person, and a decision reaches the action.

    .venv/bin/python bench/approval.py [--runs 30]

Starts the controller in process on a loopback port (SQLite with fsync in a temporary data
directory, the fake sandbox), with one task running, and for each run:

1. the toolset asks: the `Confirmer` (the toolsets' confirm hook) is called for a click, with a
   1280x800 screenshot to encode and annotate, the policy says `ask`, the request is stored;
   measured until it is visible to a device polling `GET /api/v1/approvals?state=pending`
   (every 2 ms) and until an `approval.requested` event arrives on `/api/v1/events`; a request
   is announced while its two images are encoded and stored, so the device then fetches the
   screenshot (`GET /api/v1/approvals/{id}/annotated`, which waits for it): measured too;
2. a device posts the decision; measured until the confirm hook returns True (the action would
   start).

The server listens as `dispatch serve` does (its socket and uvicorn configuration); the clients
keep their connections alive with Nagle off, as a browser does. Each run's screen differs, so
its images are really written (a repeated image would be found already stored). The ask is
also split where it goes: making the request's images, storing it (images, then the
transaction), and from the commit to the SSE client. The baseline is a plain `GET /healthz`
round trip on the same connection.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import uvicorn
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from computer_use.approval.gate import ApprovalOutcome, ApprovalRequest, Confirmer  # noqa: E402
from computer_use.approval.policy import Decision, Policy  # noqa: E402
from controller.agent.runner import FolderPolicy, StoreGate  # noqa: E402
from controller.api.app import create_app  # noqa: E402
from controller.api.edge import server_config  # noqa: E402
from controller.cli.server import _bind  # noqa: E402
from controller.service import Controller  # noqa: E402
from controller.settings import load_settings  # noqa: E402
from controller.store.approvals import NewApproval  # noqa: E402
from controller.store.models import Approval  # noqa: E402

# As a browser does: without it, a request whose headers and body go out in two writes waits
# for the server's delayed ACK (40 ms on Linux).
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def screen(run: int = 0) -> Image.Image:
    image = Image.new("RGB", (1280, 800), "#f4f4f4")
    draw = ImageDraw.Draw(image)
    for row in range(0, 800, 24):
        draw.text((20, row), f"Quarterly report - row {row} - lorem ipsum dolor sit amet", "#222")
    draw.text((1000, 40), f"run {run}", "#222")
    draw.rectangle((1000, 700, 1200, 760), fill="#3060c0")
    return image


class TimedGate(StoreGate):
    """The controller's gate, noting when the request reached it (its images encoding)."""

    made: float = 0.0

    def request(self, req: ApprovalRequest) -> ApprovalOutcome:
        self.made = time.perf_counter()
        return super().request(req)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dispatch-bench-approval-"))
    (root / "config.toml").write_text("")
    settings = load_settings(
        {"data_dir": root / "data", "sandbox_backend": "fake", "log_level": "warning"},
        {"XDG_CONFIG_HOME": str(root / "xdg")},
        config=root / "config.toml",
    )
    settings = replace(settings, approval_timeout_s=600.0, port=0)
    controller = Controller(settings)
    committed: dict[int, float] = {}
    store_request = controller.approvals.request

    def timed_request(new: NewApproval, now: float | None = None) -> Approval:
        approval = store_request(new, now)
        committed[approval.id] = time.perf_counter()
        return approval

    controller.approvals.request = timed_request  # type: ignore[method-assign]
    sock = _bind(settings)
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(create_app(settings, controller=controller), settings))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {controller.owner_token}"}
    http = httpx.Client(
        base_url=url, headers=headers, transport=httpx.HTTPTransport(socket_options=NODELAY)
    )
    task = http.post("/api/v1/tasks", json={"command": ["sleep", "3600"]}).json()
    while http.get(f"/api/v1/tasks/{task['id']}").json()["status"] != "running":
        time.sleep(0.01)

    images = [screen()]
    policy = FolderPolicy(Policy(default=Decision.ASK), ())
    gate = TimedGate(controller.approvals, cancelled=lambda: False)
    confirm = Confirmer(
        task_id=task["id"], tool="computer", policy=policy, gate=gate, capture=lambda: images[-1]
    )

    sse_seen: dict[int, float] = {}

    def listen() -> None:
        events = httpx.Client(
            headers=headers, transport=httpx.HTTPTransport(socket_options=NODELAY)
        )
        with events.stream("GET", f"{url}/api/v1/events", timeout=None) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    if event["kind"] == "approval.requested":
                        sse_seen[event["data"]["approval_id"]] = time.perf_counter()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(0.5)

    baseline, visible_api, visible_sse, decided = [], [], [], []
    making, storing, fanning, imaged = [], [], [], []
    for run in range(args.runs + 2):  # the first two warm up, untimed
        images.append(screen(run))
        started = time.perf_counter()
        http.get("/healthz")
        baseline.append(time.perf_counter() - started)
        returned: list[float] = []

        def ask(done: list[float] = returned) -> None:
            confirm.check("computer", "left_click", {"coordinate": [1100, 730]})
            done.append(time.perf_counter())

        asked = time.perf_counter()
        asker = threading.Thread(target=ask)
        asker.start()
        while True:
            pending = http.get("/api/v1/approvals?state=pending").json()
            if pending:
                break
            time.sleep(0.002)
        seen_api = time.perf_counter()
        approval_id = pending[0]["id"]
        while approval_id not in sse_seen:
            time.sleep(0.001)
        shown = http.get(f"/api/v1/approvals/{approval_id}/annotated")
        assert shown.status_code == 200 and shown.content.startswith(b"\x89PNG"), shown
        seen_image = time.perf_counter()
        posted = time.perf_counter()
        http.post(f"/api/v1/approvals/{approval_id}/decision", json={"decision": "approve"})
        asker.join()
        visible_api.append(seen_api - asked)
        visible_sse.append(sse_seen[approval_id] - asked)
        imaged.append(seen_image - asked)
        decided.append(returned[0] - posted)
        making.append(gate.made - asked)
        storing.append(committed[approval_id] - gate.made)
        fanning.append(sse_seen[approval_id] - committed[approval_id])
    rows = {
        "baseline GET /healthz": baseline[2:],
        "ask -> visible (API poll)": visible_api[2:],
        "ask -> visible (SSE)": visible_sse[2:],
        "  policy, capture -> gate": making[2:],
        "  gate -> committed": storing[2:],
        "  commit -> SSE client": fanning[2:],
        "ask -> annotated image served": imaged[2:],
        "decision -> action starts": decided[2:],
    }
    print(f"approval round trip, {args.runs} runs, 1280x800 screenshot, SQLite with fsync")
    print(f"{'case':<28}{'median ms':>11}{'p95 ms':>10}")
    for name, values in rows.items():
        print(f"{name:<28}{statistics.median(values) * 1000:>11.1f}{p95(values) * 1000:>10.1f}")
    http.post(f"/api/v1/tasks/{task['id']}/cancel")
    controller.events.close()  # ends the event stream, so the server stops at once
    listener.join(10)
    server.should_exit = True
    thread.join(30)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
