"""Review 9 (low): naming a repository read-write and its `.git` read-only is refused as a
plan "that would mount .git twice ... report this plan as a bug".

`git_mounts` adds a read-only mount for every `.git` it meets (sandbox/mounts.py:262-266)
without looking at `skip` (the folders mounted already), and `_plan`'s new check
(controller/execution/folders.py:146-152) refuses the duplicate. The `.git` is read-only
either way: drop the duplicate (a `.git` in `skip` is handled by its own mount) instead.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from controller.execution.folders import plan_folders
from tests.sandbox.conftest import settings_from


def test_r9_a_repository_rw_with_its_git_named_ro_is_planned(tmp_path: Path) -> None:
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    config = tmp_path / "conf" / "config.toml"
    config.parent.mkdir()
    config.write_text(f'[[folders]]\npath = "{work}"\nmode = "rw"\n')
    settings = settings_from(config, tmp_path, "fake")
    plan = plan_folders([(str(work), "rw"), (str(work / ".git"), "ro")], settings)
    assert [m.host for m in plan.mounts].count(work / ".git") == 1
    assert all(m.read_only for m in plan.mounts if m.host == work / ".git")
