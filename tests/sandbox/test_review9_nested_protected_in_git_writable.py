"""Review 9 (hostile; failed before its fix).

a grant without git_writable nested in one with it is never searched for
planted repositories.

`git_mounts` protects the nested grant's existing `.git` (its deciding grant is not
git_writable), but the searches after each command and at stop take their roots from
`git_roots` (sandbox/host/scan.py:20-27), which drops every read-write mount under ANY
git_writable grant path (`spec.git_writable` lists them all, controller/execution/folders.py
`git_writable=tuple(g.path for g in settings.folders if g.git_writable)`), instead of asking
the deciding grant. So in /a/b (git_writable = false, inside /a with git_writable = true) the
task may `git init` a repository with core.fsmonitor; it is never renamed aside, and the
person's next `git status` there runs it on the host.
"""

from __future__ import annotations

import os
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


def test_r9_a_protected_grant_inside_a_git_writable_one_is_searched(
    tmp_path: Path, base: Path, docker_client: docker.DockerClient
) -> None:
    outer = base / "a"
    inner = outer / "b"
    inner.mkdir(parents=True)
    for p in (outer, inner):
        os.lchown(p, *ALICE)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[folders]]\npath = "{outer}"\nmode = "rw"\ngit_writable = true\n\n'
        f'[[folders]]\npath = "{inner}"\nmode = "rw"\n'
    )
    settings = settings_from(config, tmp_path)
    plan = plan_folders([(str(inner), "rw")], settings)
    spec = SandboxSpec(
        mounts=plan.mounts,
        user=plan.user,
        git_writable=plan.git_writable,
        git_protected=plan.git_protected,
    )
    box = DockerSandbox(spec, client=docker_client)
    try:
        box.start()
        planted = box.exec(
            [
                "sh",
                "-c",
                f"cd {inner} && git init -q . && git config core.fsmonitor 'touch /tmp/pwned'",
            ]
        )
    finally:
        box.stop()
    assert planted.exit_code == 0, planted
    config_text = (inner / ".git" / "config").read_text() if (inner / ".git").is_dir() else ""
    assert "fsmonitor" not in config_text, (
        f"a planted repository is left at {inner}/.git in a grant without git_writable; "
        f"renamed aside: {(*planted.git_quarantined, *box.git_quarantined_at_stop)}"
    )
