"""Review 7 (hostile; failed before its fix).

`run_settings` resolves a task file's folders with realpath (runner.py:164), also
where the symlink lies inside a folder the same task file grants read-write, so a task of one
run (a CI workspace kept between runs) redirects a read-write grant of the next run to any folder
outside the workspace. writes.py refuses exactly such links for the report and artifacts
("a symlink on the way is followed only where no task could have made it").
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.controller.test_headless import dispatch_run, write

pytestmark = pytest.mark.docker


def test_review7_a_link_a_task_left_in_its_workspace_redirects_the_next_runs_grant(
    tmp_path: Path,
) -> None:
    ws = tmp_path / "ws"
    (ws / "out").mkdir(parents=True)
    outside = tmp_path / "outside"  # a folder of the host user's, never granted
    outside.mkdir()
    for folder in (ws, ws / "out", outside):
        os.chown(folder, 1000, 1000)  # the sandbox never runs as root
    tasks = write(
        tmp_path / "tasks.yaml",
        f"""tasks:
  - name: build
    command: ["sh", "-c", "rm -rf {ws}/out && ln -s {outside} {ws}/out"]
    folders: [{{path: {ws}, mode: rw}}]
  - name: publish
    command: ["sh", "-c", "touch {outside}/written"]
    folders: [{{path: {ws}/out, mode: rw}}]
""",
    )
    first = dispatch_run(tmp_path, str(tasks))  # build leaves the link; publish is refused
    assert (ws / "out").is_symlink(), first.stderr
    assert not (outside / "written").exists()
    second = dispatch_run(tmp_path, str(tasks))  # the same file, the workspace kept
    assert second.returncode == 3, second.stderr
    assert f"named through the symlink {ws}/out, in {ws}" in second.stderr
    assert not (outside / "written").exists(), (
        f"the second run granted {outside} read-write through the link the first run's task "
        f"left: exit {second.returncode}\n{second.stderr}"
    )
