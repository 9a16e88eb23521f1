"""Repositories planted in a read-write folder are found on the host and renamed aside."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox import SandboxSpec
from sandbox.host import walk as host_walk
from sandbox.host.gitplant import GitScanIncomplete, git_entries, quarantine, quarantine_new
from sandbox.mounts import validate_mount
from tests.sandbox.conftest import MakeSandbox


def repo(path: Path) -> Path:
    for part in ("objects", "refs"):
        (path / part).mkdir(parents=True)
    (path / "HEAD").write_text("ref: refs/heads/main\n")
    (path / "config").write_text("[core]\n\tfsmonitor = touch /tmp/x\n")
    return path


def test_new_repositories_are_renamed_aside_and_old_ones_kept(tmp_path: Path) -> None:
    repo(tmp_path / "app" / ".git")
    known = git_entries([tmp_path])
    assert set(known) == {tmp_path / "app" / ".git"}
    planted = repo(tmp_path / "app" / "src" / ".git")
    bare = repo(tmp_path / "meta" / "app.git")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / ".git").write_text(f"gitdir: {bare}\n")
    found = quarantine_new([tmp_path], known)
    assert set(found) == {planted, bare, tmp_path / "other" / ".git"}
    # Nothing deleted: renamed so that git no longer takes any of them for a repository.
    assert (
        tmp_path / "app" / "src" / ".git.dispatch-quarantine-1" / "HEAD.dispatch-quarantine-1"
    ).exists()
    assert not planted.exists() and not (bare / "HEAD").exists()
    assert (bare / "HEAD.dispatch-quarantine-1").exists() and (bare / "config").exists()
    assert (tmp_path / "other" / ".git.dispatch-quarantine-1").read_text().startswith("gitdir")
    assert (tmp_path / "app" / ".git" / "HEAD").exists()
    # Made inert, so not found again; planted again, renamed again.
    assert quarantine_new([tmp_path], known) == ()
    repo(planted)
    assert quarantine_new([tmp_path], known) == (planted,)
    assert (planted.parent / ".git.dispatch-quarantine-2").is_dir()


def test_a_symlink_named_git_is_renamed_not_followed(tmp_path: Path) -> None:
    target = repo(tmp_path / "elsewhere" / "real")
    rw = tmp_path / "rw"
    rw.mkdir()
    (rw / ".git").symlink_to(target)
    assert quarantine_new([rw], {}) == (rw / ".git",)
    assert (rw / ".git.dispatch-quarantine-1").is_symlink() and (target / "HEAD").exists()


def test_a_folder_swapped_for_a_symlink_on_the_way_is_not_followed(tmp_path: Path) -> None:
    # Found at rw/x/proj/.git, then a daemon swaps rw/x for a symlink to another repository.
    other = repo(tmp_path / "other" / "proj" / ".git")
    (tmp_path / "rw").mkdir()
    (tmp_path / "rw" / "x").symlink_to(tmp_path / "other")
    with pytest.raises(OSError, match="changed while it was searched"):
        quarantine(tmp_path / "rw" / "x" / "proj" / ".git")
    assert (other / "HEAD").exists()


def test_an_unreadable_folder_fails_the_search_after_the_rest_is_made_inert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planted = repo(tmp_path / "a" / ".git")
    real_walk = host_walk.walk

    def walk(
        top: Path, onerror: Callable[[OSError], None]
    ) -> Iterator[tuple[str, list[str], list[str]]]:
        # Root reads every folder: the refusal to list one is simulated.
        onerror(PermissionError(13, "Permission denied", str(tmp_path / "hidden")))
        yield from real_walk(top, onerror)

    monkeypatch.setattr(host_walk, "walk", walk)
    with pytest.raises(GitScanIncomplete, match=r"hidden.*chmod u\+rx.*renamed aside: .*a/\.git"):
        quarantine_new([tmp_path], {})
    assert not planted.exists()


@pytest.mark.docker
def test_a_repository_planted_after_the_last_command_is_renamed_aside_at_stop(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    box = make_sandbox("docker", SandboxSpec(mounts=(validate_mount(workspace, read_only=False),)))
    go, planted = workspace / "go", workspace / "late" / ".git"
    daemon = (
        f"setsid sh -c 'while [ ! -e {go} ]; do sleep 0.05; done; git init -q {planted.parent}' "
        "</dev/null >/dev/null 2>&1 &"
    )
    result = box.exec(["sh", "-c", daemon])
    assert result.ok and result.git_quarantined == (), result
    go.touch()  # only now, after the command's own search
    deadline = time.monotonic() + 120
    while not (planted / "HEAD").exists():
        assert time.monotonic() < deadline, "the daemon never planted its repository"
        time.sleep(0.1)
    box.stop()
    assert box.git_quarantined_at_stop == (planted,)  # type: ignore[attr-defined]
    assert not planted.exists() and (planted.parent / ".git.dispatch-quarantine-1").is_dir()
