"""Review 8 (hostile; failed before its fix).

a read-write folder the task names inside another it names read-write is not
pinned (`_nested_grants` pins only for another mode, controller/execution/folders.py:208-213;
`git_mounts` pins a .git's parents only up to its own root, sandbox/mounts.py:266-270).

The task names /work (rw) and its repository /work/a/repo (rw), which holds .git (mounted
read-only, its path in `git_known`). The task renames /work/a (not a mount point; the mounts
inside move with it), makes /work/a/repo again and `git init`s it: the new /work/a/repo/.git
has a known path, so it is never renamed aside; the person's own .git, now at
/work/moved/repo/.git, is the one renamed aside. Their next `git status` in /work/a/repo runs
the planted core.fsmonitor on the host.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import docker
import pytest

from controller.execution.folders import plan_folders
from sandbox import SandboxSpec
from sandbox.docker import DockerSandbox
from tests.sandbox.conftest import OWNER, settings_from

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.getuid() != 0, reason="gives folders to another user"),
]
ALICE = OWNER  # a normal user, not root


def test_r8_a_repository_in_a_nested_read_write_folder_cannot_be_swapped(
    tmp_path: Path, base: Path, docker_client: docker.DockerClient
) -> None:
    work = base / "work"
    repo = work / "a" / "repo"
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for p in (work, *work.rglob("*")):
        os.lchown(p, *ALICE)
    config = tmp_path / "config.toml"
    config.write_text(f'[[folders]]\npath = "{work}"\nmode = "rw"\n')
    settings = settings_from(config, tmp_path)
    plan = plan_folders([(str(work), "rw"), (str(repo), "rw")], settings)
    box = DockerSandbox(SandboxSpec(mounts=plan.mounts, user=plan.user), client=docker_client)
    try:
        box.start()
        moved = box.exec(["sh", "-c", f"mv {work}/a {work}/moved"])
        planted = box.exec(
            [
                "sh",
                "-c",
                f"mkdir -p {repo} && cd {repo} && git init -q . && "
                "git config core.fsmonitor 'touch /tmp/pwned'",
            ]
        )
    finally:
        box.stop()
    config_text = (repo / ".git" / "config").read_text() if (repo / ".git").is_dir() else ""
    assert "fsmonitor" not in config_text, (
        f"moved: {moved.exit_code}, planted repository kept at {repo}/.git; renamed aside: "
        f"{(*moved.git_quarantined, *planted.git_quarantined, *box.git_quarantined_at_stop)}"
    )
