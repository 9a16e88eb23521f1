"""Review 8 (hostile; failed before its fix).

a folder named read-write that is itself a git folder (a bare repository, or a
git folder kept apart with --separate-git-dir) is not protected, while one named `.git` is
refused without git_writable (controller/execution/folders.py:87, sandbox/mounts.py:250).

`git_mounts` tests the git layout only below the root (`here != root and is_git_layout(...)`,
sandbox/mounts.py:259), and `check_folder` looks only for a `.git` component. So the task may
write the repository's config and hooks (core.fsmonitor, core.pager, hooks/post-receive...),
which run on the host as the person the next time git runs in it or someone pushes to it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from controller.errors import FolderNotGranted
from controller.execution.folders import plan_folders
from tests.sandbox.conftest import settings_from


def test_r8_a_bare_repository_named_read_write_is_protected(tmp_path: Path) -> None:
    grant = tmp_path / "srv"
    bare = grant / "project.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    config = tmp_path / "conf" / "config.toml"
    config.parent.mkdir()
    config.write_text(f'[[folders]]\npath = "{grant}"\nmode = "rw"\n')
    settings = settings_from(config, tmp_path, "fake")
    try:
        plan = plan_folders([(str(bare), "rw")], settings)
    except FolderNotGranted:
        return  # refused, as a `.git` folder is: fine
    protected = {m.host for m in plan.mounts if m.read_only}
    assert bare / "config" in protected or bare in protected, (
        f"{bare} is mounted read-write with nothing of it read-only: {plan.mounts}"
    )
