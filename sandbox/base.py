"""The `Sandbox` protocol and the plain values that cross it."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

MIB = 1024 * 1024
# The sandbox's own writable scratch space (tmpfs): a grant here would be hidden by it.
SCRATCH_PATHS = (Path("/tmp"), Path("/home/sandbox"))
DEFAULT_IMAGE = "dispatch/sandbox:latest"
DEFAULT_OUTPUT_CAP_BYTES = 1 * MIB
# How long after a task's timeout its sandbox's own deadline falls: room for a slow start, and
# for the controller's timeout (which reports what happened) to act first.
DEADLINE_GRACE_S = 30.0


class Stream(enum.Enum):
    STDOUT = "stdout"
    STDERR = "stderr"


class Network(enum.Enum):
    NONE = "none"
    # Only the domains of `SandboxSpec.allow`, through a filtering proxy (sandbox/egress/).
    ALLOWLIST = "allowlist"
    OPEN = "open"


@dataclass(frozen=True)
class Mount:
    """A host folder visible in the sandbox at the same absolute path."""

    host: Path
    read_only: bool = True
    # (st_dev, st_ino) of the folder when it was validated; a backend checks that what it
    # mounted is this very folder, so a symlink swapped in after validation is caught.
    identity: tuple[int, int] | None = field(default=None, compare=False)

    @property
    def mode(self) -> str:
        return "ro" if self.read_only else "rw"


@dataclass(frozen=True)
class Limits:
    """Resource limits; every field is enforced by the backend."""

    memory_mb: int = 512
    cpus: float = 1.0
    pids: int = 256
    tmp_mb: int = 256
    home_mb: int = 64


@dataclass(frozen=True)
class SandboxSpec:
    """Everything a backend needs to create one sandbox."""

    image: str = DEFAULT_IMAGE
    mounts: tuple[Mount, ...] = ()
    network: Network = Network.NONE
    limits: Limits = field(default_factory=Limits)
    workdir: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    # uid:gid the processes run as; None lets the backend choose (never 0).
    user: tuple[int, int] | None = None
    # Seconds after start when the sandbox ends every process and stops by itself, even with
    # no controller left to stop it; None: it lives until stop().
    deadline_s: float | None = None
    # Folders where the task may make git repositories (grants with git_writable): elsewhere in
    # a read-write folder, a repository that was not there at the start is renamed aside.
    git_writable: tuple[Path, ...] = ()
    # Folders inside those where git is protected again (the deepest grant decides): searched
    # for new repositories all the same.
    git_protected: tuple[Path, ...] = ()
    # Network ALLOWLIST: the domains (`example.com`, `*.example.com`, either with `:port`) the
    # sandbox may reach, and names mapped to addresses the owner allows (like curl --resolve).
    allow: tuple[str, ...] = ()
    resolve: Mapping[str, str] = field(default_factory=dict)


class Outcome(enum.Enum):
    EXITED = "exited"
    TIMED_OUT = "timed_out"
    OUT_OF_MEMORY = "out_of_memory"
    # stop() was called (e.g. the task was cancelled) while the command ran.
    STOPPED = "stopped"


@dataclass(frozen=True)
class ExecResult:
    """What one command did. Timeouts and OOM kills are results, not exceptions."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    outcome: Outcome = Outcome.EXITED
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_s: float = 0.0
    timeout_s: float | None = None
    memory_limit_mb: int | None = None
    # Files in read-write folders that gained a setuid/setgid bit while the command ran; the
    # bits were removed. Never expected (the sandbox refuses to set them): a run with any fails.
    setid_stripped: tuple[Path, ...] = ()
    # Git repositories the command made where git is protected, renamed aside
    # (sandbox/host/gitplant.py).
    git_quarantined: tuple[Path, ...] = ()

    @property
    def ok(self) -> bool:
        return (
            self.outcome is Outcome.EXITED
            and self.exit_code == 0
            and not self.setid_stripped
            and not self.git_quarantined
        )

    def describe(self) -> str:
        """One line a person can read: how the command ended."""
        text = self._ended()
        if self.setid_stripped:
            text += (
                f", but it left setuid/setgid files in a read-write folder "
                f"({_listed(self.setid_stripped)}); Dispatch removed the bits (the "
                "controller's log names any it could not); check what else the command changed"
            )
        if self.git_quarantined:
            text += (
                f"{' and' if self.setid_stripped else ', but'} it made git repositories where "
                f"git is protected ({_listed(self.git_quarantined)}), whose hooks or config "
                "would run on the host; Dispatch renamed each aside (its HEAD to "
                "HEAD.dispatch-quarantine-N, a .git to .git.dispatch-quarantine-N): check "
                "them before renaming them back, or grant git_writable = true"
            )
        return text

    def _ended(self) -> str:
        if self.outcome is Outcome.TIMED_OUT:
            return f"killed: timed out after {self.timeout_s:g} s (whole process tree stopped)"
        if self.outcome is Outcome.STOPPED:
            return "killed: the sandbox was stopped while the command ran"
        if self.outcome is Outcome.OUT_OF_MEMORY:
            return f"killed: out of memory, limit {self.memory_limit_mb} MiB"
        if self.exit_code < 0 or self.exit_code > 128:
            return f"exited with status {self.exit_code} (killed by signal {self.exit_code - 128})"
        return f"exited with status {self.exit_code}"


