"""Benchmark the controller on loopback: task submissions per second, and SSE event latency.

    .venv/bin/python bench/controller.py [--submissions 3000] [--clients 8] [--events 300]

Starts a real `dispatch serve` (SQLite in a temporary data directory, the fake sandbox backend
so the figure is the controller's own cost), occupies both runner slots with long tasks, then:

1. submissions/s: `--clients` keep-alive connections POST /api/v1/tasks as fast as they can
   until `--submissions` tasks are accepted (202: queued and committed to the database);
   The baseline is GET /healthz over the same connections: the HTTP stack alone.
2. event latency: one SSE client on /api/v1/events while messages are posted 20 ms apart;
   latency = when the client has parsed the event - when the server created the event row
   (both on this machine's clock), so it includes the commit, the wake-up and the network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from controller.client import parse_sse  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(root: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DISPATCH_DATA_DIR": str(root / "data"),
        "DISPATCH_CONFIG": str(root / "config.toml"),
        "DISPATCH_PORT": str(port),
        "DISPATCH_SANDBOX_BACKEND": "fake",
        "DISPATCH_LOG_LEVEL": "warning",
    }
    (root / "config.toml").write_text("")
    process = subprocess.Popen(
        [sys.executable, "-m", "controller", "serve", "--no-pair"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(root / "serve.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    else:
        raise SystemExit(f"dispatch serve did not start: {(root / 'serve.log').read_text()}")
    token = (root / "data" / "owner-token").read_text().strip()
    return process, url, token


async def load(
    url: str,
    token: str,
    total: int,
    clients: int,
    *,
    method: str = "POST",
    path: str = "/api/v1/tasks",
    expect: bytes = b" 202 ",
) -> dict[str, float]:
    """Send `total` requests over `clients` keep-alive connections, as fast as answered.

    POST /api/v1/tasks submits `true` to thread `bench-N` (one thread per connection). The
    load generator speaks HTTP/1.1 itself: httpx costs about a millisecond of CPU per request,
    which on two cores would be taken from the server being measured.
    """
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    remaining = total

    async def client(n: int) -> None:
        nonlocal remaining
        body = json.dumps({"thread": f"bench-{n}", "command": ["true"]}).encode()
        if method == "GET":
            body = b""
        request = (
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        reader, writer = await asyncio.open_connection(host, int(port))
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            writer.write(request)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            answer = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if expect not in status:
                raise SystemExit(f"{method} {path} refused: {status!r} {answer!r}")
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": total,
        "clients": clients,
        "seconds": elapsed,
        "per_second": total / elapsed,
        "latency_median_ms": statistics.median(latencies) * 1000,
        "latency_p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def occupy_workers(url: str, token: str) -> None:
    """Start two long tasks, so both runner slots are busy and submissions stay queued."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers) as http:
        ids = [
            http.post(
                "/api/v1/tasks", json={"thread": f"busy-{i}", "command": ["sleep", "3600"]}
            ).json()["id"]
            for i in range(2)
        ]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(http.get(f"/api/v1/tasks/{i}").json()["status"] == "running" for i in ids):
                return
            time.sleep(0.05)
    raise SystemExit("the blocking tasks did not start")


def event_latency(url: str, token: str, count: int) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        thread_id = http.post("/api/v1/threads", json={"name": f"latency-{time.time()}"}).json()[
            "id"
        ]
        received: list[float] = []
        connected = threading.Event()

        def listen() -> None:
            with (
                httpx.Client(
                    base_url=url, headers=headers, timeout=httpx.Timeout(30, read=None)
                ) as sse,
                sse.stream("GET", "/api/v1/events") as response,
            ):
                connected.set()
                for event in parse_sse(response.iter_lines()):
                    if event.kind == "thread.message":
                        received.append(time.time() - event.data["created_at"])
                        if len(received) == count:
                            return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        connected.wait(10)
        time.sleep(0.2)  # let the stream reach its first wait before publishing
        for i in range(count):
            http.post(f"/api/v1/threads/{thread_id}/messages", json={"text": f"ping {i}"})
            time.sleep(0.02)
        listener.join(30)
    received.sort()
    return {
        "events": len(received),
        "median_ms": statistics.median(received) * 1000,
        "p99_ms": received[max(int(len(received) * 0.99) - 1, 0)] * 1000,
        "max_ms": received[-1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--submissions", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dispatch-bench-"))
    process, url, token = start_server(root)
    try:
        occupy_workers(url, token)
        baseline = asyncio.run(
            load(
                url,
                token,
                args.submissions,
                args.clients,
                method="GET",
                path="/healthz",
                expect=b" 200 ",
            )
        )
        cpu_before = process_cpu_s(process.pid)
        submitted = asyncio.run(load(url, token, args.submissions, args.clients))
        submitted["server_cpu_ms_each"] = (
            (process_cpu_s(process.pid) - cpu_before) / args.submissions * 1000
        )
        latency = event_latency(url, token, args.events)
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        figures = {"baseline": baseline, "submissions": submitted, "event_latency": latency}
        print(json.dumps(figures, indent=2))
        return
    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        "SQLite (WAL, synchronous=FULL)"
    )
    print(
        f"baseline GET /healthz (no database): {baseline['per_second']:.0f}/s, median "
        f"{baseline['latency_median_ms']:.1f} ms"
    )
    print(
        f"submissions: {submitted['requests']:.0f} in {submitted['seconds']:.2f} s with "
        f"{submitted['clients']} clients = {submitted['per_second']:.0f}/s "
        f"(goal >= 300/s: {submitted['per_second'] / 300:.2f}x); request latency median "
        f"{submitted['latency_median_ms']:.1f} ms, p99 {submitted['latency_p99_ms']:.1f} ms; "
        f"server CPU {submitted['server_cpu_ms_each']:.2f} ms per submission; "
        f"{submitted['per_second'] / baseline['per_second']:.2f}x the baseline rate"
    )
    print(
        f"event delivery ({latency['events']:.0f} events): median {latency['median_ms']:.2f} ms, "
        f"p99 {latency['p99_ms']:.2f} ms, max {latency['max_ms']:.2f} ms "
        f"(goal median <= 10 ms: {10 / latency['median_ms']:.1f}x headroom)"
    )


if __name__ == "__main__":
    main()
