"""Reviews 5 and 6 (hostile, of `dispatch run`'s head start and the run path around it), with
the real engine. Each test failed before its fix:

- a head start's container killed, or started long, before its task is claimed was handed
  over all the same (the task failed, or its sandbox's deadline came before its timeout);
- a task could make the run write its output through a symlink it left in the artifacts
  folder (or at the report's path): any file of the host user's;
- a task that could write the template database's folder could plant queued tasks in every
  later run's database, and a planted template was trusted;
- a task refused at submission for its timeout crashed the run (exit 1, a traceback) after
  earlier tasks had been queued.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import docker
import pytest

from controller.execution.folders import check_folders
from controller.headless import headstart, template
from controller.headless.headstart import head_start
from controller.headless.runner import HeadlessRun, run_settings
from controller.headless.taskfile import load
from controller.settings import FolderGrant, Settings, load_settings
from controller.store.db import Database, migration_head
from controller.store.events import EventLog
from controller.store.tasks import NewTask, TaskStore
from controller.store.threads import ThreadStore
from sandbox import Network
from tests.controller.test_headless import dispatch_run, write

pytestmark = pytest.mark.docker
UID = 1000  # the sandbox never runs as root: granted folders belong to a normal user


def owned(*folders: Path) -> None:
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, UID, UID)


def run_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, before: object
) -> tuple[str, bool]:
    """A run of `text` whose head start meets `before(head)` first: (result: reason, handed)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    tasks = load(write(tmp_path / "tasks.yaml", text), os.environ)
    settings = run_settings(
        load_settings(), tasks, data_dir=tmp_path / "data", policy=None, timeout_s=None
    )
    head = head_start(settings, tasks)
    assert head is not None
    try:
        before(head)  # type: ignore[operator]
        run = HeadlessRun(
            tasks, settings, progress=lambda *a: None, stop=threading.Event(), head=head
        )
        report = run.run()
    finally:
        head.close()
    (task,) = report.tasks
    return f"{task.result.value}: {task.output or task.reason}", head.handed_over


def test_a_head_start_killed_before_its_task_leaves_the_task_a_fresh_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def kill(head: headstart.HeadStart) -> None:
        head._thread.join()
        box = head._box
        assert box is not None, "the head start's container did not start"
        docker.from_env().api.remove_container(box.id, force=True)  # as `docker rm -f` would

    text = 'tasks:\n  - name: t\n    command: ["sh", "-c", "echo ok"]\n'
    assert run_in_process(tmp_path, monkeypatch, text, kill) == ("passed: ok\n", False)


def test_a_head_start_older_than_the_handover_limit_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its deadline counts from its start: the task would lose that much of its timeout.
    monkeypatch.setattr(headstart, "HANDOVER_MAX_S", 0.5)

    def wait(head: headstart.HeadStart) -> None:
        head._thread.join()
        time.sleep(1.0)  # the claim comes later than the (lowered) limit

    text = 'tasks:\n  - name: t\n    command: ["sh", "-c", "echo ok"]\n'
    assert run_in_process(tmp_path, monkeypatch, text, wait) == ("passed: ok\n", False)


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A workspace the task may write; outside it, a home with a file of the host user's."""
    work, home = tmp_path / "workspace", tmp_path / "home"
    owned(work)
    home.mkdir()
    bashrc = home / ".bashrc"  # stands for any file of the host user's
    bashrc.write_text("# the user's own\n")
    return work, home, bashrc


def test_a_symlink_left_in_the_artifacts_folder_is_not_written_through(
    tmp_path: Path, workspace: tuple[Path, Path, Path]
) -> None:
    work, home, bashrc = workspace
    artifacts = work / "artifacts"
    tasks = write(
        tmp_path / "tasks.yaml",
        f"""tasks:
  - name: build
    command: ["sh", "-c", "mkdir -p {artifacts} && ln -s {home} {artifacts}/build && echo evil"]
    folders: [{{path: {work}, mode: rw}}]
""",
    )
    done = dispatch_run(tmp_path, str(tasks), "--artifacts", str(artifacts))
    assert bashrc.read_text() == "# the user's own\n"
    assert not (home / "output.txt").exists()
    assert done.returncode == 4, done.stderr
    assert f"{artifacts}/build is a symlink in {work}" in done.stderr


def test_a_link_at_the_reports_path_is_replaced_not_followed(
    tmp_path: Path, workspace: tuple[Path, Path, Path]
) -> None:
    work, _, bashrc = workspace
    report = work / "junit.xml"
    output = work / "artifacts" / "build" / "output.txt"
    tasks = write(
        tmp_path / "tasks.yaml",
        f"""tasks:
  - name: build
    command: ["sh", "-c", "mkdir -p {output.parent} && ln -s {bashrc} {output} && ln -s {bashrc} {report} && echo evil"]
    folders: [{{path: {work}, mode: rw}}]
""",  # noqa: E501
    )
    done = dispatch_run(
        tmp_path, str(tasks), "--report", str(report), "--artifacts", str(work / "artifacts")
    )
    assert done.returncode == 0, done.stderr
    assert bashrc.read_text() == "# the user's own\n"
    # The links were replaced by the run's own files, in the workspace where CI looks for them.
    assert not report.is_symlink() and "<testsuite" in report.read_text()
    assert not output.is_symlink() and output.read_text() == "evil\n"


