"""Review 10 (hostile; failed before its fix).

a READ-ONLY grant without git_writable inside a git_writable read-write one is
listed in git_protected and searched (sandbox/host/scan.py git_roots: any protected grant
covered by a read-write mount), though the task cannot write it (it is a read-only
sub-mount). A repository the person makes there while the task runs is renamed aside as
planted, and the task fails."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from controller.execution.folders import plan_folders
from sandbox import SandboxSpec
from sandbox.host.gitplant import git_entries
from sandbox.host.scan import at_stop, git_roots, git_skip
from tests.sandbox.conftest import OWNER, settings_from

pytestmark = [pytest.mark.skipif(os.getuid() != 0, reason="gives folders to another user")]
ALICE = OWNER  # a normal user, not root


def test_r10_a_read_only_grant_is_not_searched_for_planted_repositories(
    tmp_path: Path, base: Path
) -> None:
    outer = base / "a"
    inner = outer / "ro"
    inner.mkdir(parents=True)
    for p in (outer, inner):
        os.lchown(p, *ALICE)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[folders]]\npath = "{outer}"\nmode = "rw"\ngit_writable = true\n\n'
        f'[[folders]]\npath = "{inner}"\nmode = "ro"\n'
    )
    settings = settings_from(config, tmp_path)
    plan = plan_folders([(str(outer), "rw")], settings)
    assert any(m.host == inner and m.read_only for m in plan.mounts)  # the task cannot write it
    spec = SandboxSpec(
        mounts=plan.mounts,
        user=plan.user,
        git_writable=plan.git_writable,
        git_protected=plan.git_protected,
    )
    started = time.time()
    known = git_entries(git_roots(spec), skip=git_skip(spec))
    # While the task runs, the person clones a project into their read-only grant.
    subprocess.run(["git", "init", "-q", str(inner / "mine")], check=True)
    _, planted = at_stop(spec, started_at=started, git_known=known)
    assert planted == (), f"the person's own repository renamed aside: {planted}"
    assert (inner / "mine" / ".git").is_dir()
