"""`dispatch sandbox run` and `dispatch sandbox prune` end to end, as a person runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller.exit_codes import ExitCode
from sandbox.docker import (
    LABEL,
    LABEL_HOST,
    LABEL_PID,
    LABEL_PID_START,
    owner_labels,
    prune_orphans,
)

pytestmark = pytest.mark.docker
DISPATCH = [sys.executable, "-m", "controller"]


def dispatch(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*DISPATCH, *args], capture_output=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_run_streams_output_and_passes_exit_code(docker_client: object) -> None:
    done = dispatch("sandbox", "run", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert done.returncode == 7
    assert done.stdout == b"out\n"
    assert done.stderr == b"err\n"


def test_run_with_read_write_mount_and_workdir(docker_client: object, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    os.chown(project, 4321, 4321)
    done = dispatch(
        "sandbox", "run", "--mount", f"{project}:rw", "--", "sh", "-c", "pwd; touch made"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{project}\n".encode()
    assert (project / "made").stat().st_uid == 4321


def test_timeout_and_oom_have_distinct_codes_and_messages(docker_client: object) -> None:
    timed = dispatch("sandbox", "run", "--timeout", "1", "--", "sleep", "60")
    assert timed.returncode == ExitCode.TIMED_OUT
    assert b"killed: timed out after 1 s" in timed.stderr
    oom = dispatch("sandbox", "run", "--memory-mb", "64", "--", "python3", "-c", "b'x' * 10**9")
    assert oom.returncode == ExitCode.OUT_OF_MEMORY
    assert b"killed: out of memory, limit 64 MiB" in oom.stderr


def test_refused_mount_names_the_folder_and_runs_nothing(tmp_path: Path) -> None:
    (tmp_path / "etc-link").symlink_to("/etc")
    done = dispatch("sandbox", "run", "--mount", str(tmp_path / "etc-link"), "--", "true")
    assert done.returncode == ExitCode.GRANT_REFUSED
    assert b"resolves to /etc" in done.stderr and b"sensitive" in done.stderr


def test_unreachable_engine_says_how_to_start_it() -> None:
    done = dispatch("sandbox", "run", "--", "true", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert done.returncode == ExitCode.ENGINE_UNAVAILABLE
    assert b"systemctl start docker" in done.stderr


def test_missing_image_says_how_to_build_it(docker_client: object) -> None:
    done = dispatch("sandbox", "run", "--image", "dispatch/not-built:nope", "--", "true")
    assert done.returncode == ExitCode.IMAGE_MISSING
    assert b"dispatch images build" in done.stderr


def test_open_network_warns(docker_client: object) -> None:
    done = dispatch("sandbox", "run", "--network", "open", "--", "true")
    assert done.returncode == 0
    assert b"warning: --network open" in done.stderr


def test_run_leaves_no_container_behind(docker_client) -> None:  # type: ignore[no-untyped-def]
    before = {c.id for c in docker_client.containers.list(all=True, filters={"label": LABEL})}
    assert dispatch("sandbox", "run", "--timeout", "1", "--", "sleep", "9").returncode == 124
    after = {c.id for c in docker_client.containers.list(all=True, filters={"label": LABEL})}
    assert after <= before


def test_prune_removes_orphans_but_not_live_sandboxes(docker_client) -> None:  # type: ignore[no-untyped-def]
    dead = {**owner_labels(), LABEL_PID: "999999999", LABEL_PID_START: "1"}
    orphan = docker_client.containers.create("dispatch/sandbox:latest", ["true"], labels=dead)
    live = docker_client.containers.create(
        "dispatch/sandbox:latest", ["true"], labels=owner_labels()
    )
    other_host = docker_client.containers.create(
        "dispatch/sandbox:latest", ["true"], labels={**dead, LABEL_HOST: "another-machine"}
    )
    try:
        removed = prune_orphans(docker_client)
        assert orphan.name in removed
        assert live.name not in removed and other_host.name not in removed
        done = dispatch("sandbox", "prune", "--all")
        assert done.returncode == 0
        assert f"removed {live.name}".encode() in done.stdout
    finally:
        for container in (orphan, live, other_host):
            try:
                container.remove(force=True)
            except Exception:
                print(f"container {container.name} was already removed")


def test_help_documents_the_options() -> None:
    done = dispatch("sandbox", "run", "--help")
    assert done.returncode == 0
    for option in (b"--mount", b"--network", b"--timeout", b"--memory-mb", b"--workdir"):
        assert option in done.stdout
