"""Review 7 (hostile; failed before its fix).

folders git takes for a repository that the planted-repository search misses.

git's is_git_directory() accepts a folder when HEAD is valid and `access(objects, X_OK)` and
`access(refs, X_OK)` pass: `objects`/`refs` may be executable *files*. validate_headref()
accepts HEAD as a symlink whose target text starts with "refs/", whatever it points to, so HEAD
may be a symlink to a folder. `is_git_layout` wants objects/ and refs/ among the folders and
HEAD not among them, so both layouts are left in place, and `git branch` / `git tag` there (on
a terminal) runs the task's core.pager on the host.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sandbox.host.gitplant import git_entries, quarantine_new


def _git_dir(folder: Path, ceiling: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(ceiling)}
    return subprocess.run(
        ["git", "rev-parse", "--git-dir"], cwd=folder, env=env, capture_output=True, text=True
    )


def _plant_exec_files(folder: Path) -> None:
    folder.mkdir()
    (folder / "HEAD").write_text("ref: refs/heads/main\n")
    for name in ("objects", "refs"):
        (folder / name).touch()
        (folder / name).chmod(0o755)
    (folder / "config").write_text('[core]\n\tpager = "touch ran; cat"\n')


def _plant_head_symlink(folder: Path) -> None:
    (folder / "objects").mkdir(parents=True)
    (folder / "refs" / "heads").mkdir(parents=True)
    os.symlink("refs/heads", folder / "HEAD")
    (folder / "config").write_text('[core]\n\tpager = "touch ran; cat"\n')


def _check(tmp_path: Path, plant) -> None:
    root = tmp_path / "rw"
    root.mkdir()
    known = git_entries([root])
    plant(root / "evil")
    assert _git_dir(root / "evil", tmp_path).stdout.strip() == "."  # git takes it for a repo
    quarantine_new([root], known)
    after = _git_dir(root / "evil", tmp_path)
    assert after.returncode != 0, f"still a repository to git: {after.stdout!r}"


def test_review7_objects_and_refs_as_executable_files(tmp_path: Path) -> None:
    _check(tmp_path, _plant_exec_files)


def test_review7_head_symlink_to_a_folder(tmp_path: Path) -> None:
    _check(tmp_path, _plant_head_symlink)
