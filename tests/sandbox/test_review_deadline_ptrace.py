"""Review: a task can switch off its sandbox's own deadline by ptrace-stopping PID 1.

PID 1 runs as the sandbox user and is dumpable, and Docker's profile allows ptrace, so a task
process may PTRACE_SEIZE + PTRACE_INTERRUPT it: the init never wakes to end the sandbox, which
then outlives a controller that was killed meanwhile.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import docker
import pytest

from sandbox import SandboxSpec
from sandbox.mounts import validate_mount
from tests.sandbox.conftest import MakeSandbox

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FREEZE = Path(__file__).parent / "review_data" / "freeze_init.py.txt"
DEADLINE_S = 3


def test_review_a_task_cannot_freeze_init_past_the_deadline(
    make_sandbox: MakeSandbox, workspace: Path, docker_client: docker.DockerClient
) -> None:
    shutil.copy(FREEZE, workspace / "f.py")
    spec = SandboxSpec(mounts=(validate_mount(workspace, read_only=False),), deadline_s=DEADLINE_S)
    box = make_sandbox("docker", spec)
    log = workspace / "log"
    box.exec(["sh", "-c", f"setsid python3 {workspace}/f.py {log} </dev/null >/dev/null 2>&1 &"])
    # The controller is "gone": nothing from the host stops the sandbox. Poll well past the
    # deadline for the container to stop by itself.
    give_up = time.monotonic() + DEADLINE_S + 60
    status = "running"
    while time.monotonic() < give_up:
        status = docker_client.api.inspect_container(box.id)["State"]["Status"]
        if status != "running":
            break
        time.sleep(0.5)
    assert status != "running", log.read_text() if log.exists() else "no log"
