"""How fast an approval request reaches the phone: as a Web Push payload, and as the card on
the console's approvals page in Chromium.

    .venv/bin/python bench/console.py [--runs 50]

Starts the controller in process (SQLite with fsync in a temporary data directory, the fake
sandbox) served by uvicorn on loopback, with one task running, one device subscribed to Web Push
at `bench/notify.py`'s push stand-in (a real HTTP server that decrypts each payload, RFC 8291,
as the phone's browser would), and Chromium (Debian's, through Playwright, at a phone's viewport)
paired as another device with its approvals page open and its event stream connected. For each
run an approval request is stored (the toolset's call: its row, event and outbox rows in one
transaction) and timed until (a) the decrypted payload naming it reached the stand-in and (b)
its card was inserted into the page's inbox (a MutationObserver stamps it with the page's clock,
which is calibrated against this process's at the start); then it is approved, so the task can
ask again.

Printed: median and p95 of each. Goals on loopback: push <= 50 ms, card <= 150 ms.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import uvicorn  # noqa: E402

from bench.notify import PushStandIn, pending_approval, print_rows, running_task  # noqa: E402
from controller.api.app import create_app  # noqa: E402
from controller.api.edge import server_config  # noqa: E402
from controller.service import Controller  # noqa: E402
from controller.settings import load_settings  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
PHONE = {"width": 390, "height": 844}
# Stamps each approval card with the page's wall clock (ms) when it enters the inbox.
OBSERVE = """() => {
  window.cardSeen = {};
  const inbox = document.getElementById("inbox");
  new MutationObserver(() => {
    const now = performance.timeOrigin + performance.now();
    for (const card of inbox.querySelectorAll("section.approval")) {
      const id = card.dataset.approvalId;
      if (!(id in window.cardSeen)) window.cardSeen[id] = now;
    }
  }).observe(inbox, { childList: true, subtree: true });
}"""


def serve(controller: Controller) -> tuple[uvicorn.Server, str]:
    """The console and API on a loopback port, served as `dispatch serve` serves them."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = controller.settings
    config = server_config(
        create_app(settings, controller=controller), settings, log_level="warning"
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise SystemExit("the console's server did not start in 20 s")
        time.sleep(0.01)
    return server, f"http://127.0.0.1:{port}"


def clock_offset_s(page: Any) -> float:
    """The page's wall clock minus ours, from the tightest of 20 round trips."""
    samples = []
    for _ in range(20):
        before = time.time()
        theirs = page.evaluate("performance.timeOrigin + performance.now()") / 1000
        after = time.time()
        samples.append((after - before, theirs - (before + after) / 2))
    return min(samples)[1]


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dispatch-bench-console-"))
    (root / "config.toml").write_text("[notify.webpush]\nallow_http_endpoints = true\n")
    settings = load_settings(
        {"data_dir": root / "data", "sandbox_backend": "fake", "log_level": "warning"},
        {"XDG_CONFIG_HOME": str(root / "xdg")},
        config=root / "config.toml",
    )
    stand_in = PushStandIn(1)
    controller = Controller(settings)
    controller.start()
    server, url = serve(controller)
    try:
        issued = controller.auth.issue_pairing_code()
        subscriber, _ = controller.auth.pair(issued.code, "phone-push", "127.0.0.1")
        controller.notify.store.subscribe(subscriber.id, *stand_in.subscription(0))
        task = running_task(controller)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
            context = browser.new_context(viewport=PHONE, is_mobile=True)
            page = context.new_page()
            page.goto(f"{url}/pair?code={controller.auth.issue_pairing_code().code}")
            page.fill("input[name=device_name]", "phone-console")
            page.click("button[type=submit]")
            page.wait_for_url(f"{url}/")
            page.goto(f"{url}/approvals")
            page.wait_for_selector("#live.on")
            page.evaluate(OBSERVE)
            offset = clock_offset_s(page)

            to_push, to_card = [], []
            for _ in range(args.runs + 3):  # the first three warm up, untimed
                asked_wall, asked = time.time(), time.perf_counter()
                made = controller.approvals.request(pending_approval(task.id))
                to_push.append(stand_in.wait(made.id, 1) - asked)
                seen = page.wait_for_function(
                    "(id) => window.cardSeen[id]", arg=made.id, timeout=10_000
                ).json_value()
                to_card.append(seen / 1000 - offset - asked_wall)
                controller.approvals.decide(made.id, approve=True, device_id=None)
            browser.close()
        rows = {
            "request -> push decrypted": to_push[3:],
            "request -> card in Chromium": to_card[3:],
        }
        print(
            f"approval -> phone, {args.runs} runs, SQLite with fsync, loopback: a Web Push "
            "stand-in, and Chromium's approvals page (SSE, then the card's fragment)"
        )
        print_rows(rows)
    finally:
        server.should_exit = True
        controller.stop()
        stand_in.server.shutdown()


if __name__ == "__main__":
    main()
