"""The console's audit page, its export download, the service worker and the notification test,
in process: a task's timeline and verification render, the zip is `dispatch audit export`'s
folder and verifies on its own, an edited log is named on the page."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from conftest import Api
from test_console_session import ORIGIN, browser, pair_browser

from computer_use.audit.chain import LOG_NAME
from computer_use.audit.export import verify_export
from controller.web.session import csrf_token


def finished_command(api: Api) -> int:
    task = api.submit(["echo", "audited"])
    api.wait_task(task["id"])
    return int(task["id"])


def test_the_audit_page_shows_the_steps_and_that_the_chain_verifies(api: Api) -> None:
    task_id = finished_command(api)
    token = pair_browser(api)
    with browser(api, token) as b:
        card = b.get(f"/fragments/tasks/{task_id}")
        assert f'href="/tasks/{task_id}/audit"' in card.text  # linked from the task card
        page = b.get(f"/tasks/{task_id}/audit")
    assert page.status_code == 200, page.text
    assert "<script>" not in page.text and " style=" not in page.text
    assert 'data-ok="true"' in page.text and "Verified" in page.text
    for words in ("Task submitted", "Task started", "Task finished: succeeded"):
        assert words in page.text
    head = api.get("/api/v1/audit/head").json()
    assert f'data-audit-head="{head["seq"]}:{head["hash"]}"' in page.text


def test_an_edited_entry_is_named_on_the_audit_page(api: Api) -> None:
    task_id = finished_command(api)
    log = api.controller.audit.root / LOG_NAME
    log.write_bytes(log.read_bytes().replace(b'"echo"', b'"rm  "', 1))
    token = pair_browser(api)
    with browser(api, token) as b:
        page = b.get(f"/tasks/{task_id}/audit")
    assert page.status_code == 200
    assert 'data-ok="false"' in page.text and "NOT verified" in page.text
    assert 'First bad entry: <a href="#seq-1">#1</a> (line 1): edited' in page.text
    assert 'class="entry kind-task_submitted bad" id="seq-1"' in page.text


def test_the_export_download_is_the_cli_export_as_a_zip_and_verifies_on_its_own(
    api: Api, tmp_path: Path
) -> None:
    task_id = finished_command(api)
    token = pair_browser(api)
    with browser(api, token) as b:
        response = b.get(f"/tasks/{task_id}/audit/export")
        assert b.get("/tasks/999/audit/export").status_code == 404
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert f"dispatch-audit-task-{task_id}.zip" in response.headers["content-disposition"]
    zipfile.ZipFile(io.BytesIO(response.content)).extractall(tmp_path)
    folder = tmp_path / f"dispatch-audit-task-{task_id}"
    names = {p.name for p in folder.iterdir()}
    assert {"entries.jsonl", "chain.jsonl", "head.json", "index.html", "shots"} <= names
    assert json.loads((folder / "head.json").read_text())["task"] == task_id
    assert verify_export(folder).ok
    assert not list(Path("/tmp").glob(f"dispatch-export-*/dispatch-audit-task-{task_id}.zip"))


def test_the_service_worker_is_served_at_the_root_without_a_session(api: Api) -> None:
    response = api.client.get("/sw.js", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert 'addEventListener("push"' in response.text


def test_the_notification_test_needs_the_csrf_token_and_reports_each_channel(api: Api) -> None:
    token = pair_browser(api)
    with browser(api, token) as b:
        settings = b.get("/settings")
        assert "Notifications" in settings.text and 'data-action="push-test"' in settings.text
        refused = b.post("/settings/notifications/test", headers=ORIGIN)
        assert refused.status_code == 403
        sent = b.post(
            "/settings/notifications/test", headers={"X-CSRF-Token": csrf_token(token), **ORIGIN}
        )
    assert sent.status_code == 200, sent.text
    assert sent.json() == {"results": []}  # no subscription, no ntfy, no webhook


def test_the_notification_settings_never_show_a_token_secret_or_query() -> None:
    from types import SimpleNamespace

    from controller.notify.config import NotifySettings, NtfySettings, WebhookSettings
    from controller.web.notifications import notify_view, shown_url

    assert shown_url("https://hooks.example:8443/in/abc?token=s3cret#x") == (
        "https://hooks.example:8443/in/abc?…"
    )
    assert shown_url("http://[::1]:9/h") == "http://[::1]:9/h"
    settings = SimpleNamespace(
        notify=NotifySettings(
            ntfy=NtfySettings(url="https://ntfy.sh", topic="my-topic", token="tk_secret"),
            webhook=WebhookSettings(url="https://example.com/hook?sig=q_secret", secret="w_secret"),
        )
    )
    c = SimpleNamespace(
        settings=settings,
        notify=SimpleNamespace(
            vapid_public_key=None, store=SimpleNamespace(subscriptions=lambda _id: [])
        ),
    )
    shown = notify_view(c, SimpleNamespace(id=1))  # type: ignore[arg-type]
    text = repr(shown)
    assert "my-topic" in text and "https://example.com/hook?…" in text
    assert shown["ntfy"]["token"] is True and shown["webhook"]["signed"] is True
    for secret in ("tk_secret", "q_secret", "w_secret"):
        assert secret not in text
