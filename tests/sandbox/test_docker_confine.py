"""Hostile tests of what a task could leave on the host, and of the sandbox's own deadline.

Setuid/setgid: the first lines are the engine's seccomp profile and the `confine` filter inside
the sandbox, the last the host-side search after each command. The deadline: a sandbox whose
controller is gone stops at its deadline all by itself.
"""

from __future__ import annotations

import os
import platform
import stat
import threading
import time
from pathlib import Path

import docker.errors
import pytest

from sandbox import ExecResult, GrantRefused, ImageMissing, Outcome, Sandbox, SandboxSpec
from sandbox.docker import DEADLINE_EXIT, DockerSandbox
from sandbox.mounts import git_mounts, validate_mount
from sandbox.seccomp import BASE_PROFILE
from tests.sandbox.conftest import MakeSandbox

pytestmark = pytest.mark.docker

SETID = stat.S_ISUID | stat.S_ISGID
PY_OPEN = "import os, sys; os.close(os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o4755))"
PY_FCHMOD = "import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fchmod(fd, 0o6755)"
PY_MKNOD = "import os, stat, sys; os.mknod(sys.argv[1], stat.S_IFREG | 0o4755)"
# An unnamed file in the folder, which `linkat` could later give a name.
PY_TMPFILE = (
    "import os, sys; os.open(os.path.dirname(sys.argv[1]), os.O_TMPFILE | os.O_WRONLY, 0o4755)"
)
# Each writes a setuid/setgid file at its last argument, when nothing stops it.
ATTEMPTS = {
    "chmod 4755": ["chmod", "4755"],
    "chmod g+s": ["chmod", "g+s"],
    "install -m 6755": ["install", "-m", "6755", "/bin/true"],
    "open O_CREAT 04755": ["python3", "-c", PY_OPEN],
    "fchmod 06755": ["python3", "-c", PY_FCHMOD],
    "mknod 04755": ["python3", "-c", PY_MKNOD],
    "O_TMPFILE 04755": ["python3", "-c", PY_TMPFILE],
}


def rw_box(make_sandbox: MakeSandbox, workspace: Path) -> tuple[Sandbox, Path]:
    """A sandbox with `workspace` read-write, and a path in it for the file to make."""
    box = make_sandbox("docker", SandboxSpec(mounts=(validate_mount(workspace, read_only=False),)))
    return box, workspace / "target"


@pytest.mark.parametrize("name", list(ATTEMPTS))
def test_a_command_cannot_leave_a_setid_file_in_a_read_write_folder(
    make_sandbox: MakeSandbox, workspace: Path, name: str
) -> None:
    box, target = rw_box(make_sandbox, workspace)
    if name.startswith(("chmod", "fchmod")):
        # These change an existing file: make one first.
        assert box.exec(["sh", "-c", f"echo x > {target}"]).ok
    result = box.exec([*ATTEMPTS[name], str(target)])
    assert result.exit_code != 0, (name, result)
    assert b"Operation not permitted" in result.stderr, result.stderr
    if target.exists():
        assert target.stat().st_mode & SETID == 0, oct(target.stat().st_mode)
    # Stopped by the filter, not found afterwards: the second line had nothing to do.
    assert result.setid_stripped == ()


