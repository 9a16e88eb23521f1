"""Review 8 (hostile; failed before its fix).

a pin laid for a folder the task named read-only lands on a configured
nested grant's own path, with the mode of the task's read-write folder around it.

Config: /work rw, /work/b ro, /work/b/c rw. The task names /work rw and /work/b/c/d/e ro.
`_nested_grants` mounts /work/b read-only and /work/b/c read-write; then the loop over named
folders pins every folder between /work/b/c/d/e and /work with /work's mode (rw): /work/b/c/d,
/work/b/c and /work/b. So the plan holds /work/b twice: the grant read-only and a pin
read-write, mounted after it (pins come last), over it.
"""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest

from controller.execution.folders import plan_folders
from controller.settings import Settings
from sandbox import SandboxSpec
from sandbox.docker import DockerSandbox
from tests.sandbox.conftest import OWNER, settings_from

ALICE = OWNER  # a normal user, not root


def _settings(tmp_path: Path, grants: list[tuple[Path, str]]) -> Settings:
    config = tmp_path / "conf" / "config.toml"
    config.parent.mkdir()
    config.write_text("".join(f'[[folders]]\npath = "{p}"\nmode = "{m}"\n' for p, m in grants))
    return settings_from(config, tmp_path)


def _layout(tmp_path: Path, base: Path):
    work = base / "work"
    e = work / "b" / "c" / "d" / "e"
    e.mkdir(parents=True)
    (work / "b" / "kept").write_text("read-only\n")
    if os.getuid() == 0:
        for p in (work, *work.rglob("*")):
            os.lchown(p, *ALICE)
    settings = _settings(tmp_path, [(work, "rw"), (work / "b", "ro"), (work / "b" / "c", "rw")])
    return work, e, settings


def test_r8_plan_never_mounts_a_read_only_grant_read_write(tmp_path: Path, base: Path) -> None:
    work, e, settings = _layout(tmp_path, base)
    plan = plan_folders([(str(work), "rw"), (str(e), "ro")], settings)
    modes: dict[Path, set[bool]] = {}
    for m in plan.mounts:
        modes.setdefault(m.host, set()).add(m.read_only)
    # One mount per path, and the read-only grant stays read-only.
    assert [m.host for m in plan.mounts].count(work / "b") == 1, plan.mounts
    assert modes[work / "b"] == {True}, plan.mounts


@pytest.mark.docker
@pytest.mark.skipif(os.getuid() != 0, reason="gives folders to another user")
def test_r8_task_cannot_write_a_read_only_grant(
    tmp_path: Path, base: Path, docker_client: docker.DockerClient
) -> None:
    work, e, settings = _layout(tmp_path, base)
    plan = plan_folders([(str(work), "rw"), (str(e), "ro")], settings)
    box = DockerSandbox(SandboxSpec(mounts=plan.mounts, user=plan.user), client=docker_client)
    try:
        box.start()
        wrote = box.exec(["sh", "-c", f"echo planted > {work}/b/kept"])
    finally:
        box.stop()
    assert wrote.exit_code != 0, "the read-only grant was written"
    assert (work / "b" / "kept").read_text() == "read-only\n"


def test_r8_libvirt_guest_mounts_the_read_only_grant_last_read_only(
    tmp_path: Path, base: Path
) -> None:
    # The guest mounts the plan's shares in order (sandbox/libvirt.py `_prepare_guest`): the
    # last mount at a path is what the task sees there. With the pin after the grant, the
    # read-only grant /work/b is shared and mounted read-write over its read-only mount.
    pytest.importorskip("libvirt")
    from sandbox.libvirt import LibvirtSandbox

    work, e, settings = _layout(tmp_path, base)
    plan = plan_folders([(str(work), "rw"), (str(e), "ro")], settings)
    box = LibvirtSandbox(SandboxSpec(mounts=plan.mounts, user=plan.user or ALICE), vm_dir=tmp_path)
    domain = box.plan("kvm")
    last = {m.host: m.read_only for _, m in domain.mounts}
    assert last[work / "b"] is True, [(t, m.host, m.read_only) for t, m in domain.mounts]


@pytest.mark.docker
@pytest.mark.skipif(os.getuid() != 0, reason="gives folders to another user")
def test_r8_docker_pin_inside_a_read_only_grant_is_not_writable(
    tmp_path: Path, base: Path, docker_client: docker.DockerClient
) -> None:
    # Config: /work rw, /work/b ro, /work/b/c/x rw. The task names /work rw and
    # /work/b/c/d/e ro. The first loop pins /work/b/c (read-only, the mode around x); the loop
    # over named folders then pins /work/b/c/d with /work's mode, read-write, and stops at the
    # pin it finds: no duplicate, so Docker starts, and /work/b/c/d, inside the read-only grant
    # /work/b, is writable.
    work = base / "work"
    (work / "b" / "c" / "x").mkdir(parents=True)
    e = work / "b" / "c" / "d" / "e"
    e.mkdir(parents=True)
    for p in (work, *work.rglob("*")):
        os.lchown(p, *ALICE)
    settings = _settings(
        tmp_path, [(work, "rw"), (work / "b", "ro"), (work / "b" / "c" / "x", "rw")]
    )
    plan = plan_folders([(str(work), "rw"), (str(e), "ro")], settings)
    box = DockerSandbox(SandboxSpec(mounts=plan.mounts, user=plan.user), client=docker_client)
    try:
        box.start()
        wrote = box.exec(["sh", "-c", f"echo planted > {work}/b/c/d/planted"])
    finally:
        box.stop()
    assert wrote.exit_code != 0, "a folder inside the read-only grant was written"
    assert not (work / "b" / "c" / "d" / "planted").exists()
