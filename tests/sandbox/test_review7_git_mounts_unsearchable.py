"""Review 7 (hostile; failed before its fix).

a task hides the person's `.git` from the next task's read-only protection by making
its folder readable but not searchable (chmod 444; the folder is the task's own).

git_mounts lists the folder (needs only r) and sees `.git` among its folders, but
`_is_plain(path)` (sandbox/mounts.py:183-189) gets EACCES from lstat and answers False, so the
`.git` is neither mounted read-only nor refused: the next task may `chmod 755` the folder and
write `.git/config` (core.fsmonitor) or hooks, run on the host by the person's next `git status`.
The after-command search does not rename it either: it was `known` at the start. The host side
runs as the folder's owner (the sandbox's uid), not as root, which reads every folder.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sandbox.errors import GrantRefused
from sandbox.mounts import git_mounts

OWNER = (4321, 4321)


def _as_owner_protected(root: Path, dot_git: Path) -> int:
    """0: protected, 1: GrantRefused (said so), 2: left unprotected in silence."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child)
        code = 9
        try:
            os.setgid(OWNER[1])
            os.setuid(OWNER[0])
            mounts = git_mounts([root], skip={root})
            code = 0 if any(m.host == dot_git and m.read_only for m in mounts) else 2
        except GrantRefused:
            code = 1
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_review7_dot_git_in_an_unsearchable_folder_is_left_writable(workspace: Path) -> None:
    proj = workspace / "proj"
    subprocess.run(["git", "init", "-q", str(proj)], check=True)
    for path in (proj, *proj.rglob("*")):
        os.lchown(path, *OWNER)
    assert _as_owner_protected(workspace, proj / ".git") == 0  # as it is
    os.chmod(proj, 0o444)  # what task 1 leaves (its own folder)
    assert _as_owner_protected(workspace, proj / ".git") in (0, 1)
