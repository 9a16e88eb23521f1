"""The HTTP edge over real sockets: what a client without a token can make the controller hold.

Each test talks raw HTTP/1.1 to a live uvicorn configured as `dispatch serve` configures it
(`api.edge.server_config`), with short limits so that the deadlines pass quickly. No test
asserts how fast something happened: a limit is shown by the connection ending at all while
the client would have kept it open, and every wait has a generous deadline.
"""

from __future__ import annotations

import json
import os
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import TERMINAL, Api, LiveServer, wait_until

from controller.api.app import BodyLimit
from controller.api.edge import SPARE_DESCRIPTORS, Admission, EdgeLimits, server_config
from controller.cli.exit_codes import ExitCode
from controller.client import Client, Event
from controller.errors import ConfigError, RateLimited, Unauthorized
from controller.settings import Settings, load_settings

REPO = Path(__file__).parents[2]
# How long a test waits for the server to answer or close before calling it a failure.
PATIENCE_S = 60.0


@contextmanager
def connection(server: LiveServer) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE_S)
    try:
        yield sock
    finally:
        sock.close()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails after PATIENCE_S)."""
    sock.settimeout(PATIENCE_S)
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        except TimeoutError:
            pytest.fail(f"the server kept the connection open for {PATIENCE_S} s: {received!r}")
        if not chunk:
            return received
        received += chunk


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """Status, headers (lower-case names) and JSON body of one raw HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    pairs = (line.split(": ", 1) for line in lines[1:])
    headers = {name.lower(): value for name, value in pairs}
    return int(lines[0].split()[1]), headers, json.loads(body) if body else None


def trickle(sock: socket.socket, piece: bytes, every_s: float = 0.25) -> bytes:
    """Send `piece` every `every_s` until the server answers or closes; return what it sent."""
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], every_s)
        if readable:
            return read_until_closed(sock)
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return b""  # closed between our last look and this send
    pytest.fail(f"the server let a client trickle for {PATIENCE_S} s")


def request_head(method: str, path: str, *lines: str) -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *lines, "", ""]).encode()


# --- the token before the body -------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic b3duZXI6eA=="])
def test_a_request_without_a_valid_token_is_refused_before_its_body_is_read(
    live_server: LiveServer, authorization: str | None
) -> None:
    auth = [f"Authorization: {authorization}"] if authorization else []
    for framing in (
        "Content-Length: 1000000",
        "Content-Length: 50000000",
        "Transfer-Encoding: chunked",
    ):
        with connection(live_server) as sock:
            sock.sendall(
                request_head(
                    "POST", "/api/v1/tasks", *auth, "Content-Type: application/json", framing
                )
            )
            # Not one byte of the body is sent, yet the answer comes and the connection ends:
            # the controller neither waited for the body nor kept reading it.
            status, headers, body = parse(read_until_closed(sock))
        assert status == 401, (framing, body)
        assert body["error"]["code"] == "unauthorized"
        assert headers["www-authenticate"] == "Bearer"
        assert headers["connection"] == "close"


