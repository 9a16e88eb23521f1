"""`dispatch sandbox run` and `dispatch sandbox prune` end to end, as a person runs them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker.errors
import pytest

from controller.cli.exit_codes import ExitCode
from sandbox import GrantRefused, Mount, SandboxNotRunning, SandboxSpec
from sandbox.docker import (
    LABEL,
    LABEL_HOST,
    LABEL_PID,
    LABEL_PID_START,
    DockerSandbox,
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


def test_run_keeps_git_read_only_unless_asked_and_sets_no_setuid_bit(
    docker_client: object, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    (project / ".git" / "hooks").mkdir(parents=True)
    for path in (project, project / ".git", project / ".git" / "hooks"):
        os.chown(path, 4321, 4321)
    hook = "touch made && echo evil > .git/hooks/pre-commit"
    done = dispatch("sandbox", "run", "--mount", f"{project}:rw", "--", "sh", "-c", hook)
    assert done.returncode != 0 and b"Read-only file system" in done.stderr
    assert (project / "made").exists() and not (project / ".git" / "hooks" / "pre-commit").exists()
    writable = dispatch(
        "sandbox", "run", "--git-writable", "--mount", f"{project}:rw", "--", "sh", "-c", hook
    )
    assert writable.returncode == 0, writable.stderr
    # A new repository is renamed aside, and the run fails naming it, unless --git-writable.
    planted = dispatch(
        "sandbox", "run", "--mount", f"{project}:rw", "--", "git", "init", "-q", "sub"
    )
    assert planted.returncode != 0 and str(project / "sub" / ".git").encode() in planted.stderr
    assert (project / "sub" / ".git.dispatch-quarantine-1").is_dir()
    kept = ("sandbox", "run", "--git-writable", "--mount", f"{project}:rw", "--")
    assert dispatch(*kept, "git", "init", "-q", "sub2").returncode == 0
    assert (project / "sub2" / ".git" / "HEAD").exists()
    setuid = dispatch("sandbox", "run", "--mount", f"{project}:rw", "--", "chmod", "4755", "made")
    assert setuid.returncode == 1 and b"Operation not permitted" in setuid.stderr
    assert (project / "made").stat().st_mode & 0o6000 == 0


def test_run_refuses_a_read_write_folder_its_owner_cannot_write(tmp_path: Path) -> None:
    project = tmp_path / "locked"
    project.mkdir(mode=0o500)
    os.chown(project, 4321, 4321)
    done = dispatch("sandbox", "run", "--mount", f"{project}:rw", "--", "true")
    assert done.returncode == ExitCode.GRANT_REFUSED
    assert b"mode 0500" in done.stderr and b"cannot write it" in done.stderr


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
    # The CLI's containers carry its pid; look for exactly those.
    process = subprocess.Popen(
        [*DISPATCH, "sandbox", "run", "--timeout", "1", "--", "sleep", "9"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    mine = {"label": [LABEL, f"{LABEL_PID}={process.pid}"]}
    deadline = time.monotonic() + 60
    while not docker_client.api.containers(all=True, filters=mine):
        assert process.poll() is None and time.monotonic() < deadline, "no sandbox was started"
        time.sleep(0.05)
    assert process.wait(timeout=60) == ExitCode.TIMED_OUT
    assert docker_client.api.containers(all=True, filters=mine) == []


def test_prune_removes_orphans_but_not_live_sandboxes(docker_client) -> None:  # type: ignore[no-untyped-def]
    # Every container here carries a label unique to this test, so pruning never touches the
    # sandboxes of a controller that happens to run on the same machine.
    mine = {"dispatch.test": uuid.uuid4().hex}
    dead = {**owner_labels(), **mine, LABEL_PID: "999999999", LABEL_PID_START: "1"}
    create = docker_client.containers.create
    orphan = create("dispatch/sandbox:latest", ["true"], labels=dead)
    reused_pid = create(
        "dispatch/sandbox:latest", ["true"], labels={**dead, LABEL_PID: str(os.getpid())}
    )
    live = create("dispatch/sandbox:latest", ["true"], labels={**owner_labels(), **mine})
    other_host = create(
        "dispatch/sandbox:latest", ["true"], labels={**dead, LABEL_HOST: "another-machine"}
    )
    try:
        removed = prune_orphans(docker_client, match=mine)
        assert sorted(removed) == sorted([orphan.name, reused_pid.name])
        assert prune_orphans(docker_client, match=mine) == []
        removed = prune_orphans(docker_client, everything=True, match=mine)
        assert sorted(removed) == sorted([live.name, other_host.name])
    finally:
        for container in (orphan, reused_pid, live, other_host):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


def test_prune_command_removes_an_orphan(docker_client) -> None:  # type: ignore[no-untyped-def]
    dead = {**owner_labels(), LABEL_PID: "999999999", LABEL_PID_START: "1"}
    orphan = docker_client.containers.create("dispatch/sandbox:latest", ["true"], labels=dead)
    done = dispatch("sandbox", "prune")
    assert done.returncode == 0
    assert f"removed {orphan.name}".encode() in done.stdout
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(orphan.id)


def test_stop_tolerates_a_sandbox_removed_by_someone_else(docker_client) -> None:  # type: ignore[no-untyped-def]
    box = DockerSandbox(SandboxSpec(), client=docker_client)
    box.start()
    docker_client.api.remove_container(box.id, force=True)
    box.stop()  # already gone: no error
    with pytest.raises(SandboxNotRunning):
        box.exec(["true"])


def test_help_documents_the_options() -> None:
    done = dispatch("sandbox", "run", "--help")
    assert done.returncode == 0
    for option in (b"--mount", b"--network", b"--timeout", b"--memory-mb", b"--workdir"):
        assert option in done.stdout


def test_the_configured_data_directory_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "dispatch-data"
    data.mkdir()
    (data / "owner-token").write_text("secret")
    done = dispatch(
        "sandbox",
        "run",
        "--mount",
        f"{data}:rw",
        "--",
        "cat",
        str(data / "owner-token"),
        env={"DISPATCH_DATA_DIR": str(data)},
    )
    assert done.returncode == ExitCode.GRANT_REFUSED
    assert b"secret" not in done.stdout
    config_dir = tmp_path / "elsewhere"
    config_dir.mkdir()
    done = dispatch(
        "sandbox",
        "run",
        "--mount",
        str(config_dir),
        "--",
        "true",
        env={"DISPATCH_CONFIG": str(config_dir / "config.toml")},
    )
    assert done.returncode == ExitCode.GRANT_REFUSED


def test_a_mount_inside_the_engine_data_root_is_refused(docker_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sandbox.docker import DockerSandbox, engine_root

    root = engine_root(docker_client.api)
    assert root is not None
    box = DockerSandbox(SandboxSpec(mounts=(Mount(root / "volumes"),)), client=docker_client)
    with pytest.raises(GrantRefused, match="Docker engine's data"):
        box.start()
