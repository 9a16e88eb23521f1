"""Review: the read-only `.git` mounts do not stop a task planting a new repository.

The existing `.git` is read-only and the work tree pinned, but a task may still create a `.git`
in any folder below it (or in a read-write folder that had none). Git looks for the nearest
`.git` upwards from where it runs, so the next `git status` the owner runs in that subfolder
(or a git-aware shell prompt, on `cd`) runs the task's `core.fsmonitor` command on the host, as
the owner: the planted repository belongs to them, so `safe.directory` does not object.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sandbox import GrantRefused, SandboxSpec
from sandbox.mounts import git_mounts, validate_mount
from tests.sandbox.conftest import OWNER, MakeSandbox

pytestmark = pytest.mark.docker


def as_owner(*command: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        user=OWNER[0],
        group=OWNER[1],
        extra_groups=[],
        env={"HOME": str(home), "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=False,
    )


def test_review_a_planted_nested_repository_runs_code_on_the_host(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    app = workspace / "app"
    app.mkdir()
    os.chown(app, *OWNER)
    assert as_owner("git", "init", "-q", str(app), cwd=workspace, home=workspace).returncode == 0
    mounts = (validate_mount(workspace, read_only=False),)
    protected = git_mounts([workspace], skip={workspace})
    assert any(m.host == app / ".git" and m.read_only for m in protected)
    box = make_sandbox("docker", SandboxSpec(mounts=(*mounts, *protected)))
    marker = workspace / "ran-on-the-host"
    plant = (
        f"mkdir -p {app}/src && cd {app}/src && git init -q . && "
        f"git config core.fsmonitor 'touch {marker}; false'"
    )
    result = box.exec(["sh", "-c", plant])
    # (Adjusted: the plant runs, and the command is then reported failed for it.)
    assert result.exit_code == 0, result.stderr
    assert result.git_quarantined == (app / "src" / ".git",) and not result.ok
    box.stop()
    # The owner, later, on the host, in a subfolder of their own repository.
    as_owner("git", "status", cwd=app / "src", home=workspace)
    assert not marker.exists(), "the task's core.fsmonitor ran on the host"


def test_review_a_git_dir_kept_apart_from_its_work_tree_is_left_writable(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    # `git init --separate-git-dir` (as some tools and dotfile managers do): the work tree's
    # `.git` is a file naming the real git folder, which is not called `.git`.
    app, meta = workspace / "app", workspace / "meta"
    for folder in (app, meta):
        folder.mkdir()
        os.chown(folder, *OWNER)
    made = as_owner(
        "git",
        "init",
        "-q",
        f"--separate-git-dir={meta / 'app.git'}",
        str(app),
        cwd=workspace,
        home=workspace,
    )
    assert made.returncode == 0, made.stderr
    mounts = (validate_mount(workspace, read_only=False),)
    protected = git_mounts([workspace], skip={workspace})
    box = make_sandbox("docker", SandboxSpec(mounts=(*mounts, *protected)))
    marker = workspace / "ran-on-the-host"
    plant = f"git --git-dir={meta / 'app.git'} config core.fsmonitor 'touch {marker}; false'"
    box.exec(["sh", "-c", plant])  # (adjusted: the plant itself may now be refused)
    box.stop()
    as_owner("git", "status", cwd=app, home=workspace)
    assert not marker.exists(), "the task's core.fsmonitor ran on the host"


def git_mounts_as_owner(root: Path) -> list[str]:
    """The read-only `.git` mounts a controller running as the owner (not root) would plan."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child drops to the owner, plans, and reports through the pipe
        try:
            os.setgroups([])
            os.setgid(OWNER[1])
            os.setuid(OWNER[0])
            try:
                found = [str(m.host) for m in git_mounts([root], skip={root}) if m.read_only]
            except GrantRefused as exc:  # (adjusted: refusing is closing the hole too)
                found = ["refused:", str(exc)]
            os.write(write, "\n".join(found).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(pid, 0)
    return text.split("\n") if text else []


def test_review_a_folder_made_unreadable_hides_its_git_from_the_next_plan(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    app = workspace / "app"
    app.mkdir()
    os.chown(app, *OWNER)
    assert as_owner("git", "init", "-q", str(app), cwd=workspace, home=workspace).returncode == 0
    assert git_mounts_as_owner(workspace) == [str(app / ".git")]
    mounts = (validate_mount(workspace, read_only=False),)
    # Task 1, with app/.git read-only and app pinned: a pinned folder can still be chmod-ed.
    first = make_sandbox("docker", SandboxSpec(mounts=(*mounts, *git_mounts([workspace]))))
    assert first.exec(["chmod", "000", str(app)]).ok
    first.stop()
    # Task 2: the controller (running as the owner, as `dispatch serve` normally does) cannot
    # look inside app, and os.walk skips it without a word.
    protected = git_mounts_as_owner(workspace)
    if protected[:1] == ["refused:"]:
        # The plan refuses, naming the folder and the fix: no second task runs.
        assert f"folder {app} cannot be read" in protected[1] and "chmod u+rx" in protected[1]
        return
    second = make_sandbox("docker", SandboxSpec(mounts=mounts))
    marker = workspace / "ran-on-the-host"
    plant = f"chmod 755 {app} && git -C {app} config core.fsmonitor 'touch {marker}; false'"
    result = second.exec(["sh", "-c", plant])
    second.stop()
    assert result.ok, result.stderr
    as_owner("git", "status", cwd=app, home=workspace)
    # Expected: app/.git found and protected, and so the planted command never runs.
    assert (protected, marker.exists()) == ([str(app / ".git")], False)
