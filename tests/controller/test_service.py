"""Start-up: the data directory and the SQLite files are private to the user who runs it."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import LOCAL_BASE_URL, FakeFactory
from fastapi.testclient import TestClient

from controller.api.app import create_app
from controller.service import Controller
from controller.settings import Settings


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The common 022, so files are world-readable unless start-up makes them otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run_once(settings: Settings) -> None:
    controller = Controller(settings, factory=FakeFactory())
    app = create_app(settings, controller=controller)
    with TestClient(app, base_url=LOCAL_BASE_URL) as client:
        headers = {"Authorization": f"Bearer {controller.owner_token}"}
        response = client.post("/api/v1/tasks", json={"command": ["true"]}, headers=headers)
        assert response.status_code == 202, response.text
        files = {p.name: mode(p) for p in settings.data_dir.glob("dispatch.db*")}
        # While it runs, the write-ahead log and shared memory exist too.
        assert files == {"dispatch.db": 0o600, "dispatch.db-wal": 0o600, "dispatch.db-shm": 0o600}


def test_start_makes_the_data_directory_and_database_private(
    make_settings: Callable[..., Settings], loose_umask: None
) -> None:
    settings = make_settings()
    settings.data_dir.mkdir(mode=0o755)
    assert mode(settings.data_dir) == 0o755
    run_once(settings)
    assert mode(settings.data_dir) == 0o700
    # Loosened since (a restore from a backup, say): tightened again at the next start.
    settings.data_dir.chmod(0o755)
    (settings.data_dir / "dispatch.db").chmod(0o644)
    run_once(settings)
    assert mode(settings.data_dir) == 0o700
    assert mode(settings.data_dir / "dispatch.db") == 0o600


def test_a_database_outside_the_data_directory_is_private_too(
    make_settings: Callable[..., Settings], workspace: Path, loose_umask: None
) -> None:
    database = workspace / "db" / "queue.db"
    database.parent.mkdir()
    settings = make_settings(database_url=f"sqlite:///{database}")
    controller = Controller(settings, factory=FakeFactory())
    with TestClient(create_app(settings, controller=controller), base_url=LOCAL_BASE_URL):
        assert {p.name: mode(p) for p in database.parent.iterdir()} == {
            "queue.db": 0o600,
            "queue.db-wal": 0o600,
            "queue.db-shm": 0o600,
        }
