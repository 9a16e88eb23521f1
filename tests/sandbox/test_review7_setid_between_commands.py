"""Review 7 (hostile; failed before its fix).

a setuid file that appears while the sandbox lives, between two commands, is never
stripped.

strip_setid runs only after each command, and only takes files whose ctime is at or after that
command's start; stop() searches for planted repositories but not for setuid files. So should
the first line (seccomp) ever fail, a daemon of the task that sets the bit after one command's
search (in `dispatch serve` the sandbox lives across an agent task's commands) leaves a setuid
file the second line never looks at. The daemon's write is stood in for here by the host,
as the sandbox's uid, between the commands: the second line must not depend on who set it.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from sandbox import SandboxSpec
from sandbox.mounts import validate_mount
from tests.sandbox.conftest import OWNER, MakeSandbox

pytestmark = pytest.mark.docker


def test_review7_setuid_file_made_between_commands_is_stripped(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    box = make_sandbox("docker", SandboxSpec(mounts=(validate_mount(workspace, read_only=False),)))
    assert box.exec(["sh", "-c", "sleep 600 >/dev/null 2>&1 &"]).exit_code == 0
    planted = workspace / "tool"  # what the daemon leaves once the search is over
    planted.write_bytes(b"#!/bin/sh\n")
    os.chown(planted, *OWNER)
    os.chmod(planted, 0o4755)
    time.sleep(1)  # the next command comes later
    second = box.exec(["true"])
    box.stop()
    kept = os.lstat(planted).st_mode & stat.S_ISUID
    assert not kept, f"setuid bit kept; second command reported {second.setid_stripped!r}"
