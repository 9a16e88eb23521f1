"""The console's sessions in process: pairing signs a browser in with a cookie, pages need it,
a cookie alone cannot change anything without the CSRF token and our Origin, and revoking the
device ends the session."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
from conftest import LOCAL_BASE_URL, Api
from fastapi.testclient import TestClient
from sqlalchemy import update

from controller.store.models import Task, TaskKind
from controller.web.session import COOKIE, csrf_token

ORIGIN = {"Origin": LOCAL_BASE_URL}


def pair_browser(api: Api, name: str = "phone") -> str:
    """Pair through the form as a browser does; the session token from the cookie."""
    code = api.controller.auth.issue_pairing_code().code
    response = api.client.post(
        "/pair",
        content=f"code={code}&device_name={name}",
        headers={"Content-Type": "application/x-www-form-urlencoded", **ORIGIN},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; under TLS it is (see the browser tests)
    token = re.match(rf"{COOKIE}=([^;]+)", cookie)
    assert token is not None
    api.client.cookies.clear()
    return token.group(1)


@contextmanager
def browser(api: Api, token: str) -> Iterator[httpx.Client]:
    """A client of its own with only the session cookie (the app is already started)."""
    client = TestClient(
        api.app, base_url=LOCAL_BASE_URL, cookies={COOKIE: token}, follow_redirects=False
    )
    try:
        yield client
    finally:
        client.close()


def test_pairing_signs_the_browser_in_and_every_page_renders_with_the_csp(api: Api) -> None:
    token = pair_browser(api)
    with browser(api, token) as b:
        for path in ("/", "/approvals", "/memory", "/settings"):
            response = b.get(path)
            assert response.status_code == 200, (path, response.text)
            csp = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert "<script>" not in response.text and " style=" not in response.text
            assert f'content="{csrf_token(token)}"' in response.text
        thread = b.post(
            "/api/v1/threads",
            json={"name": "taxes"},
            headers={"X-CSRF-Token": csrf_token(token), **ORIGIN},
        )
        assert thread.status_code == 201, thread.text
        page = b.get(f"/threads/{thread.json()['id']}")
        assert page.status_code == 200 and "taxes" in page.text


def test_without_a_session_pages_send_the_browser_to_pairing_and_the_rest_is_401(api: Api) -> None:
    anonymous = api.client
    for path in ("/", "/approvals", "/threads/1", "/settings", "/memory"):
        response = anonymous.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/pair", path
    assert anonymous.get("/fragments/tasks/1").status_code == 401
    assert anonymous.get("/static/console.css").status_code == 200
    with browser(api, "not-a-token") as bogus:
        response = bogus.get("/", follow_redirects=False)
    assert response.headers["location"] == "/pair#signed-out"
    assert f"{COOKIE}=;" in response.headers["set-cookie"]  # the dead cookie is dropped


def test_a_cookie_alone_changes_nothing_without_the_csrf_token_and_our_origin(api: Api) -> None:
    token = pair_browser(api)
    good = {"X-CSRF-Token": csrf_token(token), **ORIGIN}
    attempts = [
        {},  # a cross-site form post: no token, no matching Origin
        {"X-CSRF-Token": csrf_token(token)},  # no Origin
        {"X-CSRF-Token": csrf_token(token), "Origin": "https://evil.example"},
        {"X-CSRF-Token": "0" * 64, **ORIGIN},
        {**ORIGIN},
    ]
    with browser(api, token) as b:
        for headers in attempts:
            response = b.post("/api/v1/threads", json={"name": "x"}, headers=headers)
            assert response.status_code == 403, (headers, response.text)
            assert response.json()["error"]["code"] == "csrf"
        assert api.get("/api/v1/threads").json() == []
        assert b.post("/api/v1/threads", json={"name": "x"}, headers=good).status_code == 201
    # A program's bearer token needs neither.
    assert api.post("/api/v1/threads", json={"name": "y"}).status_code == 201


def test_a_cross_site_pairing_post_is_refused(api: Api) -> None:
    code = api.controller.auth.issue_pairing_code().code
    response = api.client.post(
        "/pair",
        content=f"code={code}&device_name=phone",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": "https://evil.example",
        },
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers
    assert [d["name"] for d in api.get("/api/v1/devices").json()] == ["owner (this machine)"]


def test_a_wrong_code_shows_the_form_again_with_the_reason(api: Api) -> None:
    response = api.client.post(
        "/pair",
        content="code=AAAA-AAAA&device_name=phone",
        headers={"Content-Type": "application/x-www-form-urlencoded", **ORIGIN},
    )
    assert response.status_code == 401
    assert "the pairing code is wrong" in response.text and "set-cookie" not in response.headers


def test_revoking_the_device_ends_its_session(api: Api) -> None:
    token = pair_browser(api)
    device_id = next(d["id"] for d in api.get("/api/v1/devices").json() if d["name"] == "phone")
    with browser(api, token) as b:
        assert b.get("/").status_code == 200
        assert api.delete(f"/api/v1/devices/{device_id}").status_code == 200
        assert b.get("/").headers["location"] == "/pair#signed-out"
        assert b.get("/api/v1/threads").status_code == 401


def test_signing_out_revokes_this_device(api: Api) -> None:
    token = pair_browser(api)
    with browser(api, token) as b:
        response = b.post("/signout", headers={"X-CSRF-Token": csrf_token(token), **ORIGIN})
        assert response.status_code == 303
        assert b.get("/api/v1/threads").status_code == 401
    phone = next(d for d in api.get("/api/v1/devices").json() if d["name"] == "phone")
    assert phone["revoked_at"] is not None


def test_a_tasks_changed_files_are_listed_and_downloadable_and_nothing_else(
    api: Api, workspace: Path
) -> None:
    app = workspace / "projects" / "app"
    (app / "old.txt").write_text("from before")
    os.utime(app / "old.txt", (1_000_000, 1_000_000))
    (workspace / "elsewhere" / "secret.txt").write_text("not a result")
    os.symlink(workspace / "elsewhere", app / "link")
    task = api.submit(["echo", "hi"], folders=[{"path": str(app), "mode": "rw"}])
    done = api.wait_task(task["id"])
    # What the task "wrote" (the fake sandbox keeps files in memory): stamped inside its run.
    made = app / "report.txt"
    made.write_text("the report")
    started = datetime.fromisoformat(done["started_at"]).timestamp()
    os.utime(made, (started, started))
    os.utime(workspace / "elsewhere" / "secret.txt", (started, started))
    token = pair_browser(api)
    with browser(api, token) as b:
        card = b.get(f"/fragments/tasks/{task['id']}").text
        assert str(made) in card and "old.txt" not in card and "secret.txt" not in card
        got = b.get(f"/tasks/{task['id']}/files", params={"path": str(made)})
        assert got.status_code == 200 and got.content == b"the report"
        assert "attachment" in got.headers["content-disposition"]
        assert got.headers["content-security-policy"] == "sandbox"
        os.mkfifo(app / "pipe")  # a planted FIFO must not hang the request
        planted = (app / "old.txt", app / "link" / "secret.txt", workspace / "elsewhere")
        for path in (*planted, app / "pipe"):
            refused = b.get(f"/tasks/{task['id']}/files", params={"path": str(path)})
            assert refused.status_code == 404, path
        dotted = f"{app}/../../elsewhere/secret.txt"
        assert b.get(f"/tasks/{task['id']}/files", params={"path": dotted}).status_code == 404


def test_the_live_screen_image_is_served_to_a_session_only(api: Api) -> None:
    sha = api.controller.blobs.put(b"\x89PNG\r\n\x1a\nscreen")
    assert api.client.get(f"/images/{sha}").status_code == 401
    with browser(api, pair_browser(api)) as b:
        shown = b.get(f"/images/{sha}")
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
        assert b.get("/images/" + "0" * 64).status_code == 404


def test_a_running_agent_tasks_card_shows_its_latest_screenshot(api: Api) -> None:
    task = api.submit(["sleep", "30"])
    api.wait_task(task["id"], ("running",))
    # Stand in for an agent mid-run: its kind, and steps whose tool results hold screenshots.
    with api.controller.db.write() as session:
        session.execute(
            update(Task).where(Task.id == task["id"]).values(kind=TaskKind.AGENT, agent={})
        )
    row = api.controller.tasks.get(task["id"])
    first = api.controller.blobs.put(b"\x89PNG\r\n\x1a\nfirst")
    second = api.controller.blobs.put(b"\x89PNG\r\n\x1a\nsecond")
    with browser(api, pair_browser(api)) as b:
        for sha in (first, second):
            step = {"index": 0, "kind": "tools", "text": "", "tool_calls": [], "tokens_in": 0}
            step |= {"tokens_out": 0, "at": 0.0, "results": [{"images": [sha], "text": ""}]}
            api.controller.tasks.append_step(row, step)
            card = b.get(f"/fragments/tasks/{task['id']}").text
            assert f'src="/images/{sha}"' in card and "Live screen" in card
    api.post(f"/api/v1/tasks/{task['id']}/cancel")
    with browser(api, pair_browser(api, "tablet")) as b:
        assert "Live screen" not in b.get(f"/fragments/tasks/{task['id']}").text