# chmod(path, 04755) through the 32-bit system call gate (`int 0x80`), which the kernel runs
# beside the 64-bit one: a filter written for x86_64 numbers alone would let it through.
INT80_CHMOD = r"""
import ctypes, mmap, struct, sys
path = sys.argv[1].encode() + b"\0"
mem = mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x40,  # MAP_32BIT
                prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
base = ctypes.addressof(ctypes.c_char.from_buffer(mem))
code = (b"\x53\xb8" + struct.pack("<I", 15)        # push rbx; mov eax, 15 (i386 chmod)
        + b"\xbb" + struct.pack("<I", base + 256)   # mov ebx, path
        + b"\xb9" + struct.pack("<I", 0o4755)       # mov ecx, 04755
        + b"\xcd\x80\x5b\xc3")                      # int 0x80; pop rbx; ret
mem[256:256 + len(path)] = path
mem[0:len(code)] = code
print(ctypes.CFUNCTYPE(ctypes.c_int)(base)())
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the i386 gate of x86_64 kernels")
def test_the_32_bit_system_call_gate_is_filtered_too(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    box, target = rw_box(make_sandbox, workspace)
    assert box.exec(["touch", str(target)]).ok
    result = box.exec(["python3", "-c", INT80_CHMOD, str(target)])
    assert result.ok, result.stderr  # refused, not killed: 32-bit programs still run
    assert result.stdout == b"-1\n"  # -EPERM
    assert target.stat().st_mode & SETID == 0


def test_ordinary_modes_and_files_still_work(make_sandbox: MakeSandbox, workspace: Path) -> None:
    box, target = rw_box(make_sandbox, workspace)
    script = (
        f"echo x > {target} && chmod 755 {target} && install -m 700 /bin/true {target}.bin "
        f"&& mkdir -m 1777 {target}.d && yes | head -1"
    )
    result = box.exec(["sh", "-c", script])
    assert result.ok, result.stderr
    assert result.stdout == b"y\n"  # `yes` ended by SIGPIPE: the wrapper left it at default
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert stat.S_IMODE(Path(f"{target}.bin").stat().st_mode) == 0o700


def test_calls_seccomp_cannot_inspect_are_refused_as_unsupported(
    make_sandbox: MakeSandbox,
) -> None:
    box = make_sandbox("docker")
    # openat2 (437) hides its mode behind a pointer; io_uring_setup (425) bypasses seccomp.
    script = (
        "import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True)\n"
        "for nr in (437, 425):\n"
        "    print(libc.syscall(nr, 0, 0, 0, 0), ctypes.get_errno())\n"
    )
    result = box.exec(["python3", "-c", script])
    assert result.ok, result.stderr
    assert result.stdout.split(b"\n")[:2] == [b"-1 38", b"-1 38"]  # ENOSYS


def test_missing_commands_exit_like_a_shell(make_sandbox: MakeSandbox) -> None:
    box = make_sandbox("docker")
    missing = box.exec(["no-such-command"])
    assert (missing.exit_code, missing.stderr) == (
        127,
        b"no-such-command: No such file or directory\n",
    )
    assert box.exec(["/etc/passwd"]).exit_code == 126


def test_the_host_strips_a_bit_that_got_past_the_filter(
    make_sandbox: MakeSandbox, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first lines failing: the engine runs Debian's plain profile, and commands start
    # through `env` instead of the filter.
    monkeypatch.setattr("sandbox.docker.profile_json", BASE_PROFILE.read_text)
    monkeypatch.setattr("sandbox.docker.CONFINE", "/usr/bin/env")
    (workspace / "old").write_text("mine")
    os.chmod(workspace / "old", 0o4755)  # the person's own, from before: left alone
    box, target = rw_box(make_sandbox, workspace)
    result = box.exec(["sh", "-c", f"echo x > {target} && chmod 6755 {target}"])
    assert result.exit_code == 0
    assert result.setid_stripped == (target,)
    assert not result.ok
    assert "left setuid/setgid files" in result.describe() and str(target) in result.describe()
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert stat.S_IMODE((workspace / "old").stat().st_mode) == 0o4755


def test_an_image_without_the_wrapper_is_named_with_the_fix(
    make_sandbox: MakeSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sandbox.docker.CONFINE", "/usr/local/lib/dispatch/missing")
    with pytest.raises(ImageMissing, match="dispatch images build"):
        make_sandbox("docker")


def test_every_process_in_the_sandbox_carries_the_filter(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    # A process of the sandbox user without it (init, or one of Dispatch's own short commands)
    # could be made to set the bits by a task writing into its memory (/proc/PID/mem).
    box = make_sandbox("docker", SandboxSpec(mounts=(validate_mount(workspace, read_only=False),)))
    script = "sleep 30 & grep -H Seccomp_filters /proc/[0-9]*/status; kill %1"
    result = box.exec(["sh", "-c", script])
    counts = {
        line.split("/")[2]: int(line.split()[-1])
        for line in result.stdout.decode().splitlines()
        if "/status:" in line
    }
    assert "1" in counts and len(counts) >= 3, result.stdout  # init, sh, sleep, grep
    # The engine's profile (sandbox/seccomp.py) is one filter; confine adds the second.
    assert set(counts.values()) == {2}, counts


def git_repo(root: Path) -> None:
    for part in ("hooks", "objects", "refs"):
        (root / "repo" / ".git" / part).mkdir(parents=True)
    (root / "repo" / ".git" / "config").write_text("[core]\n\trepositoryformatversion = 0\n")
    (root / "repo" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "repo" / "sub").mkdir()
    (root / "repo" / "sub" / ".git").write_text("gitdir: ../.git/modules/sub\n")
    for path in [root, *root.rglob("*")]:
        os.chown(path, 4321, 4321)


@pytest.mark.parametrize("writable", [False, True], ids=["protected", "git_writable"])
def test_git_folders_in_a_read_write_folder_are_read_only(
    make_sandbox: MakeSandbox, workspace: Path, writable: bool
) -> None:
    git_repo(workspace)
    mount = validate_mount(workspace, read_only=False)
    git = git_mounts([workspace], git_writable=lambda _: writable, skip={workspace})
    box = make_sandbox("docker", SandboxSpec(mounts=(mount, *git)))
    repo = workspace / "repo"
    hook = box.exec(["sh", "-c", f"echo 'touch /tmp/pwned' > {repo}/.git/hooks/pre-commit"])
    fsmonitor = box.exec(["git", "-C", str(repo), "config", "core.fsmonitor", "/tmp/evil"])
    gitfile = box.exec(["sh", "-c", f"echo 'gitdir: /tmp/evil' > {repo}/sub/.git"])
    work = box.exec(["sh", "-c", f"echo code > {repo}/main.py"])
    assert work.ok, work.stderr
    assert (repo / "main.py").read_text() == "code\n"
    if writable:
        assert git == ()
        assert hook.ok and fsmonitor.ok and gitfile.ok
        assert "fsmonitor" in (repo / ".git" / "config").read_text()
    else:
        assert {m.host for m in git if m.read_only} == {repo / ".git", repo / "sub" / ".git"}
        for result in (hook, fsmonitor, gitfile):
            assert result.exit_code != 0
        assert b"Read-only file system" in hook.stderr
        assert not (repo / ".git" / "hooks" / "pre-commit").exists()
        assert "fsmonitor" not in (repo / ".git" / "config").read_text()
        assert (repo / "sub" / ".git").read_text() == "gitdir: ../.git/modules/sub\n"


def test_a_repository_cannot_be_moved_aside_for_one_with_planted_hooks(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    git_repo(workspace)
    mount = validate_mount(workspace, read_only=False)
    git = git_mounts([workspace], skip={workspace})
    box = make_sandbox("docker", SandboxSpec(mounts=(mount, *git)))
    repo = workspace / "repo"
    for script in (
        f"mv {repo} {workspace}/moved",
        f"mv {repo}/sub {repo}/moved",
        f"mv {repo}/.git {repo}/old.git",
        f"rm -rf {repo}",
    ):
        result = box.exec(["sh", "-c", script])
        assert result.exit_code != 0, script
        assert b"busy" in result.stderr or b"Read-only" in result.stderr, result.stderr
    assert (repo / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert not (workspace / "moved").exists()


def container_running(docker_client: docker.DockerClient, cid: str) -> bool:
    try:
        state = docker_client.api.inspect_container(cid)["State"]
    except docker.errors.NotFound:
        return False
    return bool(state["Running"])


def test_a_sandbox_stops_itself_at_its_deadline(
    make_sandbox: MakeSandbox, docker_client: docker.DockerClient
) -> None:
    box = make_sandbox("docker", SandboxSpec(deadline_s=3))
    results: list[ExecResult] = []
    runner = threading.Thread(target=lambda: results.append(box.exec(["sleep", "600"])))
    runner.start()
    # Nobody calls stop(): the container's own init ends it.
    deadline = time.monotonic() + 120
    while container_running(docker_client, box.id):
        assert time.monotonic() < deadline, f"sandbox {box.id} still runs past its deadline"
        time.sleep(0.2)
    state = docker_client.api.inspect_container(box.id)["State"]
    assert state["ExitCode"] == DEADLINE_EXIT
    runner.join(60)
    assert results and results[0].outcome is Outcome.TIMED_OUT, results
    assert "timed out after 3 s" in results[0].describe()


def test_without_a_deadline_the_sandbox_keeps_running(
    make_sandbox: MakeSandbox, docker_client: docker.DockerClient
) -> None:
    box = make_sandbox("docker")
    assert box.exec(["sleep", "1"]).ok
    assert container_running(docker_client, box.id)


def test_the_backend_refuses_to_run_as_root_whatever_it_is_given() -> None:
    for user in ((0, 0), (1000, 0), (0, 1000)):
        with pytest.raises(GrantRefused, match="never runs as root"):
            DockerSandbox(SandboxSpec(user=user))