OutputCallback = Callable[[Stream, bytes], None]


@runtime_checkable
class Sandbox(Protocol):
    """An isolated place to run commands that sees only the granted folders."""

    @property
    def id(self) -> str: ...

    def start(self) -> None:
        """Create and start the sandbox. Raises EngineUnavailable, ImageMissing."""

    def exec(
        self,
        command: Sequence[str],
        *,
        timeout_s: float | None = None,
        on_output: OutputCallback | None = None,
        workdir: Path | None = None,
        output_cap_bytes: int = DEFAULT_OUTPUT_CAP_BYTES,
    ) -> ExecResult:
        """Run `command`, streaming output to `on_output`; a timeout kills every process."""

    def read_file(self, path: Path) -> bytes:
        """Return the bytes of a file inside the sandbox."""

    def write_file(self, path: Path, data: bytes) -> None:
        """Write a file inside the sandbox (subject to its mounts and read-only root)."""

    def stop(self) -> None:
        """Stop and remove the sandbox; safe to call twice."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class Process(Protocol):
    """A long-running command in a sandbox, its stdin and stdout as byte streams."""

    def write(self, data: bytes) -> None:
        """Send bytes to the command's stdin. Raises SandboxError when it is gone."""

    def read_exactly(self, size: int) -> bytes:
        """Read exactly `size` bytes of stdout. Raises SandboxError at end of stream."""

    def read_line(self, limit: int = 65536) -> bytes:
        """Read stdout up to and including a newline (at most `limit` bytes)."""

    def close(self) -> None:
        """Close the streams; the command sees end of input."""


@runtime_checkable
class Spawner(Protocol):
    """A sandbox that can keep a command running and talk to it (the Docker backend can)."""

    def spawn(self, command: Sequence[str], *, user: tuple[int, int] | None = None) -> Process:
        """Start `command` with its stdin and stdout connected to the returned `Process`.

        `user` (uid, gid) runs it as someone other than the sandbox user (never root).
        """


TRUNCATION_MARKER = "\n[dispatch: {stream} truncated after {cap} bytes; {dropped} bytes dropped]\n"


class OutputBuffer:
    """Keeps at most `cap` bytes of one stream and counts the rest."""

    def __init__(self, stream: Stream, cap: int, on_output: OutputCallback | None) -> None:
        self._stream = stream
        self._cap = cap
        self._on_output = on_output
        self._chunks: list[bytes] = []
        self._kept = 0
        self.dropped = 0

    def feed(self, data: bytes) -> None:
        room = self._cap - self._kept
        if room > 0:
            kept = data[:room]
            self._chunks.append(kept)
            self._kept += len(kept)
            if self._on_output is not None:
                self._on_output(self._stream, kept)
        self.dropped += max(0, len(data) - max(room, 0))

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def finish(self) -> bytes:
        """Return what was kept, with a marker (also streamed) if anything was dropped."""
        body = b"".join(self._chunks)
        if not self.truncated:
            return body
        marker = TRUNCATION_MARKER.format(
            stream=self._stream.value, cap=self._cap, dropped=self.dropped
        ).encode()
        if self._on_output is not None:
            self._on_output(self._stream, marker)
        return body + marker


def _listed(paths: tuple[Path, ...]) -> str:
    more = len(paths) - 5
    return ", ".join(str(p) for p in paths[:5]) + (f" and {more} more" if more > 0 else "")
