"""The head start of `dispatch run` (controller/headless/headstart.py), with in-memory sandboxes.

The real engine's side (one container per run, none left behind, a swapped folder) is in
test_headless.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from controller.headless.headstart import HeadStart
from sandbox import Mount, Network, Sandbox, SandboxSpec, create
from sandbox.fake import FakeSandbox

SPEC = SandboxSpec(
    mounts=(Mount(host=Path("/srv/app"), read_only=True),),
    deadline_s=3630.0,
    labels={},
)


class Made:
    """A sandbox factory keeping what it made, for any backend name (in-memory sandboxes)."""

    def __init__(self, *, fail: Exception | None = None) -> None:
        self.boxes: list[FakeSandbox] = []
        self.fail = fail

    def __call__(self, backend: str, spec: SandboxSpec) -> Sandbox:
        box = create("fake", spec)
        assert isinstance(box, FakeSandbox)
        self.boxes.append(box)
        if self.fail is not None:
            box.start = self._failing_start  # type: ignore[method-assign]
        return box

    def _failing_start(self) -> None:
        assert self.fail is not None
        raise self.fail


def running(box: Sandbox) -> bool:
    return isinstance(box, FakeSandbox) and box._running and not box._stopped


def test_the_runner_gets_the_started_sandbox_when_its_spec_is_the_same() -> None:
    made, runners = Made(), Made()
    head = HeadStart("docker", SPEC, create=made)
    factory = head.factory(runners)
    # The runner's own spec carries the task's label, which the head start cannot know.
    box = factory("docker", dataclasses.replace(SPEC, labels={"dispatch.task": "1"}))
    assert box is made.boxes[0] and running(box)
    assert runners.boxes == [] and head.handed_over
    head.close()
    assert running(box), "a sandbox handed over is its runner's to remove"
    # Only the first sandbox: the next task's is made as always.
    assert factory("docker", SPEC) is runners.boxes[0]


@pytest.mark.parametrize(
    "other",
    [
        SandboxSpec(mounts=(Mount(host=Path("/srv/app"), read_only=False),), deadline_s=3630.0),
        SandboxSpec(
            mounts=(Mount(host=Path("/srv/app"), read_only=True, identity=(1, 2)),),
            deadline_s=3630.0,
        ),
        SandboxSpec(mounts=SPEC.mounts, deadline_s=60.0),
        SandboxSpec(mounts=SPEC.mounts, deadline_s=3630.0, network=Network.OPEN),
        SandboxSpec(mounts=SPEC.mounts, deadline_s=3630.0, user=(1000, 1000)),
    ],
    ids=["read-write", "another-folder-identity", "timeout", "network", "user"],
)
def test_another_spec_gets_a_new_sandbox_and_the_started_one_is_removed(
    other: SandboxSpec,
) -> None:
    made = Made()
    head = HeadStart("docker", SPEC, create=made)
    box = head.factory(made)("docker", other)
    assert box is made.boxes[1] and box.spec == other
    assert not running(made.boxes[0]), "the head start's sandbox was left running"
    assert not head.handed_over


def test_another_backend_gets_a_new_sandbox() -> None:
    made = Made()
    head = HeadStart("docker", SPEC, create=made)
    box = head.factory(made)("libvirt", SPEC)
    assert box is made.boxes[1]
    assert not running(made.boxes[0])


def test_a_failed_start_leaves_the_runner_to_start_its_own() -> None:
    made = Made(fail=ConnectionError("the engine went away"))
    head = HeadStart("docker", SPEC, create=made)
    assert head.take("docker", SPEC) is None
    assert made.boxes[0]._stopped, "what the failed start made must be removed"


def test_a_run_that_ends_first_removes_the_started_sandbox() -> None:
    made = Made()
    head = HeadStart("docker", SPEC, create=made)
    head.close()
    assert not running(made.boxes[0])
    assert head.take("docker", SPEC) is None  # nothing to hand over after close
    head.close()  # twice is fine


@pytest.mark.parametrize(
    ("backend", "spec"),
    [("libvirt", SPEC), ("docker", SandboxSpec(network=Network.ALLOWLIST, allow=("a.test",)))],
)
def test_only_a_docker_sandbox_without_an_egress_proxy_gets_one(
    backend: str, spec: SandboxSpec
) -> None:
    with pytest.raises(ValueError, match="docker sandbox without an egress proxy"):
        HeadStart(backend, spec, create=Made())
