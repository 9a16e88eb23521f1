"""Review 9 (hostile; failed before its fix).

the identity check on known git entries is defeated by inode reuse.

`quarantine_new` (sandbox/host/gitplant.py:166) calls an entry replaced when its
(st_dev, st_ino, type) differs from the start. On ext4 a symlink removed and made again at
once gets the same inode number: a task replaces the person's `.git` symlink (not mounted,
sandbox/mounts.py `_is_plain`) with one to a repository it made in a git_writable folder
it also has; the identity matches, nothing is renamed aside, and the person's next `git
status` in the protected folder runs the planted core.fsmonitor on the host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker
import pytest

from controller.execution.folders import plan_folders
from sandbox import SandboxSpec
from sandbox.docker import DockerSandbox
from tests.sandbox.conftest import settings_from

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.getuid() != 0, reason="gives folders to another user"),
]
ALICE = (4321, 4321)


def _attempt(tmp_path: Path, base: Path, client: docker.DockerClient) -> str:
    """One try: the task swaps the person's .git symlink; what `.git` points to afterwards."""
    work = base / "work"
    scratch = base / "scratch"
    work.mkdir()
    scratch.mkdir()
    real = base / "elsewhere" / "project.git"  # the repository, outside every grant
    subprocess.run(["git", "init", "-q", "--bare", str(real)], check=True)
    (work / ".git").symlink_to(real)
    for p in (work, scratch, work / ".git"):
        os.lchown(p, *ALICE)
    tmp_path.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[folders]]\npath = "{work}"\nmode = "rw"\n\n'
        f'[[folders]]\npath = "{scratch}"\nmode = "rw"\ngit_writable = true\n'
    )
    settings = settings_from(config, tmp_path)
    plan = plan_folders([(str(work), "rw"), (str(scratch), "rw")], settings)
    spec = SandboxSpec(mounts=plan.mounts, user=plan.user, git_writable=plan.git_writable)
    box = DockerSandbox(spec, client=client)
    try:
        box.start()
        planted = box.exec(
            [
                "sh",
                "-c",
                f"git init -q --bare {scratch}/evil.git && "
                f"git --git-dir={scratch}/evil.git config core.fsmonitor 'touch /tmp/pwned' && "
                # ext4 hands the freed inode out again next: the new symlink is "the same".
                f"cd {work} && rm .git && ln -s {scratch}/evil.git .git",
            ]
        )
    finally:
        box.stop()
    assert planted.exit_code == 0, planted
    return os.readlink(work / ".git") if (work / ".git").is_symlink() else ""


def test_r9_a_git_symlink_remade_with_the_same_inode_is_caught(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    # Other processes on the machine may take the freed inode first: a few tries.
    for n in range(8):
        base = Path(tempfile.mkdtemp(prefix="dispatch-r9-", dir="/tmp"))
        base.chmod(0o755)
        try:
            target = _attempt(tmp_path / str(n), base, docker_client)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        assert "evil" not in target, (
            f"try {n}: the protected folder's .git now points to the task's {target}, "
            "and nothing was renamed aside"
        )
