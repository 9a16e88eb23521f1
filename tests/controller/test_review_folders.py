"""Review: a read-only grant inside a read-write one can be moved out from under its protection.

The narrower read-only grant is mounted over its folder, and a mount point itself cannot be
renamed, but the folders above it (up to the read-write root) are not pinned. A task renames
one of them; the read-only grant's path no longer exists, so the next plan skips it ("gone since
start-up") and the next task writes the very same folder, now under another name.
"""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest

from controller.execution.folders import plan_folders
from controller.settings import Settings, load_settings
from sandbox import SandboxSpec
from sandbox.docker import DockerSandbox

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.getuid() != 0, reason="gives folders to another user"),
]
ALICE = (4321, 4321)


def settings(tmp_path: Path, outer: Path, inner: Path) -> Settings:
    config = tmp_path / "conf" / "config.toml"
    config.parent.mkdir()
    config.write_text(
        f'[[folders]]\npath = "{outer}"\nmode = "rw"\n\n'
        f'[[folders]]\npath = "{inner}"\nmode = "ro"\n'
    )
    flags = {"data_dir": tmp_path / "data", "sandbox_backend": "docker"}
    return load_settings(flags, {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}, config=config)


def run(settings: Settings, outer: Path, command: str, client: docker.DockerClient) -> int:
    plan = plan_folders([(str(outer), "rw")], settings)
    box = DockerSandbox(SandboxSpec(mounts=plan.mounts, user=plan.user), client=client)
    box.start()
    try:
        return box.exec(["sh", "-c", command]).exit_code
    finally:
        box.stop()


def test_review_a_read_only_grant_cannot_be_renamed_into_reach(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    outer = tmp_path / "work"
    inner = outer / "a" / "secrets"
    inner.mkdir(parents=True)
    (inner / "key").write_text("kept\n")
    for path in (outer, outer / "a", inner, inner / "key"):
        os.chown(path, *ALICE)
    conf = settings(tmp_path, outer, inner)
    # Task 1 cannot write the secrets where they are, but may move their parent aside.
    assert run(conf, outer, f"echo bad > {inner}/key", docker_client) != 0
    run(conf, outer, f"mv {outer}/a {outer}/b", docker_client)
    # Task 2: the read-only grant's folder is now at b/secrets, with nothing mounted over it.
    run(conf, outer, f"echo bad > {outer}/b/secrets/key", docker_client)
    moved = outer / "b" / "secrets" / "key"
    text = (inner / "key").read_text() if inner.exists() else moved.read_text()
    assert text == "kept\n"
