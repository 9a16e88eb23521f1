"""Review 8 (hostile; failed before its fix).

a `.git` symlink that was there at the start is neither mounted read-only nor
searched again: a task replaces it with a repository of its own, at the same path.

`git_mounts` protects only plain `.git` entries (`_is_plain`, sandbox/mounts.py): a `.git`
symlink is passed over ("the task could only have made them itself"). But `git_entries` at
start lists it (GIT in files), so its path is in `git_known`, and `quarantine_new` renames
aside only paths not in `known` (sandbox/host/gitplant.py `found - set(known)`). The task may
`rm .git` (an ordinary symlink in a read-write folder) and `git init` there: the new `.git`
folder has a known path, is never renamed aside, and nothing is reported; the person's next
`git status` there runs its core.fsmonitor on the host.
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


def test_r8_a_task_cannot_swap_a_git_symlink_for_its_own_repository(
    tmp_path: Path, base: Path, docker_client: docker.DockerClient
) -> None:
    work = base / "work"
    work.mkdir()
    real = base / "elsewhere" / "project.git"  # the repository, outside every grant
    subprocess.run(["git", "init", "-q", "--bare", str(real)], check=True)
    (work / ".git").symlink_to(real)
    for p in (work, *work.rglob("*")):
        os.lchown(p, *ALICE)
    config = tmp_path / "config.toml"
    config.write_text(f'[[folders]]\npath = "{work}"\nmode = "rw"\n')
    settings = settings_from(config, tmp_path)
    plan = plan_folders([(str(work), "rw")], settings)
    box = DockerSandbox(SandboxSpec(mounts=plan.mounts, user=plan.user), client=docker_client)
    try:
        box.start()
        planted = box.exec(
            [
                "sh",
                "-c",
                f"cd {work} && rm .git && git init -q . && "
                "git config core.fsmonitor 'touch /tmp/pwned'",
            ]
        )
    finally:
        box.stop()
    assert planted.exit_code == 0, planted
    reported = (*planted.git_quarantined, *box.git_quarantined_at_stop)
    # The planted repository must be renamed aside (and reported), or never made.
    assert not ((work / ".git").is_dir() and not (work / ".git").is_symlink()), (
        f"a planted repository is left at {work}/.git, reported: {reported}"
    )