def test_the_routes_that_need_no_token_take_only_small_bodies(live_server: LiveServer) -> None:
    with connection(live_server) as sock:
        sock.sendall(request_head("POST", "/api/v1/pair", "Content-Length: 5000"))
        status, _, body = parse(read_until_closed(sock))
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert "4096 bytes" in body["error"]["message"]
    # A real pairing request is far smaller, and still answered.
    response = httpx.post(
        f"{live_server.url}/api/v1/pair", json={"code": "AAAA-AAAA", "device_name": "phone"}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_pairing_code"


def test_a_valid_token_still_gets_its_body_read(live_server: LiveServer) -> None:
    command = ["echo"] + ["x" * 100_000] * 5  # half a megabyte
    with Client(live_server.url, live_server.token) as client:
        task = client.submit(command)
        assert client.task(task["id"])["command"] == command


def test_a_body_cut_short_by_a_disconnect_reaches_no_route() -> None:
    reached: list[bytes] = []

    async def route(_scope: Any, receive: Any, _send: Any) -> None:
        reached.append((await receive())["body"])

    # A prefix that is itself a whole JSON request: acting on it would run a command never sent.
    messages = iter(
        [
            {"type": "http.request", "body": b'{"command": ["rm"]}', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(_message: Any) -> None:
        pytest.fail("nobody is there to answer")

    scope = {"type": "http", "headers": [(b"content-length", b"200")]}
    anyio.run(BodyLimit(route, max_bytes=1000, timeout_s=5), scope, receive, send)
    assert reached == []


# --- deadlines ------------------------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed(
    make_live_server: Callable[..., LiveServer],
) -> None:
    server = make_live_server(header_timeout_s=1.0)
    with connection(server) as sock:
        assert read_until_closed(sock) == b""  # closed, and nothing said to a silent client


def test_headers_that_stop_half_way_get_a_408(make_live_server: Callable[..., LiveServer]) -> None:
    server = make_live_server(header_timeout_s=1.0)
    with connection(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        status, headers, body = parse(read_until_closed(sock))
    assert status == 408 and headers["connection"] == "close"
    assert body["error"]["code"] == "request_timeout"
    assert "header_timeout_s" in body["error"]["message"]


def test_headers_sent_a_line_at_a_time_are_cut_off(
    make_live_server: Callable[..., LiveServer],
) -> None:
    server = make_live_server(header_timeout_s=1.0)
    with connection(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = trickle(sock, b"X-Slow: 1\r\n")
    # The server closed the connection; if its 408 arrived before our next line, it is whole.
    assert answer == b"" or parse(answer)[0] == 408


def test_the_next_request_on_a_kept_alive_connection_has_a_header_deadline_too(
    make_live_server: Callable[..., LiveServer],
) -> None:
    server = make_live_server(header_timeout_s=1.0, idle_timeout_s=60.0)
    with connection(server) as sock:
        sock.sendall(request_head("GET", "/healthz"))
        first = b""
        while b'"status"' not in first:
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        answer = trickle(sock, b"G")  # the next request, a byte at a time
    assert answer == b"" or parse(answer)[0] == 408


@pytest.mark.parametrize(("path", "authorised"), [("/api/v1/tasks", True), ("/api/v1/pair", False)])
def test_a_slow_body_gets_a_408(
    make_live_server: Callable[..., LiveServer], path: str, authorised: bool
) -> None:
    server = make_live_server(body_timeout_s=1.0)
    auth = [f"Authorization: Bearer {server.token}"] if authorised else []
    with connection(server) as sock:
        sock.sendall(request_head("POST", path, *auth, "Content-Length: 100") + b'{"comm')
        status, headers, body = parse(read_until_closed(sock))
    assert status == 408 and headers["connection"] == "close"
    assert body["error"]["code"] == "request_timeout"
    assert "body_timeout_s" in body["error"]["message"]


def test_a_body_sent_a_byte_at_a_time_is_cut_off(
    make_live_server: Callable[..., LiveServer],
) -> None:
    server = make_live_server(body_timeout_s=1.0)
    head = request_head(
        "POST", "/api/v1/tasks", f"Authorization: Bearer {server.token}", "Content-Length: 4000"
    )
    with connection(server) as sock:
        sock.sendall(head)
        answer = trickle(sock, b" ")
    assert answer == b"" or parse(answer)[0] == 408
    assert server.controller.tasks.search() == []


def test_an_idle_kept_alive_connection_is_closed(
    make_live_server: Callable[..., LiveServer],
) -> None:
    server = make_live_server(idle_timeout_s=1.0, header_timeout_s=60.0)
    with connection(server) as sock:
        sock.sendall(request_head("GET", "/healthz"))
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"}")  # one answer, then closed


def test_the_configured_figures_reach_uvicorn(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(idle_timeout_s=7.0, header_timeout_s=3.0, max_connections=9)
    config = server_config(object(), settings)
    assert config.timeout_keep_alive == 7.0
    limits = config.http.limits  # type: ignore[union-attr]
    assert (limits.header_timeout_s, limits.max_connections) == (3.0, 9)
    assert (limits.max_connections_per_client, limits.loopback_reserve) == (4, 2)
    assert config.proxy_headers is False


def until_finished(events: Iterator[Event]) -> list[str]:
    """The kinds of events up to a task's end; a stream that ends first raises or falls short."""
    kinds = []
    for event in events:
        kinds.append(event.kind)
        if event.kind == "task.state" and event.data["data"]["status"] in TERMINAL:
            return kinds
    pytest.fail(f"the stream ended before the task did: {kinds}")


def test_event_streams_outlive_every_deadline(make_live_server: Callable[..., LiveServer]) -> None:
    server = make_live_server(header_timeout_s=0.5, body_timeout_s=0.5, idle_timeout_s=0.5)
    with Client(server.url, server.token) as client:
        # A task printing for about 3 s, six times each limit; reconnect=False: a cut is an error.
        task = client.submit(["stream", "10", "0.3"])
        kinds = until_finished(client.events(task_id=task["id"], after=0, reconnect=False))
        assert kinds.count("task.output") == 10

        # The global stream, quiet at first, then carrying a later task's events.
        seen: list[str] = []
        stream = client.events(reconnect=False)
        reader = threading.Thread(target=lambda: seen.extend(until_finished(stream)))
        reader.start()
        wait_until(lambda: server.controller.counters.sse_clients == 1, PATIENCE_S, "the stream")
        client.submit(["stream", "5", "0.3"])
        reader.join(PATIENCE_S)
        assert seen.count("task.output") == 5, seen


# --- the connection cap ---------------------------------------------------------------------


def test_connections_over_the_cap_are_refused_and_the_owner_gets_in_after_the_flood(
    make_live_server: Callable[..., LiveServer],
) -> None:
    # One address may hold them all here: this test is about the cap on all clients together.
    server = make_live_server(
        max_connections=5, max_connections_per_client=5, header_timeout_s=300.0
    )
    state = server.server.server_state
    flood = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
    try:
        wait_until(lambda: len(state.connections) == 5, PATIENCE_S, "5 open connections")
        for _ in range(3):
            with connection(server) as extra:
                status, headers, body = parse(read_until_closed(extra))
            assert status == 503 and headers["connection"] == "close"
            assert body["error"]["code"] == "too_many_connections"
            assert "max_connections" in body["error"]["message"]
        wait_until(lambda: len(state.connections) == 5, PATIENCE_S, "the refused ones to go")
    finally:
        for sock in flood:
            sock.close()
    wait_until(lambda: not state.connections, PATIENCE_S, "the flood's connections to close")
    response = httpx.get(f"{server.url}/api/v1/tasks", headers=server.headers)
    assert response.status_code == 200


def test_a_flood_that_stays_connected_ends_at_the_header_deadline(
    make_live_server: Callable[..., LiveServer],
) -> None:
    server = make_live_server(max_connections=5, max_connections_per_client=5, header_timeout_s=1.0)
    flood = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
    try:
        for sock in flood:
            read_until_closed(sock)  # the server ends each one; the attacker never lets go
        response = httpx.get(f"{server.url}/api/v1/tasks", headers=server.headers)
        assert response.status_code == 200
    finally:
        for sock in flood:
            sock.close()


def test_one_address_holds_at_most_its_share_event_streams_included(
    make_live_server: Callable[..., LiveServer],
) -> None:
    server = make_live_server(max_connections=8, max_connections_per_client=4)
    owner = httpx.Client(base_url=server.url, headers=server.headers, timeout=PATIENCE_S)
    code = owner.post("/api/v1/pairing-codes").json()["code"]
    token = owner.post("/api/v1/pair", json={"code": code, "device_name": "phone"}).json()["token"]
    # The device is another client (127.0.0.2, still this machine's loopback) than the owner.
    device = httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {token}"},
        transport=httpx.HTTPTransport(local_address="127.0.0.2"),
        timeout=PATIENCE_S,
    )
    with ExitStack() as streams:
        for _ in range(4):
            response = streams.enter_context(device.stream("GET", "/api/v1/events"))
            assert response.status_code == 200
        wait_until(lambda: server.controller.counters.sse_clients == 4, PATIENCE_S, "4 streams")
        fifth = socket.create_connection(
            ("127.0.0.1", server.port), timeout=PATIENCE_S, source_address=("127.0.0.2", 0)
        )
        with fifth:
            status, _, body = parse(read_until_closed(fifth))
        assert status == 503
        assert "max_connections_per_client" in body["error"]["message"]
        assert owner.get("/api/v1/tasks").status_code == 200
    device.close()
    owner.close()


def test_the_share_and_the_loopback_reserve_are_counted_per_address() -> None:
    limits = EdgeLimits(
        header_timeout_s=1.0,
        max_connections=10,
        max_connections_per_client=4,
        loopback_reserve=2,
        trusted_proxies=("10.0.0.0/8",),
    )
    admission = Admission(limits)
    assert [admission.admit("203.0.113.1") for _ in range(4)] == [None] * 4
    refusal = admission.admit("203.0.113.1")
    assert refusal and "max_connections_per_client" in refusal
    # Another address has its own share, until only the loopback reserve is left.
    assert [admission.admit("203.0.113.2") for _ in range(4)] == [None] * 4
    refusal = admission.admit("203.0.113.3")
    assert refusal and "clients on its own machine" in refusal
    # The owner's CLI on this machine takes the reserve; then nobody gets in.
    assert admission.admit("127.0.0.1") is None
    assert admission.admit("::1") is None
    refusal = admission.admit("127.0.0.1")
    assert refusal and "max_connections setting" in refusal
    # A closed connection gives its slot back to its address.
    admission.release("203.0.113.1")
    admission.release("127.0.0.1")
    assert admission.admit("203.0.113.1") is not None  # still the reserve's turn
    assert admission.admit("127.0.0.1") is None


def test_an_ipv6_client_is_its_slash_64_and_a_mapped_loopback_is_local() -> None:
    admission = Admission(EdgeLimits(1.0, 10, 2, 2))
    assert admission.admit("2001:db8:0:1::1") is None
    assert admission.admit("2001:db8:0:1::2") is None
    refusal = admission.admit("2001:db8:0:1:ffff::3")  # the same /64, another address
    assert refusal and "2001:db8:0:1::/64" in refusal
    assert admission.admit("2001:db8:0:2::1") is None  # another /64
    for host in range(5):
        assert admission.admit(f"198.51.100.{host}") is None
    # 8 of 10 taken: the rest is the loopback reserve, which IPv4 loopback seen over IPv6 gets.
    assert admission.admit("203.0.113.9") is not None
    assert admission.admit("::ffff:127.0.0.1") is None
    assert admission.admit("") is None  # a Unix socket is on this machine too


def test_a_trusted_proxy_is_not_held_to_one_clients_share() -> None:
    limits = EdgeLimits(1.0, 10, 2, 0, trusted_proxies=("10.0.0.0/8",))
    admission = Admission(limits)
    assert [admission.admit("10.1.2.3") for _ in range(10)] == [None] * 10


def run_with_file_limit(
    args: list[str], soft: int, hard: int, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run python ARGS in a process whose open-file limit is (soft, hard)."""
    outside = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    return subprocess.run(
        [sys.executable, *args],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
        capture_output=True,
        text=True,
        env={**outside, "PYTHONPATH": str(REPO), "DISPATCH_SANDBOX_BACKEND": "fake", **env},
        timeout=120,
        check=False,
    )


def test_a_low_open_file_limit_is_raised_to_hold_the_cap() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 200 + SPARE_DESCRIPTORS
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"this machine's hard open-file limit ({hard}) is below {needed}")
    code = (
        "import resource; from controller.api.edge import ensure_descriptors; "
        "ensure_descriptors(200); print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    done = run_with_file_limit(["-c", code], soft=64, hard=hard)
    assert (done.returncode, done.stdout.strip()) == (0, str(needed)), done.stderr


def test_serve_refuses_a_cap_the_hard_limit_cannot_hold(workspace: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["-m", "controller", "serve", "--no-pair", "--data-dir", str(workspace / "data")]
    done = run_with_file_limit(
        [*args, "--port", str(port)],
        soft=300,
        hard=300,
        XDG_CONFIG_HOME=str(workspace / "xdg-config"),
    )
    assert done.returncode == ExitCode.USAGE, done.stdout + done.stderr
    assert "max_connections = 200 needs 456 open files" in done.stderr
    assert "lower max_connections to 44 or less" in done.stderr


# --- who the client is ----------------------------------------------------------------------


def wrong_code_from(server: LiveServer, forwarded_for: str) -> int:
    response = httpx.post(
        f"{server.url}/api/v1/pair",
        json={"code": "AAAA-AAAA", "device_name": "x"},
        headers={"X-Forwarded-For": forwarded_for},
    )
    return response.status_code


def test_x_forwarded_for_is_ignored_unless_the_proxy_is_trusted(live_server: LiveServer) -> None:
    statuses = [wrong_code_from(live_server, f"203.0.113.{i}") for i in range(8)]
    assert statuses == [401] * 5 + [429] * 3


def test_a_trusted_proxy_names_the_client(make_live_server: Callable[..., LiveServer]) -> None:
    server = make_live_server(trusted_proxies="127.0.0.1")
    assert [wrong_code_from(server, f"203.0.113.{i}") for i in range(8)] == [401] * 8
    assert [wrong_code_from(server, "198.51.100.7") for _ in range(6)] == [401] * 5 + [429]


def burst(count: int, attempt: Callable[[int], object]) -> list[str]:
    """Run `attempt(i)` in `count` threads released at once; what each ended with."""
    barrier = threading.Barrier(count)

    def one(i: int) -> str:
        barrier.wait()
        try:
            attempt(i)
        except RateLimited:
            return "limited"
        except Unauthorized:
            return "wrong"
        return "paired"

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_a_burst_of_wrong_codes_gets_no_more_guesses_than_the_limit(api: Api) -> None:
    auth = api.controller.auth
    results = burst(40, lambda _i: auth.pair("AAAA-AAAA", "x", "10.1.1.1"))
    assert results.count("wrong") == 5, results
    # And in total, from many clients at once (5 of the 30 were used just now).
    results = burst(60, lambda i: auth.pair("AAAA-AAAA", "x", f"10.2.{i}.1"))
    assert results.count("wrong") == 30 - 5, results


def test_a_right_code_does_not_count_against_the_client(api: Api) -> None:
    auth = api.controller.auth
    codes = [auth.issue_pairing_code().code for _ in range(8)]
    for i, code in enumerate(codes):
        auth.pair(code, f"phone {i}", "10.3.3.3")
    assert burst(5, lambda _i: auth.pair("AAAA-AAAA", "x", "10.3.3.3")) == ["wrong"] * 5


# --- settings -------------------------------------------------------------------------------


def test_trusted_proxies_are_read_from_the_environment_and_the_config_file(tmp_path: Any) -> None:
    environ = {"XDG_CONFIG_HOME": str(tmp_path), "DISPATCH_TRUSTED_PROXIES": "10.0.0.0/8, ::1"}
    settings = load_settings({"data_dir": tmp_path / "data"}, environ)
    assert settings.trusted_proxies == ("10.0.0.0/8", "::1")
    config = tmp_path / "config.toml"
    config.write_text('trusted_proxies = ["192.168.1.2"]\nheader_timeout_s = 4\n')
    settings = load_settings({"data_dir": tmp_path / "data"}, {}, config=config)
    assert (settings.trusted_proxies, settings.header_timeout_s) == (("192.168.1.2",), 4.0)
    assert server_config(object(), settings).forwarded_allow_ips == ["192.168.1.2"]


@pytest.mark.parametrize(
    ("key", "value", "names"),
    [
        ("trusted_proxies", "*", "never *"),
        ("trusted_proxies", "10.0.0.1/8", "has host bits set"),
        ("trusted_proxies", "proxy.lan", "not an IP address"),
        ("header_timeout_s", "0", "more than 0"),
        ("body_timeout_s", "nan", "more than 0"),
        ("idle_timeout_s", "99999", "at most 3600"),
        ("max_connections", "0", "between 1 and 10000"),
        ("max_connections_per_client", "201", "between 1 and max_connections"),
    ],
)
def test_bad_edge_settings_name_the_setting_and_the_fix(
    tmp_path: Any, key: str, value: str, names: str
) -> None:
    environ = {"XDG_CONFIG_HOME": str(tmp_path), f"DISPATCH_{key.upper()}": value}
    with pytest.raises(ConfigError, match=names) as raised:
        load_settings({"data_dir": tmp_path / "data"}, environ)
    assert f"DISPATCH_{key.upper()}" in str(raised.value)


# --- a revocation between the headers and the body --------------------------------------


def send_half(server: LiveServer, path: str, token: str, body: bytes) -> socket.socket:
    """A POST whose token has been checked (the headers are in) but whose body is still owed."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE_S)
    sock.sendall(head + body[:1])
    return sock


@pytest.mark.parametrize("write", ["thread", "message", "task", "retry", "cancel"])
def test_a_write_begun_before_its_device_is_revoked_is_refused_after(
    make_live_server: Callable[..., LiveServer], write: str
) -> None:
    server = make_live_server(body_timeout_s=60.0)
    owner = httpx.Client(base_url=server.url, headers=server.headers, timeout=PATIENCE_S)
    code = owner.post("/api/v1/pairing-codes").json()["code"]
    paired = owner.post("/api/v1/pair", json={"code": code, "device_name": "stolen"}).json()
    thread = owner.post("/api/v1/threads", json={"name": "t"}).json()
    finished = owner.post("/api/v1/tasks", json={"command": ["echo", "x"]}).json()
    wait_until(
        lambda: owner.get(f"/api/v1/tasks/{finished['id']}").json()["status"] in TERMINAL,
        PATIENCE_S,
        "the first task to finish",
    )
    running = owner.post("/api/v1/tasks", json={"command": ["sleep", "60"]}).json()

    def state() -> tuple[list[str], list[tuple[int, str]]]:
        threads = [t["name"] for t in owner.get("/api/v1/threads").json()]
        return threads, [(t["id"], t["status"]) for t in owner.get("/api/v1/tasks").json()]

    wait_until(lambda: (running["id"], "running") in state()[1], PATIENCE_S, "a running task")
    path, body = {
        "thread": ("/api/v1/threads", b'{"name": "after the revocation"}'),
        "message": (f"/api/v1/threads/{thread['id']}/messages", b'{"text": "after"}'),
        "task": ("/api/v1/tasks", b'{"command": ["echo", "after"]}'),
        "retry": (f"/api/v1/tasks/{finished['id']}/retry", b"{}"),
        "cancel": (f"/api/v1/tasks/{running['id']}/cancel", b"{}"),
    }[write]
    before = state()
    with send_half(server, path, paired["token"], body) as sock:
        assert owner.delete(f"/api/v1/devices/{paired['device_id']}").status_code == 200
        sock.sendall(body[1:])
        status, _, answer = parse(read_until_closed(sock))
    assert status == 401, answer
    history = owner.get(f"/api/v1/threads/{thread['id']}").json()["history"]
    assert not [item for item in history if item["type"] == "message"]
    # Nothing changed: no thread, no task, and the running one still runs.
    assert state() == before
    owner.post(f"/api/v1/tasks/{running['id']}/cancel")
    owner.close()
