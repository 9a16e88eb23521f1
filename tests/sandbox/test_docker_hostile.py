"""Hostile tests against the real Docker engine: what a misbehaving command can and cannot do."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sandbox import GrantRefused, Limits, Mount, Outcome, SandboxError, SandboxSpec
from sandbox.mounts import folder_identity, validate_mount
from sandbox.seccomp import profile_json
from tests.sandbox.conftest import OWNER, MakeSandbox

pytestmark = pytest.mark.docker


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def test_write_to_read_only_grant_fails_and_host_file_is_unchanged(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    (workspace / "keep.txt").write_text("original")
    box = make_sandbox("docker", SandboxSpec(mounts=(validate_mount(workspace),)))
    result = box.exec(sh(f"echo changed > {workspace}/keep.txt; rm -f {workspace}/keep.txt"))
    assert result.exit_code != 0
    assert b"Read-only file system" in result.stderr
    assert (workspace / "keep.txt").read_text() == "original"


def test_write_to_read_write_grant_is_owned_by_folder_owner(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    box = make_sandbox("docker", SandboxSpec(mounts=(validate_mount(workspace, read_only=False),)))
    result = box.exec(sh(f"mkdir {workspace}/out && echo made > {workspace}/out/file.txt"))
    assert result.ok, result.stderr
    created = workspace / "out" / "file.txt"
    assert created.read_text() == "made\n"
    assert (created.stat().st_uid, created.stat().st_gid) == OWNER
    assert (created.parent.stat().st_uid, created.parent.stat().st_gid) == OWNER


def test_grant_is_mounted_at_same_absolute_path(make_sandbox: MakeSandbox, workspace: Path) -> None:
    (workspace / "marker").write_text("here")
    box = make_sandbox("docker", SandboxSpec(mounts=(validate_mount(workspace),)))
    assert box.exec(["cat", str(workspace / "marker")]).stdout == b"here"


def test_writes_outside_tmp_and_home_fail(make_sandbox: MakeSandbox) -> None:
    box = make_sandbox("docker")
    for target in ("/etc/x", "/usr/x", "/var/x", "/opt/x", "/x", "/root/x"):
        result = box.exec(sh(f"echo x > {target}"))
        assert result.exit_code != 0, target
    assert box.exec(sh("echo ok > /tmp/x && echo ok > $HOME/x && cat /tmp/x $HOME/x")).stdout == (
        b"ok\nok\n"
    )


def test_symlink_inside_grant_does_not_reveal_host_file(
    make_sandbox: MakeSandbox, workspace: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    (workspace / "link").symlink_to(secret)
    (workspace / "dirlink").symlink_to(tmp_path)
    box = make_sandbox("docker", SandboxSpec(mounts=(validate_mount(workspace),)))
    for path in (workspace / "link", workspace / "dirlink" / "secret.txt"):
        result = box.exec(["cat", str(path)])
        assert result.exit_code != 0
        assert b"host secret" not in result.stdout


def test_docker_socket_is_absent(make_sandbox: MakeSandbox) -> None:
    box = make_sandbox("docker")
    for path in ("/var/run/docker.sock", "/run/docker.sock"):
        assert box.exec(["test", "-e", path]).exit_code == 1, path
    found = box.exec(sh("find / -name 'docker.sock' -o -name 'containerd.sock' 2>/dev/null"))
    assert found.stdout == b""


def test_no_network_by_default(make_sandbox: MakeSandbox) -> None:
    box = make_sandbox("docker")
    result = box.exec(sh("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '"))
    assert result.stdout.split() == [b"lo"]
    probe = box.exec(
        ["python3", "-c", "import socket; socket.create_connection(('1.1.1.1', 53), 3)"]
    )
    assert probe.exit_code != 0
    assert b"Network is unreachable" in probe.stderr


def test_never_uid_zero_and_no_capabilities(make_sandbox: MakeSandbox) -> None:
    box = make_sandbox("docker")
    assert box.exec(["id", "-u"]).stdout.strip() != b"0"
    status = box.exec(["cat", "/proc/self/status"]).stdout.decode()
    caps = {
        line.split(":")[0]: line.split()[1]
        for line in status.splitlines()
        if line.startswith("Cap")
    }
    assert set(caps.values()) == {"0000000000000000"}
    assert "NoNewPrivs:\t1" in status
    # setuid binaries cannot raise privileges either.
    assert box.exec(sh("su -c id root </dev/null")).exit_code != 0


def test_fork_bomb_is_contained_by_pids_limit(make_sandbox: MakeSandbox, docker_client) -> None:  # type: ignore[no-untyped-def]
    box = make_sandbox("docker", SandboxSpec(limits=Limits(pids=64)))
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            stats = docker_client.api.stats(box.id, stream=False)
            peak = max(peak, stats.get("pids_stats", {}).get("current", 0))

    watcher = threading.Thread(target=watch)
    watcher.start()
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    try:
        result = box.exec(["python3", "-c", bomb], timeout_s=4)
    finally:
        done.set()
        watcher.join()
    assert result.outcome is Outcome.TIMED_OUT
    # The bomb reached the limit and no further. Processes the engine attaches for `docker exec`
    # (our own stats and kill helpers) may sit above it: the kernel only limits fork().
    assert 56 <= peak <= 64 + 8
    # The host is fine and so is the sandbox: both run new processes.
    assert subprocess.run(["true"], check=False).returncode == 0
    assert box.exec(["echo", "after"]).stdout == b"after\n"


def test_memory_bomb_is_reported_as_out_of_memory(make_sandbox: MakeSandbox) -> None:
    box = make_sandbox("docker", SandboxSpec(limits=Limits(memory_mb=64)))
    result = box.exec(["python3", "-c", "x = []\nwhile True: x.append(bytearray(10**7))"])
    assert result.outcome is Outcome.OUT_OF_MEMORY
    assert result.describe() == "killed: out of memory, limit 64 MiB"
    # A later ordinary failure is not mistaken for another OOM.
    assert box.exec(sh("kill -9 $$")).outcome is Outcome.EXITED


def test_command_ignoring_sigterm_is_gone_after_timeout(make_sandbox: MakeSandbox) -> None:
    box = make_sandbox("docker")
    stubborn = "trap '' TERM; (setsid sh -c \"trap '' TERM; exec sleep 300\" &); exec sleep 300"
    started = time.monotonic()
    result = box.exec(sh(stubborn), timeout_s=1)
    assert result.outcome is Outcome.TIMED_OUT
    assert time.monotonic() - started < 15
    # Poll: the escaped daemon is gone too, only PID 1 and ps remain.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        procs = box.exec(["ps", "-e", "-o", "comm="]).stdout.split()
        if b"sleep" not in procs:
            break
        time.sleep(0.1)
    assert b"sleep" not in procs


def test_ten_mib_of_output_is_capped(make_sandbox: MakeSandbox) -> None:
    box = make_sandbox("docker")
    chunks: list[bytes] = []
    result = box.exec(
        sh("head -c 10485760 /dev/zero | tr '\\0' a"), on_output=lambda s, b: chunks.append(b)
    )
    assert result.exit_code == 0
    assert result.stdout_truncated
    assert result.stdout.startswith(b"a" * 1024 * 1024 + b"\n[dispatch: stdout truncated")
    assert b"9437184 bytes dropped" in result.stdout
    assert sum(len(c) for c in chunks) < 1024 * 1024 + 200


def test_non_utf8_output_survives(make_sandbox: MakeSandbox) -> None:
    box = make_sandbox("docker")
    result = box.exec(["printf", "\\377\\376ok\\200"])
    assert result.stdout == b"\xff\xfeok\x80"


def test_hardening_is_visible_in_docker_inspect(make_sandbox: MakeSandbox, docker_client) -> None:  # type: ignore[no-untyped-def]
    box = make_sandbox("docker", SandboxSpec(limits=Limits(memory_mb=300, cpus=0.5, pids=99)))
    info = docker_client.api.inspect_container(box.id)
    host = info["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges:true", "seccomp=" + profile_json()]
    assert host["ReadonlyRootfs"] is True
    assert host["PidsLimit"] == 99
    assert host["Memory"] == 300 * 1024 * 1024
    assert host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 500_000_000
    assert host["NetworkMode"] == "none"
    assert "size=256m" in host["Tmpfs"]["/tmp"]
    assert "size=64m" in host["Tmpfs"]["/home/sandbox"]
    assert not host["Privileged"]
    assert info["Config"]["User"] != "0:0" and not info["Config"]["User"].startswith("0:")
    assert info["Config"]["Labels"]["dispatch.sandbox"] == "1"
    assert info["Config"]["Labels"]["dispatch.pid"] == str(os.getpid())
    assert not any("docker.sock" in m["Source"] for m in info["Mounts"])


def test_mounts_carry_their_mode(
    make_sandbox: MakeSandbox, docker_client, workspace: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    spec = SandboxSpec(mounts=(Mount(workspace, read_only=False), Mount(tmp_path, read_only=True)))
    box = make_sandbox("docker", spec)
    mounts = {m["Destination"]: m for m in docker_client.api.inspect_container(box.id)["Mounts"]}
    assert mounts[str(workspace)]["RW"] is True and mounts[str(workspace)]["Source"] == str(
        workspace
    )
    assert mounts[str(tmp_path)]["RW"] is False


def test_folder_with_colon_in_name_is_mounted_not_misparsed(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    odd = workspace / "a:b:rw"
    odd.mkdir()
    os.chown(odd, *OWNER)
    box = make_sandbox("docker", SandboxSpec(mounts=(validate_mount(odd),)))
    assert box.exec(["ls", "-d", str(odd)]).ok
    assert box.exec(sh(f"touch '{odd}/x'")).exit_code != 0  # still read-only


def test_grant_removed_after_validation_is_not_recreated(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    gone = workspace / "gone"
    gone.mkdir()
    mount = validate_mount(gone, read_only=False)
    gone.rmdir()
    with pytest.raises(SandboxError, match="could not start"):
        make_sandbox("docker", SandboxSpec(mounts=(mount,), user=OWNER))
    assert not gone.exists()


def test_symlink_swapped_in_after_validation_is_caught_before_anything_runs(
    make_sandbox: MakeSandbox,
    docker_client,
    workspace: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    # The race a hostile task can run from another sandbox: the path is a real folder when it
    # is checked and a symlink to somewhere else when the engine mounts it.
    grant = workspace / "sub"
    grant.mkdir()
    os.chown(grant, *OWNER)
    mount = validate_mount(grant, read_only=False)
    elsewhere = tmp_path / "secret-place"
    elsewhere.mkdir()
    (elsewhere / "secret.txt").write_text("not yours")
    grant.rename(workspace / "moved")
    grant.symlink_to(elsewhere)
    before = {c["Id"] for c in docker_client.api.containers(all=True)}
    with pytest.raises(GrantRefused, match="not the folder that was checked"):
        make_sandbox("docker", SandboxSpec(mounts=(mount,), user=OWNER))
    assert {c["Id"] for c in docker_client.api.containers(all=True)} <= before


def test_identity_walk_refuses_a_path_that_became_a_symlink(
    workspace: Path, tmp_path: Path
) -> None:
    (workspace / "real").mkdir()
    (workspace / "link").symlink_to(tmp_path)
    assert folder_identity(workspace / "real") == (
        (workspace / "real").stat().st_dev,
        (workspace / "real").stat().st_ino,
    )
    with pytest.raises(GrantRefused, match="changed while it was being checked"):
        folder_identity(workspace / "link")


def test_killing_pid_1_from_inside_does_not_end_the_sandbox(make_sandbox: MakeSandbox) -> None:
    box = make_sandbox("docker")
    for signal in ("TERM", "INT", "HUP", "KILL"):
        box.exec(sh(f"kill -{signal} 1"))
    assert box.exec(["echo", "still here"]).stdout == b"still here\n"
