"""Hostile tests against real libvirt and QEMU: what a command in a VM sandbox cannot do.

Most share one VM (restored from the saved state) with a read-only and a read-write grant:
starting a VM under emulation costs seconds, and none of these changes what the next sees.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import GrantRefused, Outcome, Sandbox, SandboxSpec, create
from sandbox.mounts import validate_mount
from tests.sandbox.conftest import OWNER

pytestmark = pytest.mark.libvirt


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def _folder(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chown(path, *OWNER)
    return path


@pytest.fixture(scope="module")
def folders() -> Iterator[tuple[Path, Path, Path]]:
    """A read-only grant, a read-write grant, and a host folder granted to nobody."""
    made = (_folder("dispatch-ro-"), _folder("dispatch-rw-"), Path(tempfile.mkdtemp()))
    (made[0] / "keep.txt").write_text("original")
    (made[2] / "secret.txt").write_text("host secret")
    (made[0] / "link").symlink_to(made[2] / "secret.txt")
    (made[0] / "dirlink").symlink_to(made[2])
    yield made
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def vm(folders: tuple[Path, Path, Path]) -> Iterator[Sandbox]:
    read_only, writable, _ = folders
    spec = SandboxSpec(
        mounts=(validate_mount(read_only), validate_mount(writable, read_only=False))
    )
    box = create("libvirt", spec)
    box.start()
    print(f"started libvirt sandbox {box.id} ({getattr(box, 'virt', '?')})")
    yield box
    box.stop()


def test_write_to_read_only_grant_fails_and_host_file_is_unchanged(
    vm: Sandbox, folders: tuple[Path, Path, Path]
) -> None:
    read_only = folders[0]
    result = vm.exec(sh(f"echo changed > {read_only}/keep.txt; rm -f {read_only}/keep.txt"))
    assert result.exit_code != 0
    assert b"Read-only file system" in result.stderr
    assert (read_only / "keep.txt").read_text() == "original"


def test_write_to_read_write_grant_is_owned_by_folder_owner(
    vm: Sandbox, folders: tuple[Path, Path, Path]
) -> None:
    writable = folders[1]
    result = vm.exec(sh(f"mkdir {writable}/out && echo made > {writable}/out/file.txt"))
    assert result.ok, result.stderr
    created = writable / "out" / "file.txt"
    assert created.read_text() == "made\n"
    assert (created.stat().st_uid, created.stat().st_gid) == OWNER
    assert (created.parent.stat().st_uid, created.parent.stat().st_gid) == OWNER


def test_symlink_inside_grant_does_not_reveal_host_file(
    vm: Sandbox, folders: tuple[Path, Path, Path]
) -> None:
    read_only = folders[0]
    for path in (read_only / "link", read_only / "dirlink" / "secret.txt"):
        result = vm.exec(["cat", str(path)])
        assert result.exit_code != 0
        assert b"host secret" not in result.stdout


def test_writes_outside_tmp_and_home_fail(vm: Sandbox) -> None:
    for target in ("/etc/x", "/usr/x", "/x", "/root/x"):
        assert vm.exec(sh(f"echo x > {target}")).exit_code != 0, target
    assert vm.exec(sh("echo ok > /tmp/x && echo ok > $HOME/x && cat /tmp/x $HOME/x")).stdout == (
        b"ok\nok\n"
    )


def test_not_root_and_not_the_host_kernel(vm: Sandbox) -> None:
    assert vm.exec(["id", "-u"]).stdout.strip() not in (b"0", b"")
    assert "NoNewPrivs:\t1" in vm.exec(["cat", "/proc/self/status"]).stdout.decode()
    guest_kernel = vm.exec(["uname", "-r"]).stdout.strip().decode()
    assert guest_kernel and guest_kernel != platform.release()
    # The guest's processes are all the guest has: no host process is visible.
    assert str(os.getpid()) not in vm.exec(sh("ls /proc")).stdout.decode().split()


def test_no_network_by_default(vm: Sandbox) -> None:
    result = vm.exec(sh("ls /sys/class/net"))
    assert result.stdout.split() == [b"lo"]
    probe = vm.exec(
        ["python3", "-c", "import socket; socket.create_connection(('1.1.1.1', 53), 3)"]
    )
    assert probe.exit_code != 0
    assert b"Network is unreachable" in probe.stderr


def test_command_ignoring_sigterm_is_gone_after_timeout(vm: Sandbox) -> None:
    stubborn = "trap '' TERM; (setsid sh -c \"trap '' TERM; exec sleep 300\" &); exec sleep 300"
    result = vm.exec(sh(stubborn), timeout_s=2)
    assert result.outcome is Outcome.TIMED_OUT
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        procs = vm.exec(["ps", "-e", "-o", "comm="]).stdout.split()
        if b"sleep" not in procs:
            break
    assert b"sleep" not in procs


def test_ten_mib_of_output_is_capped(vm: Sandbox) -> None:
    chunks: list[bytes] = []
    result = vm.exec(
        sh("head -c 10485760 /dev/zero | tr '\\0' a"), on_output=lambda s, b: chunks.append(b)
    )
    assert result.exit_code == 0
    assert result.stdout_truncated
    assert result.stdout.startswith(b"a" * 1024 * 1024 + b"\n[dispatch: stdout truncated")
    assert b"9437184 bytes dropped" in result.stdout
    assert sum(len(c) for c in chunks) < 1024 * 1024 + 200


def test_memory_bomb_is_reported_as_out_of_memory(vm: Sandbox) -> None:
    result = vm.exec(["python3", "-c", "x = []\nwhile True: x.append(bytearray(10**7))"])
    assert result.outcome is Outcome.OUT_OF_MEMORY
    assert result.describe() == "killed: out of memory, limit 512 MiB"
    assert vm.exec(["echo", "after"]).stdout == b"after\n"


def test_fork_bomb_is_contained_by_pids_limit(vm: Sandbox) -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = vm.exec(["python3", "-c", bomb], timeout_s=5)
    assert result.outcome is Outcome.TIMED_OUT
    assert vm.exec(["echo", "after"]).stdout == b"after\n"


def test_symlink_swapped_in_after_validation_is_caught_before_anything_runs(
    tmp_path: Path,
) -> None:
    import libvirt

    workspace = _folder("dispatch-swap-")
    grant = workspace / "sub"
    grant.mkdir()
    os.chown(grant, *OWNER)
    mount = validate_mount(grant, read_only=False)
    elsewhere = tmp_path / "secret-place"
    elsewhere.mkdir()
    grant.rename(workspace / "moved")
    grant.symlink_to(elsewhere)
    conn = libvirt.open("qemu:///system")
    before = set(conn.listDomainsID())
    try:
        with pytest.raises(GrantRefused, match="not the folder that was checked"):
            create("libvirt", SandboxSpec(mounts=(mount,), user=OWNER)).start()
        assert set(conn.listDomainsID()) <= before
    finally:
        conn.close()
        shutil.rmtree(workspace, ignore_errors=True)


CRASHER = """
import sys, time
from sandbox import create, SandboxSpec
box = create("libvirt", SandboxSpec())
box.start()
print(box.id, flush=True)
time.sleep(600)
"""


def test_killed_controller_leaves_nothing_after_prune() -> None:
    import libvirt

    from sandbox.libvirt import prune_orphans
    from sandbox.vm.image import default_vm_dir

    crasher = subprocess.Popen(
        [sys.executable, "-c", CRASHER], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    try:
        assert crasher.stdout is not None
        name = crasher.stdout.readline().strip()
        assert name.startswith("dispatch-"), name
    finally:
        crasher.kill()
        crasher.wait()
    conn = libvirt.open("qemu:///system")
    try:
        assert name in {d.name() for d in conn.listAllDomains()}
        assert name in prune_orphans(conn)
        assert name not in {d.name() for d in conn.listAllDomains()}
    finally:
        conn.close()
    assert not (default_vm_dir() / "run" / name).exists()


def test_cli_runs_a_command_in_a_vm_with_a_read_write_grant() -> None:
    project = _folder("dispatch-cli-")
    script = "pwd; uname -r; touch made; echo err >&2; exit 7"
    done = subprocess.run(
        [sys.executable, "-m", "controller", "sandbox", "run", "--backend", "libvirt",
         "--mount", f"{project}:rw", "--timeout", "60", "--", "sh", "-c", script],
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 7, done.stderr
    where, kernel = done.stdout.decode().split()
    assert where == str(project) and kernel != platform.release()
    assert done.stderr == b"err\n"
    assert (project / "made").stat().st_uid == OWNER[0]
    shutil.rmtree(project)


def test_grant_its_owner_cannot_reach_is_refused_with_the_fix(tmp_path: Path) -> None:
    # pytest's tmp_path lies in a folder only root may enter; QEMU runs as the owner.
    project = tmp_path / "project"
    project.mkdir()
    os.chown(project, *OWNER)
    box = create("libvirt", SandboxSpec(mounts=(validate_mount(project, read_only=False),)))
    with pytest.raises(GrantRefused, match=r"cannot enter .*chmod o\+x"):
        box.start()


def test_a_vm_stops_itself_at_its_deadline() -> None:
    import libvirt

    box = create("libvirt", SandboxSpec(deadline_s=20))
    try:
        box.start()
        result = box.exec(["sleep", "300"])
        assert result.outcome is Outcome.TIMED_OUT
        assert "timed out after 20 s" in result.describe()
        conn = libvirt.open("qemu:///system")
        try:
            deadline = time.monotonic() + 30
            active = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
            while box.id in {d.name() for d in conn.listAllDomains(active)}:
                assert time.monotonic() < deadline, f"{box.id} still runs after its deadline"
                time.sleep(0.2)
        finally:
            conn.close()
    finally:
        box.stop()
