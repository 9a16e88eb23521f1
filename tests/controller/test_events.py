"""Server-Sent Events over a real loopback connection: order, live delivery, resumption."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from conftest import TERMINAL, Api, LiveServer, reconnect_until_caught_up, take, wait_until

from controller.api.routes import _resume_point
from controller.client import Client, Event, parse_sse
from controller.errors import BadRequest


def until_finished(events: Iterator[Event]) -> list[Event]:
    taken: list[Event] = []
    for event in events:
        taken.append(event)
        if event.kind == "task.state" and event.data["data"]["status"] in TERMINAL:
            break
    return taken


def test_a_task_stream_replays_its_history_then_goes_live(live_server: LiveServer) -> None:
    with Client(live_server.url, live_server.token) as client:
        task = client.submit(["stream", "3", "0.1"])
        events = until_finished(client.events(task_id=task["id"], after=0))
    states = [e.data["data"]["status"] for e in events if e.kind == "task.state"]
    assert states == ["queued", "running", "succeeded"]
    output = "".join(e.data["data"]["text"] for e in events if e.kind == "task.output")
    assert output == "line 0\nline 1\nline 2\n"
    assert [e.kind for e in events][2] == "task.output"  # output arrived while it ran
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert all(e.data["task_id"] == task["id"] for e in events)


def test_the_global_stream_starts_now_and_delivers_new_events(live_server: LiveServer) -> None:
    with Client(live_server.url, live_server.token) as client:
        old = client.submit(["true"])
        wait_until(lambda: client.task(old["id"])["status"] in TERMINAL, 10, "the first task")
        stream = client.events()
        # The connection is opened lazily: start reading, then submit.
        first: list[Event] = []
        reader = threading.Thread(target=lambda: first.extend(take(stream, 1)))
        reader.start()
        wait_until(lambda: live_server.controller.counters.sse_clients == 1, 10, "the stream")
        new = client.submit(["true"])
        reader.join(10)
    assert first and first[0].data["task_id"] == new["id"]
    assert first[0].data["data"]["status"] == "queued"


def test_resuming_with_last_event_id_has_no_gaps_and_no_duplicates(live_server: LiveServer) -> None:
    with Client(live_server.url, live_server.token) as client:
        tasks = [client.submit(["stream", "40", "0.005"], thread=f"t{i}") for i in range(3)]
        # Reconnect every 7 events, with the events still being written, until caught up.
        collected = reconnect_until_caught_up(client, live_server, tasks, every=7)
    expected = [e.id for e in live_server.controller.events.after(0, limit=100_000)]
    assert collected == expected
    assert len(expected) > 30  # many reconnections, while output was still being written


def test_a_bad_last_event_id_is_a_400_and_an_unknown_task_a_404(live_server: LiveServer) -> None:
    headers = live_server.headers
    with httpx.Client(base_url=live_server.url, headers=headers) as http:
        response = http.get("/api/v1/events", headers={"Last-Event-ID": "abc"})
        assert response.status_code == 400
        assert "Last-Event-ID" in response.json()["error"]["message"]
        assert http.get("/api/v1/tasks/999/events").status_code == 404


def test_last_event_id_wins_over_after_so_a_reconnect_does_not_replay(
    live_server: LiveServer,
) -> None:
    with Client(live_server.url, live_server.token) as client:
        task = client.submit(["echo", "hi"])
        wait_until(lambda: client.task(task["id"])["status"] in TERMINAL, 10, "the task")
    ids = [e.id for e in live_server.controller.events.after(0, task_id=task["id"])]
    assert len(ids) >= 4  # queued, running, output, succeeded
    # An EventSource opened on ...?after=0 reconnects to that same URL, saying how far it got.
    headers = {**live_server.headers, "Last-Event-ID": str(ids[1])}
    for path in (f"/api/v1/tasks/{task['id']}/events", "/api/v1/events"):
        with httpx.stream(
            "GET", f"{live_server.url}{path}?after=0", headers=headers, timeout=10
        ) as response:
            assert response.status_code == 200
            resumed = take(parse_sse(response.iter_lines()), len(ids) - 2)
        assert [e.id for e in resumed] == ids[2:], path


def test_a_revoked_devices_open_stream_ends_and_gets_no_more_events(
    live_server: LiveServer,
) -> None:
    auth = live_server.controller.auth
    device, token = auth.pair(auth.issue_pairing_code().code, "tablet", "10.0.0.8")
    lines: list[str] = []
    ended = threading.Event()

    def read() -> None:
        with httpx.stream(
            "GET",
            f"{live_server.url}/api/v1/events",
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(10, read=60),
        ) as response:
            lines.extend(response.iter_lines())
        ended.set()

    # A daemon: without the fix it would read until the server stops.
    threading.Thread(target=read, daemon=True).start()
    wait_until(lambda: live_server.controller.counters.sse_clients == 1, 10, "the stream")
    with Client(live_server.url, live_server.token) as owner:
        owner.revoke(device.id)
        owner.submit(["true"])  # an event the revoked device must not see
    wait_until(ended.is_set, 10, "the revoked device's stream to end")
    assert not [line for line in lines if line.startswith(("id:", "data:"))], lines
    wait_until(lambda: live_server.controller.counters.sse_clients == 0, 10, "no open stream")


# Each is what `str.isdigit` or a lenient parse would take: superscripts (latin-1 0xB2 is how
# "²" arrives), other scripts' digits, signs, spaces, exponents.
NOT_EVENT_IDS = [b"\xb2", "١٢".encode(), b"12a", b" 12", b"12 ", b"-1", b"+1", b"1e3", b"0x1f"]


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/tasks/1/events"])
def test_a_last_event_id_that_is_not_a_plain_number_is_a_400(api: Api, path: str) -> None:
    api.submit(["true"])
    for value in NOT_EVENT_IDS:
        response = api.get(path, headers={"Last-Event-ID": value})  # type: ignore[dict-item]
        assert response.status_code == 400, (value, response.text)
        error = response.json()["error"]
        assert error["code"] == "bad_request" and "Last-Event-ID" in error["message"], value


def test_the_same_over_a_real_socket(live_server: LiveServer) -> None:
    # The bytes arrive as sent (the in-process client re-encodes them); HTTP itself strips the
    # spaces around a header value, so those two are left to the test above.
    with httpx.Client(base_url=live_server.url, headers=live_server.headers) as http:
        for value in NOT_EVENT_IDS:
            if value.strip() != value:
                continue
            response = http.get("/api/v1/events", headers={"Last-Event-ID": value})  # type: ignore[dict-item]
            assert response.status_code == 400, (value, response.text)
            assert "Last-Event-ID" in response.json()["error"]["message"]


@pytest.mark.parametrize("value", ["١٢", "²", "۳", "\uff11\uff12"])
def test_only_ascii_digits_are_event_ids(value: str) -> None:
    with pytest.raises(BadRequest, match="Last-Event-ID"):
        _resume_point(value, None, default=0)
    assert _resume_point("12", None, default=0) == 12
