"""Who a task's sandbox runs as and what it mounts: decided by the grants, never by the task."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.errors import ConfigError, FolderNotGranted
from controller.execution.folders import check_folders, plan_folders
from controller.settings import Settings, load_settings
from sandbox import Mount

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="gives folders to other users")
ALICE = (4321, 4321)
BOB = (5555, 5555)


def settings(tmp_path: Path, grants: str, **flags: object) -> Settings:
    config = tmp_path / "conf" / "config.toml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(grants)
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "xdg-config")}
    flags = {"data_dir": tmp_path / "data", "sandbox_backend": "docker", **flags}
    return load_settings(flags, environ, config=config)


def grant(path: Path, mode: str = "rw", extra: str = "") -> str:
    return f'[[folders]]\npath = "{path}"\nmode = "{mode}"\n{extra}\n'


def folder(path: Path, owner: tuple[int, int], mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, *owner)
    os.chmod(path, mode)
    return path


def test_the_owner_of_a_named_subfolder_never_decides_who_runs(tmp_path: Path) -> None:
    projects = folder(tmp_path / "projects", ALICE)
    private = folder(projects / "bobs-private", BOB, 0o700)
    config = settings(tmp_path, grant(projects))
    # Before, naming Bob's folder ran the task as Bob. Now it runs as Alice, who cannot write it.
    with pytest.raises(FolderNotGranted) as refused:
        check_folders([(str(private), "rw")], config)
    message = refused.value.message
    assert str(private) in message and "uid 5555" in message and "mode 0700" in message
    assert "chown -R 4321:4321" in message and "sandbox_user" in message
    assert plan_folders([(str(private), "ro")], config).user == ALICE
    assert plan_folders([(str(projects), "rw")], config).user == ALICE


def test_a_root_owned_grant_needs_the_sandbox_user_setting(tmp_path: Path) -> None:
    shared = folder(tmp_path / "shared", (0, 0))
    alices = folder(shared / "alice", ALICE)
    config = settings(tmp_path, grant(shared))
    with pytest.raises(FolderNotGranted, match=r"owned by root.*sandbox_user") as refused:
        check_folders([(str(alices), "rw")], config)
    assert str(shared) in refused.value.message
    chosen = settings(tmp_path, grant(shared), sandbox_user="4321:4321")
    assert plan_folders([(str(alices), "rw")], chosen).user == ALICE
    # The setting decides even where the folder has another owner, if that user can write it.
    with pytest.raises(FolderNotGranted, match="cannot write"):
        check_folders([(str(shared), "rw")], chosen)


def test_read_write_folders_from_grants_of_different_owners_are_refused(tmp_path: Path) -> None:
    a = folder(tmp_path / "a", ALICE)
    b = folder(tmp_path / "b", BOB)
    config = settings(tmp_path, grant(a) + grant(b))
    with pytest.raises(FolderNotGranted, match="grants of different owners") as refused:
        check_folders([(str(a), "rw"), (str(b), "rw")], config)
    assert "uid 4321" in refused.value.message and "uid 5555" in refused.value.message
    assert plan_folders([(str(a), "rw"), (str(b), "ro")], config).user == ALICE


def test_sandbox_user_is_never_root(tmp_path: Path) -> None:
    for value in ("root", "0:0", "1000:0"):
        with pytest.raises(ConfigError, match=r"sandbox_user.*is root"):
            settings(tmp_path, "", sandbox_user=value)
    with pytest.raises(ConfigError, match=r"sandbox_user.*names no user"):
        settings(tmp_path, 'sandbox_user = "no-such-user-here"\n')


def test_the_deepest_grant_decides_and_is_mounted_over_a_wider_one(tmp_path: Path) -> None:
    projects = folder(tmp_path / "projects", ALICE)
    docs = folder(projects / "docs", ALICE)
    drafts = folder(docs / "drafts", ALICE)
    config = settings(tmp_path, grant(projects) + grant(docs, "ro") + grant(drafts))
    with pytest.raises(FolderNotGranted, match=r"read-only \(by the grant of .*docs\)"):
        check_folders([(str(docs / "drafts" / ".."), "rw")], config)
    plan = plan_folders([(str(projects), "rw")], config)
    assert [(m.host, m.read_only) for m in plan.mounts] == [
        (projects, False),
        (docs, True),
        (drafts, False),
    ]
    assert plan.requested == (Mount(projects, read_only=False),)
    # A folder the task itself asked for read-only stays so, with everything inside it.
    plan = plan_folders([(str(projects), "rw"), (str(docs), "ro")], config)
    assert [(m.host, m.read_only) for m in plan.mounts] == [(projects, False), (docs, True)]


def test_folders_above_a_nested_grant_are_pinned_and_a_missing_one_refused(
    tmp_path: Path,
) -> None:
    work = folder(tmp_path / "work", ALICE)
    secrets = folder(work / "a" / "b" / "secrets", ALICE)
    config = settings(tmp_path, grant(work) + grant(secrets, "ro"))
    plan = plan_folders([(str(work), "rw")], config)
    # a and a/b mounted onto themselves (a mount point cannot be renamed), with work's mode.
    assert [(m.host, m.read_only) for m in plan.mounts] == [
        (work, False),
        (secrets, True),
        (work / "a" / "b", False),
        (work / "a", False),
    ]
    # Moved aside by an earlier task: refused, not skipped.
    (work / "a").rename(work / "elsewhere")
    with pytest.raises(FolderNotGranted, match=r"grant .*secrets inside .* is missing.*put"):
        plan_folders([(str(work), "rw")], config)


def test_the_same_folder_granted_twice_differently_stops_start_up(tmp_path: Path) -> None:
    projects = folder(tmp_path / "projects", ALICE)
    with pytest.raises(ConfigError, match=r"folders\[0\].*and.*folders\[1\].*both grant"):
        settings(tmp_path, grant(projects) + grant(projects / ".", "ro"))
    with pytest.raises(ConfigError, match="git_writable = true"):
        settings(tmp_path, grant(projects) + grant(projects, extra="git_writable = true"))
    with pytest.raises(ConfigError, match="use true or false"):
        settings(tmp_path, grant(projects, extra='git_writable = "yes"'))
    same = settings(tmp_path, grant(projects) + grant(projects))
    assert len(same.folders) == 1


def test_git_folders_are_mounted_read_only_unless_the_grant_says_so(tmp_path: Path) -> None:
    projects = folder(tmp_path / "projects", ALICE)
    repo = folder(projects / "repo", ALICE)
    (repo / ".git" / "hooks").mkdir(parents=True)
    opened = folder(tmp_path / "open", ALICE)
    folder(opened / ".git", ALICE)
    config = settings(tmp_path, grant(projects) + grant(opened, extra="git_writable = true"))
    plan = plan_folders([(str(projects), "rw"), (str(opened), "rw")], config)
    assert [(m.host, m.read_only) for m in plan.mounts[2:]] == [
        (repo / ".git", True),
        (repo, False),  # pinned, so it cannot be moved aside for a repository with hooks
    ]
    assert plan_folders([(str(repo), "ro")], config).mounts == (Mount(repo),)
    with pytest.raises(FolderNotGranted, match="inside a git folder"):
        check_folders([(str(repo / ".git" / "hooks"), "rw")], config)
    assert check_folders([(str(opened / ".git"), "rw")], config)


def test_a_grant_in_roots_group_does_not_put_the_sandbox_in_it(tmp_path: Path) -> None:
    projects = folder(tmp_path / "projects", (4321, 0), 0o775)
    config = settings(tmp_path, grant(projects))
    assert plan_folders([(str(projects), "rw")], config).user == ALICE  # uid 4321 has no entry


def test_a_folder_too_large_to_search_is_refused_unless_its_git_may_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sandbox.mounts.MAX_WALK_FOLDERS", 3)
    projects = folder(tmp_path / "projects", ALICE)
    opened = folder(tmp_path / "open", ALICE)
    for name in ("a", "b", "c", "d"):
        folder(projects / name, ALICE)
        folder(opened / name, ALICE)
    config = settings(tmp_path, grant(projects) + grant(opened, extra="git_writable = true"))
    with pytest.raises(FolderNotGranted, match=r"more than 3 folders.*git_writable = true"):
        plan_folders([(str(projects), "rw")], config)
    assert check_folders([(str(projects), "rw")], config)  # submission does not search
    assert plan_folders([(str(opened), "rw")], config).mounts == (Mount(opened, read_only=False),)
