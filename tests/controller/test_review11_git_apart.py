"""Review 11 (hostile; failed before its fix).

regressions of mounting a git-protecting grant inside a git-writable one onto itself."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from controller.execution.folders import check_folders, plan_folders
from controller.settings import Settings, load_settings

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="gives folders to other users")
ALICE = (4321, 4321)
BOB = (5555, 5555)


def settings(tmp_path: Path, grants: str) -> Settings:
    config = tmp_path / "conf" / "config.toml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(grants)
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "xdg-config")}
    flags = {"data_dir": tmp_path / "data", "sandbox_backend": "docker"}
    return load_settings(flags, environ, config=config)


def grant(path: Path, mode: str = "rw", extra: str = "") -> str:
    return f'[[folders]]\npath = "{path}"\nmode = "{mode}"\n{extra}\n'


def folder(path: Path, owner: tuple[int, int], mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, *owner)
    os.chmod(path, mode)
    return path


def test_a_git_protected_grant_of_another_owner_no_longer_refuses_the_outer_folder(
    tmp_path: Path,
) -> None:
    # Alice's project may have repositories; Bob's vendored checkout inside it must keep its
    # git read-only. Alice asks for her project read-write: the sandbox runs as Alice, as before.
    work = folder(tmp_path / "work", ALICE)
    vendor = folder(work / "vendor", BOB)
    config = settings(
        tmp_path,
        grant(work, extra="git_writable = true") + grant(vendor),
    )
    plan = plan_folders([(str(work), "rw")], config)  # 1a9e2ad: "grants of different owners"
    assert plan.user == ALICE
    assert check_folders([(str(work), "rw")], config)


def test_a_root_owned_git_protected_grant_no_longer_refuses_the_outer_folder(
    tmp_path: Path,
) -> None:
    work = folder(tmp_path / "work", ALICE)
    vendor = folder(work / "vendor", (0, 0))
    config = settings(tmp_path, grant(work, extra="git_writable = true") + grant(vendor))
    assert plan_folders([(str(work), "rw")], config).user == ALICE  # 1a9e2ad: "owned by root"


def test_a_git_protected_grant_alice_cannot_write_no_longer_refuses_the_outer_folder(
    tmp_path: Path,
) -> None:
    # Same owner, but the inner folder is read-only on disk (chmod 555): the task that only
    # writes elsewhere in the project is refused "cannot write".
    work = folder(tmp_path / "work", ALICE)
    vendor = folder(work / "vendor", ALICE, 0o555)
    config = settings(tmp_path, grant(work, extra="git_writable = true") + grant(vendor))
    assert plan_folders([(str(work), "rw")], config).user == ALICE


def test_a_read_only_grant_inside_a_read_only_one_is_not_mounted_again(tmp_path: Path) -> None:
    # The outer read-only grant already protects everything in it; a missing read-only folder
    # in it (removed by the person) must not stop every task on the project, and the message
    # must not call a read-only folder read-write.
    work = folder(tmp_path / "work", ALICE)
    docs = folder(work / "docs", ALICE)
    old = folder(docs / "old", ALICE)
    config = settings(
        tmp_path,
        grant(work, extra="git_writable = true") + grant(docs, "ro") + grant(old, "ro"),
    )
    old.rmdir()  # the person tidies up their docs while the controller runs
    plan = plan_folders([(str(work), "rw")], config)  # 1a9e2ad: "read-only grant ... missing"
    assert [m.host for m in plan.mounts if m.host == old] == []


def test_a_rw_bare_repository_grant_inside_a_git_writable_one_still_plans(tmp_path: Path) -> None:
    # A bare mirror kept in a git-writable project, granted without git_writable: before, it
    # was mounted read-only by the .git search; now the outer folder is refused outright.
    work = folder(tmp_path / "work", ALICE)
    mirror = work / "mirror.git"
    subprocess.run(["git", "init", "-q", "--bare", str(mirror)], check=True)
    subprocess.run(["chown", "-R", "4321:4321", str(mirror)], check=True)
    config = settings(tmp_path, grant(work, extra="git_writable = true") + grant(mirror))
    plan = plan_folders([(str(work), "rw")], config)  # 1a9e2ad: "is the git folder"
    assert any(m.host == mirror and m.read_only for m in plan.mounts)


def test_a_protected_grant_inside_a_protected_one_is_not_mounted_again(tmp_path: Path) -> None:
    # /work/lib is protected already (the deepest grant over /work/lib/sub says so, and /work/lib
    # is mounted and searched); /work/lib/sub gains nothing from a mount of its own, and the
    # person removing it must not stop every task on /work.
    work = folder(tmp_path / "work", ALICE)
    lib = folder(work / "lib", ALICE)
    sub = folder(lib / "sub", ALICE)
    config = settings(tmp_path, grant(work, extra="git_writable = true") + grant(lib) + grant(sub))
    sub.rmdir()
    plan = plan_folders([(str(work), "rw")], config)  # 1a9e2ad: "grant ... sub ... is missing"
    assert all(m.host != sub for m in plan.mounts)
