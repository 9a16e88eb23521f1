"""Review: the connection cap is one pool for everybody, so one client without a token can keep
the owner out for as long as it likes, by opening a new connection whenever one is closed.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import httpx
from conftest import LiveServer

FLOOD_S = 8.0


def test_review_a_reconnecting_flood_without_a_token_does_not_lock_the_owner_out(
    make_live_server: Callable[..., LiveServer],
) -> None:
    server = make_live_server(max_connections=5, header_timeout_s=1.0)
    stop = threading.Event()

    def hold_a_slot() -> None:
        while not stop.is_set():
            try:
                # Another address than the owner's: per-address accounting cannot tell two
                # clients at one address apart (adjusted by the fix; 127.0.0.2 is on loopback).
                sock = socket.create_connection(
                    ("127.0.0.1", server.port), timeout=30, source_address=("127.0.0.2", 0)
                )
            except OSError:
                continue
            try:
                sock.recv(1)  # until the server closes it (header deadline or 503)
            except OSError:
                pass
            finally:
                sock.close()

    flood = [threading.Thread(target=hold_a_slot, daemon=True) for _ in range(20)]
    for thread in flood:
        thread.start()
    statuses = []
    try:
        time.sleep(1.0)  # let the flood take the slots (no assertion on timing below)
        deadline = time.monotonic() + FLOOD_S
        while time.monotonic() < deadline:
            try:
                response = httpx.get(
                    f"{server.url}/api/v1/tasks", headers=server.headers, timeout=30
                )
                statuses.append(response.status_code)
            except httpx.HTTPError as exc:
                statuses.append(type(exc).__name__)
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in flood:
            thread.join(timeout=60)
    assert 200 in statuses, statuses


def test_review_a_request_begun_before_revocation_does_not_act_after_it(
    make_live_server: Callable[..., LiveServer],
) -> None:
    server = make_live_server(body_timeout_s=60.0)
    owner = httpx.Client(base_url=server.url, headers=server.headers, timeout=30)
    code = owner.post("/api/v1/pairing-codes").json()["code"]
    paired = owner.post("/api/v1/pair", json={"code": code, "device_name": "stolen"}).json()
    thread = owner.post("/api/v1/threads", json={"name": "review"}).json()
    body = b'{"text": "posted after the revocation"}'
    head = (
        f"POST /api/v1/threads/{thread['id']}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {paired['token']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + body[:5])  # the token is checked now, the body still owed
        time.sleep(1.0)
        assert owner.delete(f"/api/v1/devices/{paired['device_id']}").status_code == 200
        sock.sendall(body[5:])
        answer = sock.recv(65536).split(b"\r\n", 1)[0]
    history = owner.get(f"/api/v1/threads/{thread['id']}").json()["history"]
    assert not history, (answer, history)
