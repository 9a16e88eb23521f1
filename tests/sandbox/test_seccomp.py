"""The engine's seccomp profile (sandbox/seccomp.py): derived as data, and in force from exec.

The docker test runs its commands with a raw `docker exec`, without the `confine` wrapper, so
what it shows is the engine's own filter, installed by runc before the first instruction.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import docker
import pytest

from sandbox import SandboxSpec
from sandbox.mounts import validate_mount
from sandbox.seccomp import BASE_PROFILE, SeccompProfileMissing, derive, profile_json
from tests.sandbox.conftest import MakeSandbox

GUARDED = ("chmod", "fchmod", "fchmodat", "mknod", "mknodat", "open", "openat", "creat")


def _rules_for(profile: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in profile["syscalls"] if name in r["names"]]


def test_the_derived_profile_drops_ptrace_and_guards_every_mode_call() -> None:
    profile = json.loads(profile_json())
    for name in ("ptrace", "process_vm_readv", "process_vm_writev"):
        (rule,) = _rules_for(profile, name)
        assert (rule["action"], rule["errnoRet"]) == ("SCMP_ACT_ERRNO", 1), name
    for name in GUARDED:
        rules = _rules_for(profile, name)
        assert rules, name
        # Allowed only on a condition: an unconditional allow would win over the rest.
        assert all(r["args"] for r in rules if r["action"] == "SCMP_ACT_ALLOW"), name
    for name in ("openat2", "io_uring_setup", "io_uring_enter", "io_uring_register"):
        (rule,) = _rules_for(profile, name)
        assert (rule["action"], rule["errnoRet"]) == ("SCMP_ACT_ERRNO", 38)
    # Everything else of the base is kept, the base itself untouched.
    base = json.loads(BASE_PROFILE.read_text())
    assert profile["defaultAction"] == base["defaultAction"]
    assert any("read" in r["names"] for r in profile["syscalls"])
    assert derive(base) == profile and any("ptrace" in r["names"] for r in base["syscalls"])


def test_every_rule_tests_an_argument_at_most_once() -> None:
    # runc splits a rule testing one argument twice into ORed rules: none may rely on that.
    for rule in json.loads(profile_json())["syscalls"]:
        indexes = [a["index"] for a in rule.get("args") or []]
        assert len(indexes) == len(set(indexes)), rule


def test_a_missing_base_profile_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(SeccompProfileMissing, match="apt-get install golang-github-containers"):
        profile_json(tmp_path / "seccomp.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SeccompProfileMissing, match="reinstall"):
        profile_json(tmp_path / "bad.json")


@pytest.mark.docker
def test_the_engine_filter_holds_without_the_wrapper(
    make_sandbox: MakeSandbox, workspace: Path, docker_client: docker.DockerClient
) -> None:
    box = make_sandbox("docker", SandboxSpec(mounts=(validate_mount(workspace, read_only=False),)))
    security = docker_client.api.inspect_container(box.id)["HostConfig"]["SecurityOpt"]
    assert any(opt.startswith("seccomp=") for opt in security), security
    script = (
        "cp /bin/true t && chmod 755 t && echo ordinary-ok; "
        "chmod 4755 t 2>/dev/null || echo chmod-refused; "
        'python3 -c \'import ctypes; print("ptrace", ctypes.CDLL(None, use_errno=True)'
        ".ptrace(0, 0, 0, 0), ctypes.get_errno())'"
    )
    # A raw exec, as the sandbox user, with no `confine` in front of it.
    container = docker_client.containers.get(box.id)
    _, output = container.exec_run(["sh", "-c", script], user="4321:4321", workdir=str(workspace))
    text = output.decode()
    assert "ordinary-ok" in text and "chmod-refused" in text, text
    assert "ptrace -1 1" in text, text  # EPERM
    assert (workspace / "t").stat().st_mode & (stat.S_ISUID | stat.S_ISGID) == 0
