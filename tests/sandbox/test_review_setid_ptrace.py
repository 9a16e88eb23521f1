"""Review: a task can still leave a setuid file on the host (both lines of defence beaten).

Every process starts through `confine`, but the filter is only loaded once that Python has
started: for its first tens of milliseconds a new process of the sandbox user has no second
filter. A daemon the task left behind ptraces the next process the controller starts (here the
OOM check a task triggers by exiting with 137), makes it fork an unfiltered child, and keeps
that child chmod-ing a file 04755 until the container is removed, so the bit also comes back
after the host-side scan stripped it.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from sandbox import SandboxSpec
from sandbox.mounts import validate_mount
from tests.sandbox.conftest import MakeSandbox

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TRACER = Path(__file__).parent / "review_data" / "ptrace_window.py.txt"


def test_review_ptrace_of_an_unconfined_new_process_leaves_a_setuid_file(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    shutil.copy(TRACER, workspace / "tracer.py")
    box = make_sandbox("docker", SandboxSpec(mounts=(validate_mount(workspace, read_only=False),)))
    target, log = workspace / "target", workspace / "log"
    command = (
        f"cp /bin/sh {target}; "
        f"setsid python3 {workspace}/tracer.py {target} {log} </dev/null >/dev/null 2>&1 & "
        f"while ! grep -q up {log} 2>/dev/null; do sleep 0.05; done; exit 137"
    )
    result = box.exec(["sh", "-c", command], timeout_s=120)
    box.stop()
    mode = target.stat().st_mode
    assert mode & (stat.S_ISUID | stat.S_ISGID) == 0, (
        oct(mode),
        result.setid_stripped,
        log.read_text(),
    )