def test_the_template_cache_cannot_be_granted(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    owned(cache / "dispatch")
    tasks = write(
        tmp_path / "tasks.yaml",
        f'tasks:\n  - name: plant\n    command: ["true"]\n'
        f"    folders: [{{path: {cache}, mode: rw}}]\n",
    )
    done = dispatch_run(tmp_path, str(tasks), env={"XDG_CACHE_HOME": str(cache)})
    assert done.returncode == 3, done.stderr
    assert "contains the sensitive path" in done.stderr and "cache" in done.stderr


def planted_template(folder: Path, work: Path, scratch: Path) -> Path:
    """A template at the migration head with one queued task writing into `work`."""
    head = migration_head()
    assert head is not None
    path = folder / f"empty-{head}.sqlite"
    template.build(path)
    db = Database(f"sqlite:///{path}")
    events = EventLog(db)
    store = TaskStore(db, events, ThreadStore(db, events))
    grants = Settings(data_dir=scratch, folders=(FolderGrant(work, "rw"),))
    store.submit(
        NewTask(
            thread="default",
            command=["sh", "-c", f"echo planted > {work}/pwned"],
            mounts=check_folders([(str(work), "rw")], grants),
            network=Network.NONE,
            timeout_s=60,
        )
    )
    db.dispose()
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute("PRAGMA journal_mode=DELETE")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("how", ["rows", "trigger", "others-may-write"])
def test_a_planted_template_is_rebuilt_not_copied(tmp_path: Path, how: str) -> None:
    cache, work = tmp_path / "cache", tmp_path / "work"
    owned(work)
    (cache / "dispatch").mkdir(parents=True)
    planted = planted_template(cache / "dispatch", work, tmp_path / "scratch")
    if how != "rows":
        with contextlib.closing(sqlite3.connect(planted)) as raw:
            raw.execute("DELETE FROM tasks")
            raw.execute("DELETE FROM threads")
            raw.execute("DELETE FROM events")
            if how == "trigger":
                raw.execute(
                    "CREATE TRIGGER plant AFTER INSERT ON tasks BEGIN "
                    'UPDATE tasks SET command = \'["sh", "-c", "echo planted > '
                    f"{work}/pwned\"]' WHERE id = new.id; END"
                )
            raw.commit()
        if how == "others-may-write":
            planted.chmod(0o666)
    tasks = write(
        tmp_path / "tasks.yaml",
        f'tasks:\n  - name: mine\n    command: ["true"]\n'
        f"    folders: [{{path: {work}, mode: rw}}]\n",
    )
    done = dispatch_run(tmp_path, str(tasks), "--json", env={"XDG_CACHE_HOME": str(cache)})
    assert done.returncode == 0, done.stderr
    assert [t["name"] for t in json.loads(done.stdout)["tasks"]] == ["mine"]
    assert not (work / "pwned").exists(), "something planted in the template ran"
    assert planted.stat().st_mode & 0o077 == 0  # rebuilt, private again


def test_a_task_refused_at_submission_refuses_the_run_before_anything_runs(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    owned(work)
    tasks = write(
        tmp_path / "tasks.yaml",
        f"""tasks:
  - name: first
    command: ["sh", "-c", "echo ran > {work}/ran"]
    folders: [{{path: {work}, mode: rw}}]
  - name: second
    command: ["true"]
    timeout_s: 1000000
""",
    )
    done = dispatch_run(tmp_path, str(tasks), "--json")
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{tasks}:5: task 'second': timeout_s 1e+06 is above the limit" in done.stderr
    assert not (work / "ran").exists(), "a task ran although the run was refused"


# Review 6 (of the fixes above): two more ways a run died with a traceback.


def test_a_folder_named_through_a_symlink_is_granted_as_the_folder_it_is(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "hello").write_text("hi\n")
    link = tmp_path / "link"
    link.symlink_to(real)
    tasks = write(
        tmp_path / "tasks.yaml",
        f'tasks:\n  - name: look\n    command: ["ls"]\n    folders: [{{path: {link}, mode: ro}}]\n',
    )
    done = dispatch_run(tmp_path, str(tasks), "--json")
    assert done.returncode == 0, done.stderr
    # Mounted where it really is, and the command runs there.
    assert json.loads(done.stdout)["tasks"][0]["output"] == "hello\n"


def test_a_nearly_full_data_disk_is_exit_4_before_anything_runs(tmp_path: Path) -> None:
    tasks = write(tmp_path / "tasks.yaml", 'tasks:\n  - name: a\n    command: ["true"]\n')
    done = dispatch_run(tmp_path, str(tasks), env={"DISPATCH_MIN_FREE_MB": str(1024 * 1024)})
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{tasks}:2: task 'a':" in done.stderr and "min_free_mb" in done.stderr
