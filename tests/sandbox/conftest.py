"""Fixtures for sandbox tests: a started sandbox per backend, cleaned up even on failure."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controller.settings import Settings, load_settings
from sandbox import Sandbox, SandboxSpec, create

BACKENDS = [
    pytest.param("fake", id="fake"),
    pytest.param("docker", marks=pytest.mark.docker, id="docker"),
    pytest.param("libvirt", marks=pytest.mark.libvirt, id="libvirt"),
]
# A non-root owner for folders the tests grant read-write.
OWNER = (4321, 4321)

MakeSandbox = Callable[..., Sandbox]


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A temporary folder owned by a normal user, outside every sensitive path."""
    path = Path(tempfile.mkdtemp(prefix="dispatch-test-"))
    os.chown(path, *OWNER)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def settings_from(config: Path, tmp_path: Path, backend: str = "docker") -> Settings:
    """The controller's settings with `config` as the config file (its folder grants), and
    nothing of this machine's."""
    return load_settings(
        {"data_dir": tmp_path / "data", "sandbox_backend": backend},
        {"XDG_CONFIG_HOME": str(tmp_path / "xdg")},
        config=config,
    )


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder under /tmp that every user may enter (the person runs git there afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="dispatch-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_sandbox(request: pytest.FixtureRequest) -> Iterator[MakeSandbox]:
    """Start sandboxes of a backend; each is stopped at the end, its id printed on failure."""
    started: list[Sandbox] = []

    def make(backend: str, spec: SandboxSpec | None = None) -> Sandbox:
        options = {}
        if backend == "docker":
            options["client"] = request.getfixturevalue("docker_client")
        box = create(backend, spec or SandboxSpec(), **options)
        box.start()
        started.append(box)
        print(f"started {backend} sandbox {box.id}")
        return box

    yield make
    for box in started:
        box.stop()
