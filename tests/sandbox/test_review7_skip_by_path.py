"""Review 7 (hostile; failed before its fix).

the host-side searches skip folders by path, and a task can put its own folder at
the path of a read-only folder it was given inside its read-write folder.

A task (or task file) that names both `work` (rw) and `work/a/ro` (ro) gets a read-only mount
at work/a/ro, but no pins above it: `_nested_grants` pins only config grants, not folders the
task named. The mount moves with its parent when the task renames that parent (`mv a b`), and
the task may then make a folder of its own at the old path. The search after the command and
the one at stop skip it by name (`here / d not in skip`, sandbox/host/gitplant.py:78,
setid.py:66), so a repository planted there is never renamed aside, and nothing is reported;
the next `git status` the person runs there runs its core.fsmonitor on the host.
Conversely the moved read-only folder is no longer skipped: its own `.git` is renamed aside.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import docker
import pytest

from controller.execution.folders import plan_folders
from controller.settings import Settings
from sandbox import SandboxSpec
from sandbox.docker import DockerSandbox
from tests.sandbox.conftest import OWNER, settings_from

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.getuid() != 0, reason="gives folders to another user"),
]
ALICE = OWNER  # a normal user, not root


def _settings(tmp_path: Path, work: Path) -> Settings:
    config = tmp_path / "conf" / "config.toml"
    config.parent.mkdir()
    config.write_text(f'[[folders]]\npath = "{work}"\nmode = "rw"\n')
    return settings_from(config, tmp_path)


def _box(
    tmp_path: Path, base: Path, client: docker.DockerClient, git: bool
) -> tuple[Path, Path, DockerSandbox]:
    work = base / "work"
    ro = work / "a" / "ro"
    ro.mkdir(parents=True)
    if git:
        subprocess.run(["git", "init", "-q", str(ro)], check=True)
    for path in (work, work / "a", ro, *ro.rglob("*")):
        os.lchown(path, *ALICE)
    plan = plan_folders([(str(work), "rw"), (str(ro), "ro")], _settings(tmp_path, work))
    box = DockerSandbox(SandboxSpec(mounts=plan.mounts, user=plan.user), client=client)
    box.start()
    return work, ro, box


def test_review7_a_parent_of_a_read_only_folder_cannot_be_moved_to_plant_at_its_path(
    tmp_path: Path, base: Path, docker_client: docker.DockerClient
) -> None:
    # Each folder between the read-only folder and the read-write one around it is pinned (a
    # mount point cannot be renamed), so the task can neither move the read-only folder's
    # .git out of its protection nor put a folder of its own at the read-only folder's path.
    work, ro, box = _box(tmp_path, base, docker_client, git=True)
    try:
        moved = box.exec(["sh", "-c", f"mv {work}/a {work}/b"])
        planted = box.exec(["sh", "-c", f"mkdir -p {ro}/src && cd {ro}/src && git init -q ."])
    finally:
        box.stop()
    assert moved.exit_code != 0 and b"busy" in moved.stderr, moved
    assert planted.exit_code != 0, "the read-only folder took a new repository"
    assert (ro / ".git").is_dir() and not (work / "b").exists()
    assert (moved.git_quarantined, box.git_quarantined_at_stop) == ((), ())
