"""The Sandbox contract, run against every backend (the fake and the real Docker engine)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sandbox import (
    FileOperationFailed,
    Limits,
    Mount,
    Outcome,
    Sandbox,
    SandboxNotRunning,
    SandboxSpec,
    Stream,
    create,
)
from tests.sandbox.conftest import BACKENDS, MakeSandbox

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


def test_exec_returns_output_and_exit_code(backend: str, make_sandbox: MakeSandbox) -> None:
    box = make_sandbox(backend)
    ok = box.exec(["echo", "hello"])
    assert (ok.exit_code, ok.stdout, ok.outcome) == (0, b"hello\n", Outcome.EXITED)
    assert ok.ok
    failed = box.exec(["false"])
    assert failed.exit_code == 1 and not failed.ok


def test_exec_streams_output_to_callback(backend: str, make_sandbox: MakeSandbox) -> None:
    box = make_sandbox(backend)
    seen: list[tuple[Stream, bytes]] = []
    result = box.exec(["printf", "streamed"], on_output=lambda s, b: seen.append((s, b)))
    assert b"".join(b for s, b in seen if s is Stream.STDOUT) == b"streamed"
    assert result.stdout == b"streamed"


def test_timeout_kills_and_is_reported(backend: str, make_sandbox: MakeSandbox) -> None:
    box = make_sandbox(backend)
    result = box.exec(["sleep", "30"], timeout_s=0.5)
    assert result.outcome is Outcome.TIMED_OUT
    assert result.duration_s < 10
    assert "timed out after 0.5 s" in result.describe()
    # The sandbox is still usable after a timeout.
    assert box.exec(["echo", "alive"]).stdout == b"alive\n"


def test_output_beyond_cap_is_truncated_with_marker(
    backend: str, make_sandbox: MakeSandbox
) -> None:
    box = make_sandbox(backend)
    command = (
        ["yes-bytes", "300000"] if backend == "fake" else ["head", "-c", "300000", "/dev/zero"]
    )
    result = box.exec(command, output_cap_bytes=100_000)
    assert result.stdout_truncated
    assert result.stdout.startswith(b"y" * 10 if backend == "fake" else b"\0" * 10)
    assert b"[dispatch: stdout truncated after 100000 bytes; 200000 bytes dropped]" in result.stdout
    assert len(result.stdout) < 100_200


def test_files_round_trip_in_tmp(backend: str, make_sandbox: MakeSandbox) -> None:
    box = make_sandbox(backend)
    data = bytes(range(256)) * 10
    box.write_file(Path("/tmp/data.bin"), data)
    assert box.read_file(Path("/tmp/data.bin")) == data


def test_root_filesystem_refuses_writes(backend: str, make_sandbox: MakeSandbox) -> None:
    box = make_sandbox(backend)
    with pytest.raises(FileOperationFailed, match="/usr/evil"):
        box.write_file(Path("/usr/evil"), b"x")
    with pytest.raises(FileOperationFailed, match="missing"):
        box.read_file(Path("/tmp/missing"))


def test_read_only_mount_refuses_writes(
    backend: str, make_sandbox: MakeSandbox, workspace: Path
) -> None:
    box = make_sandbox(backend, SandboxSpec(mounts=(Mount(workspace, read_only=True),)))
    with pytest.raises(FileOperationFailed):
        box.write_file(workspace / "new.txt", b"x")
    assert not (workspace / "new.txt").exists()


def test_use_before_start_and_after_stop_is_an_error(
    backend: str, make_sandbox: MakeSandbox
) -> None:
    options = {"client": None} if backend == "docker" else {}
    fresh: Sandbox = create(backend, SandboxSpec(), **options)
    with pytest.raises(SandboxNotRunning, match="start"):
        fresh.exec(["true"])
    box = make_sandbox(backend)
    box.stop()
    box.stop()  # twice is fine
    with pytest.raises(SandboxNotRunning):
        box.exec(["true"])


def test_context_manager_stops(backend: str, request: pytest.FixtureRequest) -> None:
    options = {"client": request.getfixturevalue("docker_client")} if backend == "docker" else {}
    with create(backend, SandboxSpec(limits=Limits(memory_mb=256)), **options) as box:
        assert box.exec(["true"]).ok
    with pytest.raises(SandboxNotRunning):
        box.exec(["true"])


def test_a_stopped_sandbox_cannot_start_again(backend: str, make_sandbox: MakeSandbox) -> None:
    box = make_sandbox(backend)
    box.stop()
    with pytest.raises(SandboxNotRunning, match="create a new one"):
        box.start()


def test_stop_before_start_prevents_the_sandbox(
    backend: str, request: pytest.FixtureRequest
) -> None:
    options = {"client": request.getfixturevalue("docker_client")} if backend == "docker" else {}
    box = create(backend, SandboxSpec(), **options)
    box.stop()  # e.g. a task cancelled between being claimed and its sandbox starting
    with pytest.raises(SandboxNotRunning):
        box.start()


def test_stop_from_another_thread_ends_a_running_command(
    backend: str, make_sandbox: MakeSandbox
) -> None:
    box = make_sandbox(backend)
    stopper = threading.Timer(0.5, box.stop)
    stopper.start()
    result = box.exec(["sleep", "30"])
    stopper.join()
    assert result.outcome is Outcome.STOPPED
    assert result.duration_s < 10
