"""ntfy and the webhook, delivered to receivers on loopback; a failing receiver is retried
with backoff while the task finishes on time; `[notify]` mistakes stop start-up naming the fix."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Api
from harness import notify_settings, receiver_fixture, start_api_fixture  # noqa: F401
from receivers import Receiver, wait_until

from controller.errors import ConfigError


def test_ntfy_gets_the_message_with_its_token_and_a_link_to_the_task(
    start_api: Callable[..., Api], receiver: Receiver
) -> None:
    api = start_api(
        f'[notify.ntfy]\nurl = "{receiver.url}"\ntopic = "dispatch-test"\ntoken = "tk_secret"\n'
        "[notify.webpush]\nenabled = false\n"
    )
    task = api.submit(["sh", "-c", "exit 3"], thread="builds")
    assert api.wait_task(task["id"])["status"] == "failed"
    request = wait_until(lambda: receiver.requests, 10, "the ntfy message")[0]
    assert request.path == "/"
    assert request.headers["authorization"] == "Bearer tk_secret"
    body = request.json()
    assert body["topic"] == "dispatch-test"
    assert body["title"] == f"Task {task['id']} failed · builds"
    assert body["message"].startswith(f"Task {task['id']}: sh -c 'exit 3'")
    assert body["priority"] == 4
    assert body["click"] == (
        f"{api.controller.settings.url}/threads/{task['thread_id']}#task-{task['id']}"
    )


def test_the_webhook_is_signed_over_the_exact_body(
    start_api: Callable[..., Api], receiver: Receiver
) -> None:
    secret = "s3cret-for-hmac"
    api = start_api(
        f'[notify.webhook]\nurl = "{receiver.url}/hook"\nsecret = "{secret}"\n'
        'events = ["task.succeeded"]\n'
    )
    failed = api.submit(["sh", "-c", "exit 1"], thread="t")
    api.wait_task(failed["id"])
    task = api.submit(["echo", "done"], thread="t")
    api.wait_task(task["id"])
    request = wait_until(lambda: receiver.requests, 10, "the webhook")[0]
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["x-dispatch-signature"], expected)
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.body)
    assert body["event"] == request.headers["x-dispatch-event"] == "task.succeeded"
    assert str(body["event_id"]) == request.headers["x-dispatch-delivery"]
    assert body["task"] == {"id": task["id"], "status": "succeeded", "summary": "echo done"}
    assert body["thread"]["name"] == "t"
    # Only the events it asked for: the failed task was not sent.
    assert len(receiver.requests) == 1
    assert [r.notifier for r in api.controller.notify.store.rows()] == ["webhook"]


def test_a_failing_receiver_is_retried_and_the_task_finishes_meanwhile(
    start_api: Callable[..., Api], receiver: Receiver
) -> None:
    receiver.statuses = [503, 500]
    api = start_api(f'[notify.webhook]\nurl = "{receiver.url}"\n')
    task = api.submit(["echo", "hi"])
    finished = api.wait_task(task["id"])
    assert finished["status"] == "succeeded"
    # The task was done before the receiver ever accepted anything.
    assert not receiver.requests
    delivered = wait_until(lambda: receiver.requests, 15, "a retry to succeed")
    assert len(receiver.refused) == 2 and len(delivered) == 1
    (row,) = wait_until(
        lambda: [r for r in api.controller.notify.store.rows() if r.sent_at], 10, "the sent mark"
    )
    assert row.attempts == 3 and row.last_error is None
    # Retried with backoff: about 1 s, then about 2 s.
    tries = [r.at for r in [*receiver.refused, *delivered]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert gaps[0] >= 0.7 and gaps[1] >= 1.5, gaps
    assert all(r.body == delivered[0].body for r in receiver.refused)


def test_the_webhook_url_stays_out_of_the_log(
    start_api: Callable[..., Api], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = start_api(f'[notify.webhook]\nurl = "{receiver.url}/hooks/T0/B0/secretpath"\n')
    task = api.submit(["echo", "hi"])
    api.wait_task(task["id"])
    wait_until(lambda: receiver.requests, 10, "the webhook")
    api.get("/api/v1/tasks")  # httpx in the same process still logs its own requests
    assert "secretpath" not in caplog.text


def test_an_unreachable_receiver_is_logged_and_nothing_else_waits(
    start_api: Callable[..., Api], caplog: pytest.LogCaptureFixture
) -> None:
    # A port nothing listens on.
    api = start_api('[notify.webhook]\nurl = "http://127.0.0.1:9"\n')
    tasks = [api.submit(["echo", str(i)], thread=f"t{i}") for i in range(3)]
    assert [api.wait_task(t["id"])["status"] for t in tasks] == ["succeeded"] * 3
    wait_until(lambda: "the webhook is unreachable" in caplog.text, 10, "the failure to be logged")
    assert "trying again in" in caplog.text


@pytest.mark.parametrize(
    ("notify", "expected"),
    [
        ('[notify.ntfy]\nurl = "https://ntfy.sh"\n', "needs topic"),
        ('[notify.ntfy]\nurl = "ntfy.sh"\ntopic = "a"\n', "full http:// or https:// URL"),
        ('[notify.ntfy]\nurl = "https://ntfy.sh"\ntopic = "a b"\n', "letters, digits"),
        ('[notify.webhook]\nurl = "https://u:p@example.com"\n', "carries credentials"),
        ('[notify.webhook]\nurl = "https://example.com"\nsecrit = "x"\n', "unknown keys"),
        ('[notify.webhook]\nurl = "https://example.com"\nevents = ["task.done"]\n', "task.failed"),
        ("[notify.email]\nto = 'me'\n", "unknown notifiers"),
        ("[notify.webpush]\nenabled = 'yes'\n", "true or false"),
        ("[notify.webpush]\nsubject = 'me@example.com'\n", "mailto:"),
    ],
)
def test_notify_mistakes_stop_start_up_naming_the_fix(
    workspace: Path, notify: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        notify_settings(workspace, notify)
    assert expected in str(raised.value)
    assert "[notify" in str(raised.value) or "notify" in str(raised.value)


def test_secrets_are_not_in_the_settings_repr(workspace: Path) -> None:
    settings = notify_settings(
        workspace,
        '[notify.ntfy]\nurl = "https://ntfy.sh"\ntopic = "t"\ntoken = "tk_hidden"\n'
        '[notify.webhook]\nurl = "https://example.com"\nsecret = "hidden-secret"\n',
    )
    assert settings.notify.ntfy is not None and settings.notify.ntfy.token == "tk_hidden"
    assert "tk_hidden" not in repr(settings) and "hidden-secret" not in repr(settings)


def test_a_broken_outbox_never_fails_the_task(
    start_api: Callable[..., Api], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    api = start_api(f'[notify.webhook]\nurl = "{receiver.url}"\n')
    with api.controller.db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE notifications")
    task = api.submit(["echo", "still runs"])
    finished = api.wait_task(task["id"])
    assert finished["status"] == "succeeded"
    assert finished["output"][0]["text"] == "still runs\n"
    assert "could not queue the notifications" in caplog.text


@pytest.mark.postgres
def test_the_outbox_works_on_postgresql(
    start_api: Callable[..., Api], receiver: Receiver, postgres_url: str
) -> None:
    api = start_api(f'[notify.webhook]\nurl = "{receiver.url}"\n', database_url=postgres_url)
    receiver.statuses = [503]
    tasks = [api.submit(["echo", str(i)], thread=f"t{i}") for i in range(3)]
    for task in tasks:
        api.wait_task(task["id"])
    wait_until(lambda: len(receiver.requests) == 3, 15, "three webhooks")
    assert sorted(r.json()["task"]["id"] for r in receiver.requests) == [t["id"] for t in tasks]


def test_old_rows_are_pruned_and_unsent_ones_kept(
    start_api: Callable[..., Api], receiver: Receiver
) -> None:
    receiver.statuses = [503] * 1000
    api = start_api(f'[notify.webhook]\nurl = "{receiver.url}"\n')
    store = api.controller.notify.store
    tasks = [api.submit(["echo", str(i)], thread=f"t{i}") for i in range(2)]
    for task in tasks:
        api.wait_task(task["id"])
    wait_until(lambda: len(store.rows()) == 2, 10, "two rows")
    first, second = store.rows()
    store.mark_sent(first, now=1000.0)
    assert store.prune(before=2000.0) == 1
    assert [r.id for r in store.rows()] == [second.id]  # unsent: kept
