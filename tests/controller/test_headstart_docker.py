"""The head start of `dispatch run` with the real engine: it is used, it is exact, it is removed.

A run starts its first command task's sandbox while the controller loads, and the task runs in
it only if the runner's own spec for the stored task is the same (headstart.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from controller.execution.folders import check_folders, plan_folders
from controller.execution.spec import command_spec
from controller.headless.headstart import HeadStart
from controller.settings import FolderGrant, Settings
from sandbox import Network
from sandbox.docker import LABEL, LABEL_PID
from tests.controller.test_headless import DISPATCH, write

pytestmark = pytest.mark.docker
LABEL_TASK = "dispatch.task"


def sandboxes_of(pid: int) -> list[dict[str, object]]:
    """The sandboxes a process made that still exist."""
    client = docker.from_env()
    return list(client.api.containers(all=True, filters={"label": [f"{LABEL_PID}={pid}"]}))


def created_by(pid: int, since: float) -> list[dict[str, str]]:
    """The labels of every sandbox container the process `pid` created since `since`."""
    client = docker.from_env()
    events = client.events(
        since=int(since),
        until=int(time.time()) + 1,
        filters={"type": "container", "event": "create", "label": [LABEL]},
        decode=True,
    )
    attributes = [e["Actor"]["Attributes"] for e in events]
    return [a for a in attributes if a.get(LABEL_PID) == str(pid)]


def start_run(tmp_path: Path, tasks: Path) -> subprocess.Popen[str]:
    """`dispatch run TASKS --json` in its own process, with no config file of the machine's."""
    return subprocess.Popen(
        [*DISPATCH, "run", str(tasks), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")},
    )


def test_the_first_task_runs_in_the_sandbox_started_ahead_and_only_one_is_made(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.txt").write_text("from the folder\n")
    tasks = write(
        tmp_path / "tasks.yaml",
        f"""tasks:
  - name: reads
    command: ["cat", "{work}/hello.txt"]
    folders: [{{path: {work}, mode: ro}}]
  - name: second
    command: ["true"]
""",
    )
    since = time.time() - 1
    process = start_run(tmp_path, tasks)
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err
    first, second = json.loads(out)["tasks"]
    assert first["output"] == "from the folder\n"
    assert (first["result"], second["result"]) == ("passed", "passed")
    made = created_by(process.pid, since)
    # Two tasks, two sandboxes: the first is the head start's (made before the task had an
    # id, so without the task label), the runner's spec for it was equal, nothing was wasted.
    assert len(made) == 2, made
    assert [LABEL_TASK in labels for labels in made] == [False, True], made
    assert sandboxes_of(process.pid) == []


def test_a_folder_replaced_after_the_head_start_gets_a_sandbox_of_its_own(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    settings = Settings(data_dir=tmp_path / "data", folders=(FolderGrant(work, "ro"),))

    def spec_now() -> object:
        mounts = check_folders([(str(work), "ro")], settings)
        plan = plan_folders(((str(m.host), m.mode) for m in mounts), settings)
        return command_spec(settings, plan, network=Network.NONE, allow=(), timeout_s=60, labels={})

    head = HeadStart("docker", spec_now())  # type: ignore[arg-type]
    # Another folder at the same path, as a task file's folder swapped by someone meanwhile.
    work.rename(tmp_path / "was-work")
    work.mkdir()
    try:
        assert head.take("docker", spec_now()) is None  # type: ignore[arg-type]
        assert sandboxes_of(os.getpid()) == [], "the head start's sandbox was left behind"
    finally:
        head.close()


def test_sigterm_once_the_sandbox_started_ahead_exists_leaves_no_container(
    tmp_path: Path,
) -> None:
    # A task that outlives the test, so the signal always lands during the run.
    tasks = write(tmp_path / "tasks.yaml", 'tasks:\n  - name: t\n    command: ["sleep", "120"]\n')
    process = start_run(tmp_path, tasks)
    deadline = time.monotonic() + 60
    while not sandboxes_of(process.pid):  # the head start's container, the first there is
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no sandbox was started"
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert [t["result"] for t in json.loads(out)["tasks"]] in (["error"], ["not_run"])
    assert sandboxes_of(process.pid) == [], "a sandbox was left behind after SIGTERM"


def test_a_run_loads_the_store_only_after_its_first_sandbox_is_on_its_way() -> None:
    # What `dispatch run` needs before the head start (the task file, the settings, the
    # folder plan, the spec) must not load SQLAlchemy, or the controller's loading and the
    # container's start no longer overlap.
    probe = (
        "import sys, controller.cli.run, controller.headless.runner, controller.paths, "
        "controller.headless.taskfile, controller.execution.spec; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
