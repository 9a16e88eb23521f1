"""Start and stop the egress proxy as a child process, and collect its request records.

The proxy runs in a process of its own so that a flood of traffic cannot stall the controller,
and so that its death is visible and safe: the sandbox reaches it only through its Unix socket,
and a socket nobody listens on refuses every connection. The child exits when its stdin closes,
which happens when this process dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from sandbox.egress.policy import EgressPolicy
from sandbox.egress.record import EgressRecord
from sandbox.errors import SandboxError

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0


class ProxyFailed(SandboxError):
    """The egress proxy could not start; the sandbox must not start without it."""


class ProxyProcess:
    """One running proxy: `address` once started, `records` as requests finish."""

    def __init__(
        self,
        allow: Iterable[str],
        resolve: Mapping[str, str] | None = None,
        *,
        on_record: Callable[[EgressRecord], None] | None = None,
    ) -> None:
        self.allow = tuple(allow)
        self.resolve = dict(resolve or {})
        EgressPolicy.build(self.allow, self.resolve)  # refuse a bad list here, not in the child
        self.on_record = on_record
        self.records: list[EgressRecord] = []
        self.address: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, *, socket_path: Path | None = None, listen: str | None = None) -> str:
        """Start the child, wait until it listens; return its address.

        Raises:
            ProxyFailed: it did not start (its error is in the message).
        """
        policy = json.dumps({"allow": list(self.allow), "resolve": self.resolve})
        command = [sys.executable, "-m", "sandbox.egress.proxy", "--policy", policy]
        if socket_path is not None:
            command += ["--socket", str(socket_path)]
        else:
            command += ["--listen", listen or "127.0.0.1:0"]
        env = {**os.environ, "PYTHONPATH": _package_root()}
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a Ctrl-C for the CLI is for it, not the proxy
        )
        self._process = process
        assert process.stdout is not None
        ready: dict[str, str] = {}
        got = threading.Event()

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                if not ready:
                    with contextlib.suppress(ValueError):
                        ready.update(json.loads(line))
                    got.set()
                    continue
                try:
                    record = EgressRecord.from_json(line.decode())
                except (ValueError, KeyError):
                    continue
                with self._lock:
                    self.records.append(record)
                if self.on_record is not None:
                    self.on_record(record)
            got.set()

        self._reader = threading.Thread(target=read, name="egress-records", daemon=True)
        self._reader.start()
        if not got.wait(START_TIMEOUT_S) or "ready" not in ready:
            err = b""
            self.stop()
            if process.stderr is not None:
                err = process.stderr.read()[-2000:]
            raise ProxyFailed(
                "the egress proxy did not start: "
                + (err.decode(errors="replace").strip() or "no output")
            )
        self.address = ready["ready"]
        return self.address

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """Kill the child at once (what a crash looks like)."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    def stop(self) -> None:
        """End the child and wait for the last records; safe to call twice."""
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT_S)
        if process.stderr is not None:
            with contextlib.suppress(OSError):
                process.stderr.close()

    def wait_records(self, count: int, timeout_s: float = 10.0) -> list[EgressRecord]:
        """The records so far, waiting (bounded) until there are at least `count`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.records) >= count:
                    break
            time.sleep(0.02)
        with self._lock:
            return list(self.records)


def _package_root() -> str:
    """The folder holding the `sandbox` package, so the child imports this very copy."""
    root = str(Path(__file__).resolve().parents[2])
    existing = os.environ.get("PYTHONPATH")
    return root if not existing else f"{root}{os.pathsep}{existing}"
