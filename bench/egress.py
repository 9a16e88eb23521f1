"""What the egress proxy costs: throughput and added latency, through it and direct, on loopback.

In one run, against one local server (it answers with `sendfile`, so the direct path is as fast
as loopback allows):
  download  a 100 MiB body, direct and through the proxy (plain HTTP), interleaved, N times
  latency   200 small requests (a new connection each, as the proxy serves one per connection),
            direct and through the proxy, interleaved
Prints medians, the throughput ratio (goal >= 0.8x) and the added median latency (goal <= 2 ms).
With --sandbox it also times the whole sandbox path (curl in a container -> relay -> the proxy's
socket -> proxy), which has no direct counterpart (a sandbox has no route of its own).

Usage: python bench/egress.py [--mib 100] [--runs 5] [--requests 200] [--sandbox]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sandbox.egress import ProxyProcess

NAME = "bench.test"
SMALL = b"ok\n"


class Server:
    """HTTP/1.1 on 127.0.0.1: GET /big sends the file with sendfile, anything else 3 bytes."""

    def __init__(self, big: Path) -> None:
        self.big = big
        self.size = big.stat().st_size
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            path = head.split(b" ", 2)[1]
            if path.endswith(b"/big"):
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                    % self.size
                )
                with self.big.open("rb") as body:
                    conn.sendfile(body)
            else:
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                    % (len(SMALL), SMALL)
                )

    def close(self) -> None:
        self.sock.close()


def fetch(address: tuple[str, int], target: str, host: str) -> int:
    """One GET on a new connection, read to the end; the bytes received."""
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    total = 0
    with socket.create_connection(address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        while n := sock.recv_into(view):
            total += n
    return total


def timed(action: object) -> float:
    started = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - started


@contextlib.contextmanager
def blob(mib: int) -> Iterator[Path]:
    # /dev/shm when there is one: the file is read from memory, not the disk.
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.NamedTemporaryFile(dir=folder, prefix="dispatch-bench-") as handle:
        chunk = os.urandom(1 << 20)
        for _ in range(mib):
            handle.write(chunk)
        handle.flush()
        yield Path(handle.name)


def sandbox_path(port: int, mib: int, runs: int) -> None:
    from sandbox import Network, SandboxSpec, create

    spec = SandboxSpec(
        network=Network.ALLOWLIST, allow=(f"{NAME}:{port}",), resolve={NAME: "127.0.0.1"}
    )
    with create("docker", spec) as box:
        speeds, latencies = [], []
        for _ in range(runs):
            result = box.exec(
                ["curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download}",
                 f"http://{NAME}:{port}/big"],
                timeout_s=300,
            )  # fmt: skip
            speeds.append(float(result.stdout) / (1 << 20))
        script = (
            f"for i in $(seq 50); do curl -sS -o /dev/null -w '%{{time_total}}\\n' "
            f"http://{NAME}:{port}/small; done"
        )
        result = box.exec(["sh", "-c", script], timeout_s=300)
        latencies = [float(x) * 1000 for x in result.stdout.split()]
    print(
        f"sandbox   curl in a container via relay+proxy: {statistics.median(speeds):8.0f} MiB/s "
        f"({mib} MiB), small request median {statistics.median(latencies):.2f} ms "
        "(curl's whole request, new process each)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--sandbox", action="store_true", help="also time the sandbox path")
    args = parser.parse_args()
    with blob(args.mib) as big:
        server = Server(big)
        proxy = ProxyProcess([f"{NAME}:{server.port}"], {NAME: "127.0.0.1"})
        host, _, port = proxy.start(listen="127.0.0.1:0").rpartition(":")
        via = (host, int(port))
        direct = ("127.0.0.1", server.port)
        url = f"http://{NAME}:{server.port}"
        host_header = f"{NAME}:{server.port}"
        try:
            # Warm both paths (the proxy's first request imports and resolves).
            fetch(direct, "/small", host_header)
            fetch(via, f"{url}/small", host_header)
            size = server.size
            down: dict[str, list[float]] = {"direct": [], "proxy": []}
            for _ in range(args.runs):
                down["direct"].append(timed(lambda: fetch(direct, "/big", host_header)))
                down["proxy"].append(timed(lambda: fetch(via, f"{url}/big", host_header)))
            lat: dict[str, list[float]] = {"direct": [], "proxy": []}
            for _ in range(args.requests):
                lat["direct"].append(timed(lambda: fetch(direct, "/small", host_header)))
                lat["proxy"].append(timed(lambda: fetch(via, f"{url}/small", host_header)))
            mib_s = {k: size / (1 << 20) / statistics.median(v) for k, v in down.items()}
            ms = {k: statistics.median(v) * 1000 for k, v in lat.items()}
            print(f"download  {args.mib} MiB x {args.runs}, median of each:")
            print(f"  direct  {mib_s['direct']:8.0f} MiB/s")
            print(f"  proxy   {mib_s['proxy']:8.0f} MiB/s")
            ratio = mib_s["proxy"] / mib_s["direct"]
            # Each pair ran back to back: its ratio is steadier than the medians' on a busy box.
            pairs = [d / p for d, p in zip(down["direct"], down["proxy"], strict=True)]
            print(f"  pairs   {statistics.median(pairs):8.2f}x   (median of back-to-back pairs)")
            print(
                f"  ratio   {ratio:8.2f}x   (goal >= 0.8x: {'met' if ratio >= 0.8 else 'NOT met'})"
            )
            added = ms["proxy"] - ms["direct"]
            print(f"latency   {args.requests} small requests, new connection each, median:")
            print(f"  direct  {ms['direct']:8.3f} ms")
            print(f"  proxy   {ms['proxy']:8.3f} ms")
            print(
                f"  added   {added:8.3f} ms  (goal <= 2 ms: {'met' if added <= 2 else 'NOT met'})"
            )
            records = proxy.wait_records(2 + args.runs + args.requests, timeout_s=10)
            print(
                f"proxy log {len(records)} records, {sum(r.bytes_down for r in records)} bytes down"
            )
            if args.sandbox:
                sandbox_path(server.port, args.mib, args.runs)
        finally:
            proxy.stop()
            server.close()


if __name__ == "__main__":
    main()
