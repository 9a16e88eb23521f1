"""Review 10 (hostile; failed before its fix).

a git_protected grant that is not a mount point is a search root the task can
replace with a symlink; the walk follows a root symlink (sandbox/host/walk.py: only non-root
symlinks are skipped), so the searches after each command and at stop walk any host folder
the task names, and report the person's repositories there as planted (task fails, their
paths outside every grant named in the reason)."""

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


def test_r10_a_protected_grant_swapped_for_a_symlink_leads_the_search_out(
    tmp_path: Path, base: Path, docker_client: docker.DockerClient
) -> None:
    outer = base / "a"
    inner = outer / "b"
    inner.mkdir(parents=True)
    for p in (outer, inner):
        os.lchown(p, *ALICE)
    # The person's own repository, outside every grant.
    elsewhere = base / "private" / "project"
    elsewhere.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(elsewhere)], check=True)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[folders]]\npath = "{outer}"\nmode = "rw"\ngit_writable = true\n\n'
        f'[[folders]]\npath = "{inner}"\nmode = "rw"\n'
    )
    settings = settings_from(config, tmp_path)
    plan = plan_folders([(str(outer), "rw")], settings)
    spec = SandboxSpec(
        mounts=plan.mounts,
        user=plan.user,
        git_writable=plan.git_writable,
        git_protected=plan.git_protected,
    )
    assert inner in plan.git_protected
    box = DockerSandbox(spec, client=docker_client)
    error: Exception | None = None
    result = None
    try:
        box.start()
        try:
            result = box.exec(["sh", "-c", f"rm -rf {inner} && ln -s {base / 'private'} {inner}"])
        except Exception as exc:
            error = exc
    finally:
        try:
            box.stop()
        except Exception as exc:
            error = error or exc
    said = " ".join(
        map(
            str,
            (
                error,
                result and result.git_quarantined,
                box.scan_problem_at_stop,
                box.git_quarantined_at_stop,
            ),
        )
    )
    assert (elsewhere / ".git" / "HEAD").exists()
    assert str(base / "private") not in said and "project" not in said, (
        "the host search followed a symlink the task put in place of a protected grant, "
        f"out of every grant: {said}"
    )
