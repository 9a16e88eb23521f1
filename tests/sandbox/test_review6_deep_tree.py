"""Review 6 (hostile): a chain of folders deeper than Python's recursion limit, left by a task in
its read-write folder, made every host-side search of that folder raise RecursionError
(`os.walk` in Python 3.11 recurses once per level). A repository the task planted was then not
renamed aside, setuid files not stripped, the folder's next task failed while its `.git` mounts
were planned, and `dispatch run` died writing its artifacts over such a tree. Each test failed
before the walks and the removal stopped recursing.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.headless.writes import Writer
from sandbox.host.gitplant import quarantine_new
from sandbox.host.setid import strip_setid
from sandbox.host.walk import walk
from sandbox.mounts import git_mounts
from tests.controller.test_headless import dispatch_run, write

DEPTH = 1500  # more levels than Python's recursion limit (1000)
UID = 1000  # the sandbox never runs as root: granted folders belong to a normal user


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    """A task's read-write folder holding a planted repository and a deep chain of folders."""
    folder = tmp_path / "workspace"
    (folder / "sub" / ".git" / "objects").mkdir(parents=True)
    (folder / "sub" / ".git" / "refs").mkdir()
    (folder / "sub" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "deep").mkdir()
    chain(folder / "deep")
    yield folder
    # pytest's own clean-up would recurse the same way.
    subprocess.run(["rm", "-rf", str(folder)], check=False)


def chain(root: Path, depth: int = DEPTH) -> None:
    """What `for i in ...; do mkdir a; cd a; done` in a sandbox leaves."""
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("a", dir_fd=fd)
            deeper = os.open("a", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = deeper
    finally:
        os.close(fd)


def test_the_walk_goes_as_os_walk_goes_and_reaches_the_bottom(work: Path, tmp_path: Path) -> None:
    shallow = tmp_path / "shallow"
    for folder in ("a/b", "a/c", "d"):
        (shallow / folder).mkdir(parents=True)
    (shallow / "a" / "f").write_text("x")
    (shallow / "link").symlink_to(shallow / "a")  # listed as a folder, never entered
    assert list(walk(shallow)) == list(os.walk(shallow))
    assert sum(1 for _ in walk(work)) == 1 + 4 + 1 + DEPTH  # sub/.git/{objects,refs}, deep


def test_a_planted_repository_beside_a_deep_chain_is_renamed_aside(work: Path) -> None:
    quarantine_new([work], known={})
    assert not (work / "sub" / ".git").exists()
    assert [p.name for p in (work / "sub").iterdir()] == [".git.dispatch-quarantine-1"]


def test_setid_files_at_the_bottom_of_a_deep_chain_are_stripped(work: Path) -> None:
    bottom = work / "deep" / "/".join(["a"] * DEPTH)
    planted = bottom / "shell"
    planted.write_bytes(b"#!/bin/sh\n")
    planted.chmod(0o4755)
    strip_setid([work], since=time.time() - 60)
    assert planted.stat().st_mode & 0o7777 == 0o755


def test_the_next_tasks_git_mounts_are_planned(work: Path) -> None:
    (mount,) = git_mounts([work])[:1]
    assert mount.host == work / "sub" / ".git" and mount.read_only


def test_a_deep_tree_where_the_runs_audit_export_goes_is_removed(work: Path) -> None:
    writer = Writer([work])
    audit = writer.fresh_folder(work / "deep")
    assert audit.is_dir() and list(audit.iterdir()) == []


@pytest.mark.docker
def test_a_task_cannot_keep_its_planted_repository_with_a_deep_chain(tmp_path: Path) -> None:
    folder = tmp_path / "task-folder"
    folder.mkdir()
    os.chown(folder, UID, UID)
    script = (
        f"cd {folder} && mkdir -p sub/.git/objects sub/.git/refs/heads && "
        "echo ref: refs/heads/main > sub/.git/HEAD && "
        "printf '[core]\\n\\tfsmonitor = touch /tmp/pwned\\n' > sub/.git/config && "
        f"mkdir deep && cd deep && i=0; while [ $i -lt {DEPTH} ]; do mkdir a && cd a; "
        "i=$((i+1)); done; echo planted"
    )
    tasks = write(
        tmp_path / "tasks.yaml",
        f"""tasks:
  - name: plant
    command: ["sh", "-c", "{script}"]
    folders: [{{path: {folder}, mode: rw}}]
""",
    )
    try:
        done = dispatch_run(tmp_path, str(tasks), "--json")
        assert not (folder / "sub" / ".git").exists(), done.stderr[-600:]
        assert "internal error" not in done.stdout + done.stderr
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)
