"""An in-memory sandbox for fast unit tests: no engine, no processes, same contract.

Commands are answered by a handler (like httpx's MockTransport). The default handler knows a few
shell built-ins: `echo`, `printf`, `true`, `false`, `exit N`, `sleep S`, `cat PATH`, `yes-bytes N`
(N bytes of 'y', for output caps). Anything else exits 127.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from sandbox.base import (
    DEFAULT_OUTPUT_CAP_BYTES,
    ExecResult,
    Outcome,
    OutputBuffer,
    OutputCallback,
    SandboxSpec,
    Stream,
)
from sandbox.errors import FileOperationFailed, SandboxNotRunning

WRITABLE_SCRATCH = (Path("/tmp"), Path("/home/sandbox"))

# A handler gets the sandbox and the command and writes through `emit`; it returns an exit code.
Handler = Callable[["FakeSandbox", Sequence[str], Callable[[Stream, bytes], None]], int]

_ids = itertools.count(1)


class _Stopped(Exception):
    pass


def default_handler(
    box: FakeSandbox, command: Sequence[str], emit: Callable[[Stream, bytes], None]
) -> int:
    """The few built-ins described in the module docstring."""
    name, args = command[0], list(command[1:])
    if name == "echo":
        emit(Stream.STDOUT, (" ".join(args) + "\n").encode())
        return 0
    if name == "printf":
        emit(Stream.STDOUT, "".join(args).encode())
        return 0
    if name == "true":
        return 0
    if name == "false":
        return 1
    if name == "exit":
        return int(args[0]) if args else 0
    if name == "sleep":
        box.wait(float(args[0]))
        return 0
    if name == "cat":
        try:
            emit(Stream.STDOUT, box.read_file(Path(args[0])))
        except FileOperationFailed as exc:
            emit(Stream.STDERR, f"cat: {exc}\n".encode())
            return 1
        return 0
    if name == "yes-bytes":
        remaining = int(args[0])
        while remaining > 0:
            chunk = min(remaining, 64 * 1024)
            emit(Stream.STDOUT, b"y" * chunk)
            remaining -= chunk
        return 0
    emit(Stream.STDERR, f"{name}: command not found\n".encode())
    return 127


class FakeSandbox:
    """Honours the Sandbox contract in memory: mounts, read-only root, timeouts, output caps."""

    def __init__(self, spec: SandboxSpec, handler: Handler = default_handler) -> None:
        self.spec = spec
        self._handler = handler
        self._id = f"fake-{next(_ids)}"
        self._files: dict[Path, bytes] = {}
        self._running = False
        self._stopped = False
        self._interrupt = threading.Event()
        self.commands: list[list[str]] = []

    @property
    def id(self) -> str:
        return self._id

    def start(self) -> None:
        if self._stopped:
            raise SandboxNotRunning(
                f"sandbox {self._id} was stopped; a stopped sandbox cannot start again, "
                "create a new one"
            )
        self._running = True

    def wait(self, seconds: float) -> None:
        """Sleep inside a command, ending early if it is killed."""
        if self._interrupt.wait(seconds):
            raise _Stopped

    def exec(
        self,
        command: Sequence[str],
        *,
        timeout_s: float | None = None,
        on_output: OutputCallback | None = None,
        workdir: Path | None = None,
        output_cap_bytes: int = DEFAULT_OUTPUT_CAP_BYTES,
    ) -> ExecResult:
        self._require_running()
        if not command:
            raise ValueError("command is empty; pass at least the program to run")
        self.commands.append(list(command))
        buffers = {s: OutputBuffer(s, output_cap_bytes, on_output) for s in Stream}
        started = time.monotonic()
        timer = None
        if timeout_s is not None:
            timer = threading.Timer(timeout_s, self._interrupt.set)
            timer.start()
        outcome = Outcome.EXITED
        try:
            code = self._handler(self, command, lambda s, b: buffers[s].feed(b))
        except _Stopped:
            code = 137
            outcome = Outcome.TIMED_OUT if self._running else Outcome.STOPPED
            self._interrupt.clear()
        finally:
            if timer is not None:
                timer.cancel()
        return ExecResult(
            exit_code=code,
            stdout=buffers[Stream.STDOUT].finish(),
            stderr=buffers[Stream.STDERR].finish(),
            outcome=outcome,
            stdout_truncated=buffers[Stream.STDOUT].truncated,
            stderr_truncated=buffers[Stream.STDERR].truncated,
            duration_s=time.monotonic() - started,
            timeout_s=timeout_s,
            memory_limit_mb=self.spec.limits.memory_mb,
        )

    def read_file(self, path: Path) -> bytes:
        self._require_running()
        try:
            return self._files[Path(path)]
        except KeyError:
            raise FileOperationFailed(f"{path}: no such file in the sandbox") from None

    def write_file(self, path: Path, data: bytes) -> None:
        self._require_running()
        path = Path(path)
        if not self._writable(path):
            raise FileOperationFailed(f"{path}: read-only in the sandbox")
        self._files[path] = bytes(data)

    def is_running(self) -> bool:
        return self._running and not self._stopped

    def stop(self) -> None:
        self._stopped = True
        self._running = False
        self._interrupt.set()

    def _writable(self, path: Path) -> bool:
        for mount in self.spec.mounts:
            if path.is_relative_to(mount.host):
                return not mount.read_only
        return any(path.is_relative_to(root) for root in WRITABLE_SCRATCH)

    def _require_running(self) -> None:
        if not self._running:
            raise SandboxNotRunning(f"sandbox {self._id} is not running; call start() first")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
