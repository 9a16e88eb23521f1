"""The controller on a real PostgreSQL server: schema, concurrency, events, crash recovery, auth.

Each test gets a fresh database on the session's throwaway cluster (`postgres_url`). The same
behaviour is tested on SQLite elsewhere; these prove it holds when writers are not serialised
by one process, as with several controllers sharing one queue.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import Api, LiveServer, reconnect_until_caught_up
from fastapi.testclient import TestClient
from sqlalchemy import func, inspect, select
from test_recovery import REPO, ServeProcess, check_sigkill_with_tasks_running_and_queued

from controller.api.app import create_app
from controller.client import Client
from controller.service import Controller
from controller.settings import Settings
from controller.store.db import MIGRATIONS_DIR, Database
from controller.store.models import Base, Thread
from controller.store.models import Event as EventRow

# A lock-up shows as a failure in a minute, not after the suite-wide 300 s.
pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]


def run_together(count: int, work: Callable[[int], None]) -> None:
    """Run `work(0..count-1)` on threads released at once; re-raise the first failure."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(10)
            work(i)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    if errors:
        raise errors[0]


def test_migrations_build_the_models_schema_and_rerun_safely(postgres_url: str) -> None:
    # Controllers sharing a database may start together: each migrates it, and none fails.
    migrate = f"from controller.store.db import Database; Database({postgres_url!r}).migrate()"
    starting = [
        subprocess.Popen([sys.executable, "-c", migrate], cwd=REPO, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for process in starting:
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr.decode()[-2000:]
    database = Database(postgres_url)
    try:
        assert database.is_postgres
        database.migrate()
        with database.engine.connect() as connection:
            version = connection.exec_driver_sql("SHOW server_version_num").scalar()
            assert int(version or 0) >= 150000
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
            revision = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
            # The newest migration, whichever it is: a new one must not need this test edited.
            head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
            assert revision.scalars().all() == [head]
        tables = set(inspect(database.engine).get_table_names())
        assert tables >= {"tasks", "events", "devices", "threads", "pairing_codes", "messages"}
    finally:
        database.dispose()


def test_a_plain_postgresql_url_uses_the_installed_driver(
    postgres_url: str, make_api: Callable[..., Api]
) -> None:
    # What the README tells people to write: no "+psycopg", or Heroku-style "postgres://".
    for scheme in ("postgresql://", "postgres://"):
        database = Database(postgres_url.replace("postgresql+psycopg://", scheme))
        try:
            database.migrate()
            assert database.engine.dialect.driver == "psycopg"
        finally:
            database.dispose()


def test_concurrent_submissions_keep_each_threads_order(
    postgres_url: str, make_api: Callable[..., Api]
) -> None:
    api = make_api(database_url=postgres_url, max_concurrent_tasks=3)
    clients, per_client = 4, 6
    sent: dict[int, list[tuple[str, int]]] = {i: [] for i in range(clients)}

    def submit(i: int) -> None:
        # Every client also writes to one thread none of them has created yet.
        for n in range(per_client):
            thread = "shared" if n % 2 else f"own-{i}"
            sent[i].append((thread, api.submit(["echo", f"{i}-{n}"], thread=thread)["id"]))

    run_together(clients, submit)
    done = {
        task_id: api.wait_task(task_id, timeout_s=30) for ids in sent.values() for _, task_id in ids
    }
    assert {t["status"] for t in done.values()} == {"succeeded"}
    for i, ids in sent.items():
        # Each client's tasks were accepted in the order it sent them, in every thread.
        for thread in {name for name, _ in ids}:
            mine = [task_id for name, task_id in ids if name == thread]
            assert mine == sorted(mine), (i, thread)
    with api.controller.db.read() as session:
        threads = session.scalars(select(Thread).order_by(Thread.name)).all()
        created = session.scalar(
            select(func.count()).where(EventRow.kind == "thread.created").select_from(EventRow)
        )
    assert [t.name for t in threads] == ["own-0", "own-1", "own-2", "own-3", "shared"]
    assert created == 5
    for thread in threads:
        history = api.get(f"/api/v1/threads/{thread.id}").json()["history"]
        tasks = [done[item["task"]["id"]] for item in history]
        assert [t["position"] for t in tasks] == list(range(len(tasks)))
        assert [t["id"] for t in tasks] == sorted(t["id"] for t in tasks)
        # One at a time, in submission order.
        for earlier, later in itertools.pairwise(tasks):
            assert earlier["finished_at"] <= later["started_at"], (thread.name, earlier, later)


def test_resuming_with_last_event_id_has_no_gaps_and_no_duplicates(
    postgres_url: str, make_live_server: Callable[..., LiveServer]
) -> None:
    server = make_live_server(database_url=postgres_url, max_concurrent_tasks=4)
    with Client(server.url, server.token) as client:
        # Four tasks write output at once, while submissions add events of their own.
        tasks = [client.submit(["stream", "30", "0.02"], thread=f"t{i}") for i in range(4)]
        tasks += [client.submit(["echo", str(i)], thread=f"e{i}") for i in range(6)]
        # Reconnect every few events (`after=` is sent as Last-Event-ID) until caught up.
        collected = reconnect_until_caught_up(client, server, tasks, every=5)
    expected = [e.id for e in server.controller.events.after(0, limit=100_000)]
    assert collected == expected
    assert len(set(collected)) == len(collected) > 80


@pytest.fixture
def serve_postgres(workspace: Path, postgres_url: str) -> Iterator[Callable[..., ServeProcess]]:
    made: list[ServeProcess] = []

    def make(max_concurrent: int = 1) -> ServeProcess:
        process = ServeProcess(workspace, "fake", max_concurrent, database_url=postgres_url)
        made.append(process)
        process.start()
        return process

    yield make
    for process in made:
        process.stop()
        # Shown by pytest only when the test failed.
        print(f"--- {process.log} ---\n{process.log.read_text()[-4000:]}")


def test_sigkill_with_tasks_running_and_queued(serve_postgres: Callable[..., ServeProcess]) -> None:
    check_sigkill_with_tasks_running_and_queued(serve_postgres(max_concurrent=1))


def test_pair_use_and_revoke_a_token_across_two_controllers(
    postgres_url: str, make_api: Callable[..., Api], make_settings: Callable[..., Settings]
) -> None:
    api = make_api(database_url=postgres_url)
    # A second controller on the same database, as on another machine sharing the queue.
    other = Controller(make_settings(database_url=postgres_url))
    app = create_app(other.settings, controller=other)
    with TestClient(app, base_url="http://127.0.0.1") as second:
        issued = api.post("/api/v1/pairing-codes").json()
        codes = [issued["code"]] * 6
        answers: list[int] = [0] * len(codes)
        tokens: list[str] = []

        def pair(i: int) -> None:
            client = api.client if i % 2 else second
            body = {"code": codes[i], "device_name": f"phone-{i}"}
            response = client.post("/api/v1/pair", json=body)
            answers[i] = response.status_code
            if response.status_code == 201:
                tokens.append(response.json()["token"])

        # One code, many racing claims: it is single use.
        run_together(len(codes), pair)
        assert sorted(answers) == [201] + [401] * (len(codes) - 1), answers
        headers = {"Authorization": f"Bearer {tokens[0]}"}
        assert second.get("/api/v1/tasks", headers=headers).status_code == 200
        assert api.client.get("/api/v1/tasks", headers=headers).status_code == 200
        devices = api.get("/api/v1/devices").json()
        phone = next(d for d in devices if d["name"].startswith("phone-"))
        assert len([d for d in devices if d["name"].startswith("phone-")]) == 1
        assert api.delete(f"/api/v1/devices/{phone['id']}").status_code == 200
        # Revoked on one controller, refused by both on the very next request.
        assert api.client.get("/api/v1/tasks", headers=headers).status_code == 401
        assert second.get("/api/v1/tasks", headers=headers).status_code == 401
