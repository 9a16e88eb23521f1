"""Auth: every route but health and pairing needs a valid token; pairing; revocation."""

from __future__ import annotations

import hashlib
import html
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from conftest import LOCAL_BASE_URL, Api, FakeFactory
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from starlette.routing import BaseRoute, Route

from controller.api.app import create_app
from controller.auth import Auth
from controller.errors import Unauthorized
from controller.service import Controller
from controller.settings import Settings
from controller.store.db import Database

# Every route is in exactly one of these; a new route must be added to one (the walk below
# fails until it is), and the tests check that each behaves as classified.
PUBLIC = {
    ("GET", "/healthz"),
    ("POST", "/api/v1/pair"),
    ("GET", "/pair"),
    # The console: the pairing form signs a browser in; its assets and the local CA's
    # certificate (with install steps) are needed before a phone can sign in.
    ("POST", "/pair"),
    ("GET", "/static/{name}"),
    ("GET", "/ca.crt"),
    ("GET", "/ca"),
    ("GET", "/sw.js"),  # the service worker that shows Web Push notifications
}
# The console's pages: without a session a browser is sent to /pair (303), not given a 401.
PAGES = {
    ("GET", "/"),
    ("GET", "/threads/{thread_id}"),
    ("GET", "/tasks/{task_id}"),
    ("GET", "/approvals"),
    ("GET", "/memory"),
    ("GET", "/settings"),
    ("GET", "/tasks/{task_id}/audit"),
}
# The owner's powers: a device token gets 403 `owner_only` (revoking is allowed on itself only).
OWNER_ONLY = {("POST", "/api/v1/pairing-codes"), ("DELETE", "/api/v1/devices/{device_id}")}
DEVICE = {
    ("GET", "/metrics"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/devices"),
    ("GET", "/api/v1/folders"),
    ("POST", "/api/v1/threads"),
    ("GET", "/api/v1/threads"),
    ("GET", "/api/v1/threads/{thread_id}"),
    ("POST", "/api/v1/threads/{thread_id}/messages"),
    ("POST", "/api/v1/tasks"),
    ("GET", "/api/v1/tasks"),
    ("GET", "/api/v1/tasks/{task_id}"),
    ("POST", "/api/v1/tasks/{task_id}/cancel"),
    ("POST", "/api/v1/tasks/{task_id}/retry"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/tasks/{task_id}/events"),
    # What a task's sandbox reached (network "allowlist"): as visible as its output.
    ("GET", "/api/v1/tasks/{task_id}/network"),
    # A person decides approvals from any of their devices, and sees what the agent remembers.
    ("GET", "/api/v1/approvals"),
    ("GET", "/api/v1/approvals/{approval_id}"),
    ("GET", "/api/v1/approvals/{approval_id}/screenshot"),
    ("GET", "/api/v1/approvals/{approval_id}/annotated"),
    ("POST", "/api/v1/approvals/{approval_id}/decision"),
    ("GET", "/api/v1/policy"),
    ("GET", "/api/v1/memory"),
    ("GET", "/api/v1/memory/{path}"),
    ("PUT", "/api/v1/memory/{path}"),
    ("DELETE", "/api/v1/memory/{path}"),
    # Every device may check the record of what was done on the owner's machine.
    ("GET", "/api/v1/audit/head"),
    ("GET", "/api/v1/audit/verify"),
    ("GET", "/api/v1/tasks/{task_id}/audit"),
    ("GET", "/api/v1/audit/screenshots/{sha256}"),
    # A device manages its own Web Push subscriptions (tests/controller/notify).
    ("GET", "/api/v1/push/key"),
    ("GET", "/api/v1/push/subscriptions"),
    ("POST", "/api/v1/push/subscriptions"),
    ("DELETE", "/api/v1/push/subscriptions/{subscription_id}"),
    ("POST", "/api/v1/push/test"),
    # The console's fragments, live screen, result downloads and signing out (a device may).
    ("GET", "/fragments/tasks/{task_id}"),
    ("GET", "/fragments/approvals/{approval_id}"),
    ("GET", "/fragments/threads"),
    ("GET", "/fragments/pending"),
    ("GET", "/images/{sha}"),
    ("GET", "/tasks/{task_id}/files"),
    ("POST", "/signout"),
    ("GET", "/fragments/tasks/{task_id}/audit"),
    ("GET", "/tasks/{task_id}/audit/export"),
    ("POST", "/settings/notifications/test"),
    *PAGES,
}


def flatten(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    for route in routes:
        # Newer FastAPI wraps included routers; their routes are on the original router.
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from flatten(inner.routes)
        else:
            yield route


def route_table(api: Api) -> list[tuple[str, str]]:
    found = []
    for route in flatten(api.app.routes):
        if isinstance(route, APIRoute | Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    # `{path:path}` is `{path}` in the OpenAPI document.
                    found.append((method, re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)))
    return found


def test_every_route_but_health_and_pairing_requires_a_valid_token(api: Api) -> None:
    routes = route_table(api)
    documented = {
        (method.upper(), path)
        for path, operations in api.app.openapi()["paths"].items()
        for method in operations
    }
    assert documented <= set(routes), documented - set(routes)  # the walk misses nothing
    assert set(routes) >= PUBLIC
    for method, path in routes:
        if (method, path) in PUBLIC:
            continue
        url = re.sub(r"\{[^}]+\}", "1", path)
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic x"}):
            response = api.client.request(
                method, url, headers=headers, json={}, follow_redirects=False
            )
            if (method, path) in PAGES:
                assert response.status_code == 303, (method, path, headers, response.text)
                assert response.headers["location"] == "/pair"
                continue
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["WWW-Authenticate"] == "Bearer"


def test_every_route_is_classified_public_device_or_owner_only(api: Api) -> None:
    routes = set(route_table(api))
    assert not (PUBLIC & DEVICE or PUBLIC & OWNER_ONLY or DEVICE & OWNER_ONLY)
    unclassified = routes - PUBLIC - DEVICE - OWNER_ONLY
    assert not unclassified, f"classify {sorted(unclassified)} in PUBLIC, DEVICE or OWNER_ONLY"
    assert not (PUBLIC | DEVICE | OWNER_ONLY) - routes, "a classified route no longer exists"


def device_headers(api: Api, name: str = "phone") -> tuple[int, dict[str, str]]:
    """Pair a device through the API; its id and its Authorization header."""
    code = api.post("/api/v1/pairing-codes").json()["code"]
    _, body = pair(api, code, name)
    return int(body["device_id"]), {"Authorization": f"Bearer {body['token']}"}  # type: ignore[call-overload]


def call(api: Api, method: str, path: str, headers: dict[str, str], ids: str) -> int:
    url = re.sub(r"\{[^}]+\}", ids, path)
    # A malformed Last-Event-ID is refused after auth, so the event streams answer at once.
    response = api.client.request(method, url, headers={**headers, "Last-Event-ID": "x"}, json={})
    return response.status_code


def test_a_device_token_gets_403_naming_the_role_on_every_owner_only_route(api: Api) -> None:
    phone_id, phone = device_headers(api)
    other_id, _ = device_headers(api, "tablet")
    owner_id = next(d["id"] for d in api.get("/api/v1/devices").json() if d["role"] == "owner")
    for method, path in sorted(OWNER_ONLY):
        # Aimed at the owner, another device, and no device: never anything but 403.
        for target in (owner_id, other_id, 999):
            url = re.sub(r"\{[^}]+\}", str(target), path)
            response = api.client.request(method, url, headers=phone, json={})
            assert response.status_code == 403, (method, url, response.text)
            error = response.json()["error"]
            assert error["code"] == "owner_only"
            assert "needs the owner role" in error["message"]
            assert f"device 'phone' (id {phone_id}), which has the device role" in error["message"]
            assert "on the controller's machine" in error["message"]
    assert len(api.get("/api/v1/devices").json()) == 3  # nothing was revoked


def test_device_and_owner_tokens_pass_the_role_check_on_every_device_route(api: Api) -> None:
    _, phone = device_headers(api)
    for method, path in sorted(DEVICE):
        for headers in (phone, api.headers):
            status = call(api, method, path, headers, "999")
            assert status not in (401, 403), (method, path, headers, status)


def test_public_routes_answer_without_a_token(api: Api) -> None:
    assert api.client.get("/healthz").json()["status"] == "ok"
    assert "Pair with Dispatch" in api.client.get("/pair").text


def pair(api: Api, code: str, name: str = "phone") -> tuple[int, dict[str, object]]:
    response = api.client.post("/api/v1/pair", json={"code": code, "device_name": name})
    return response.status_code, response.json()


def test_pairing_gives_a_working_token_and_the_code_cannot_be_reused(api: Api) -> None:
    issued = api.post("/api/v1/pairing-codes").json()
    assert issued["url"].endswith(f"/pair?code={issued['code']}")
    status, body = pair(api, issued["code"].lower().replace("-", ""))  # as a person types it
    assert status == 201
    token = str(body["token"])
    assert len(token) >= 43  # 32 random bytes, url-safe base64: 256 bits
    devices = api.client.get("/api/v1/devices", headers={"Authorization": f"Bearer {token}"})
    assert devices.status_code == 200
    assert [d["name"] for d in devices.json()] == ["owner (this machine)", "phone"]
    status, body = pair(api, issued["code"])
    assert status == 401 and body["error"]["code"] == "invalid_pairing_code"  # type: ignore[index]


def test_an_expired_pairing_code_is_refused(api: Api) -> None:
    issued = api.controller.auth.issue_pairing_code(now=time.time() - 601)
    status, _ = pair(api, issued.code)
    assert status == 401


def test_wrong_codes_are_rate_limited_per_client_even_for_the_right_code(api: Api) -> None:
    issued = api.controller.auth.issue_pairing_code()
    for _ in range(5):
        assert pair(api, "AAAA-AAAA")[0] == 401
    response = api.client.post("/api/v1/pair", json={"code": issued.code, "device_name": "x"})
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    # Another client is not locked out by this one's guesses.
    device, _token = api.controller.auth.pair(issued.code, "other", "10.0.0.9")
    assert device.name == "other"


def test_guessing_is_bounded_overall(api: Api) -> None:
    auth = api.controller.auth
    now = time.time()
    for i in range(30):
        with pytest.raises(Exception, match="pairing code is wrong"):
            auth.pair("AAAA-AAAA", "x", f"10.0.{i}.1", now=now)
    with pytest.raises(Exception, match="too many wrong pairing codes"):
        auth.pair("AAAA-AAAA", "x", "10.9.9.9", now=now)


def test_revoked_tokens_stop_working_on_the_next_request(api: Api) -> None:
    _, body = pair(api, api.controller.auth.issue_pairing_code().code, "tablet")
    headers = {"Authorization": f"Bearer {body['token']}"}
    assert api.client.get("/api/v1/tasks", headers=headers).status_code == 200
    response = api.delete(f"/api/v1/devices/{body['device_id']}")
    assert response.status_code == 200 and response.json()["revoked_at"]
    assert api.client.get("/api/v1/tasks", headers=headers).status_code == 401
    listed = {d["id"]: d for d in api.get("/api/v1/devices").json()}
    assert listed[body["device_id"]]["revoked_at"] is not None  # type: ignore[index]


def test_the_owner_device_cannot_be_revoked_over_the_api(api: Api) -> None:
    owner = next(d for d in api.get("/api/v1/devices").json() if d["is_owner"])
    response = api.delete(f"/api/v1/devices/{owner['id']}")
    assert response.status_code == 409
    assert "owner-token" in response.json()["error"]["message"]
    assert api.delete("/api/v1/devices/999").status_code == 404


def test_tokens_are_stored_only_as_hashes_and_the_owner_token_file_is_private(
    api: Api, make_settings: Callable[..., object]
) -> None:
    _, body = pair(api, api.controller.auth.issue_pairing_code().code)
    data_dir = api.controller.settings.data_dir
    token_file = data_dir / "owner-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().strip() == api.token
    stored = b"".join(p.read_bytes() for p in data_dir.glob("dispatch.db*"))
    for token in (api.token, str(body["token"])):
        assert token.encode() not in stored
        assert hashlib.sha256(token.encode()).hexdigest().encode() in stored


def test_devices_show_last_seen(api: Api) -> None:
    api.get("/api/v1/tasks")
    owner = api.get("/api/v1/devices").json()[0]
    assert owner["last_seen_at"] is not None and owner["created_at"]


def test_the_pairing_url_opens_the_pair_page_with_the_code_filled_in(api: Api) -> None:
    issued = api.post("/api/v1/pairing-codes").json()
    response = api.client.get(issued["url"])  # exactly what the QR code holds
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert f'value="{issued["code"]}"' in response.text
    assert response.headers["Cache-Control"] == "no-store"


def test_the_pair_page_does_not_echo_anything_but_a_code(api: Api) -> None:
    hostile = '"><script>alert(1)</script>'
    response = api.client.get("/pair", params={"code": hostile})
    assert response.status_code == 200
    assert "<script>alert" not in response.text and html.escape(hostile) not in response.text
    assert 'value=""' in response.text
    assert api.client.get("/pair", params={"cod": "x"}).status_code == 422  # still strict


def started(settings: Settings) -> TestClient:
    controller = Controller(settings, factory=FakeFactory())
    app = create_app(settings, controller=controller)
    return TestClient(app, base_url=LOCAL_BASE_URL, raise_server_exceptions=False)


def status_with(client: TestClient, token: str) -> int:
    return client.get("/api/v1/tasks", headers={"Authorization": f"Bearer {token}"}).status_code


def test_deleting_the_owner_token_file_rotates_it(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    token_file = settings.data_dir / "owner-token"
    with started(settings) as client:
        token_a = token_file.read_text().strip()
        assert status_with(client, token_a) == 200
    token_file.unlink()
    with started(settings) as client:
        token_b = token_file.read_text().strip()
        assert token_b != token_a
        assert status_with(client, token_a) == 401
        assert status_with(client, token_b) == 200
    # Replacing the file by hand rotates it too; a restart that keeps the file keeps the token.
    token_c = "c" * 43
    token_file.write_text(token_c + "\n")
    for _restart in range(2):
        with started(settings) as client:
            assert status_with(client, token_b) == 401
            assert status_with(client, token_c) == 200
            devices = client.get("/api/v1/devices", headers={"Authorization": f"Bearer {token_c}"})
    owners = [d for d in devices.json() if d["is_owner"]]
    assert [d["revoked_at"] is not None for d in owners] == [True, True, False]


def test_rotation_on_a_shared_database_leaves_other_controllers_owner_tokens(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'shared.db'}")
    db.migrate()
    laptop, server = tmp_path / "laptop", tmp_path / "server"
    laptop_auth = Auth(db, shared=True, owner_host="laptop")
    server_auth = Auth(db, shared=True, owner_host="server")
    old_laptop = laptop_auth.ensure_owner_token(laptop)
    server_token = server_auth.ensure_owner_token(server)
    (laptop / "owner-token").unlink()
    new_laptop = laptop_auth.ensure_owner_token(laptop)
    with pytest.raises(Unauthorized):
        laptop_auth.authenticate(old_laptop)
    assert laptop_auth.authenticate(new_laptop).is_owner
    assert server_auth.authenticate(server_token).is_owner
    db.dispose()


def test_a_check_racing_a_revocation_never_caches_the_revoked_device(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = api.controller.auth
    device, token = auth.pair(auth.issue_pairing_code().code, "tablet", "10.0.0.7")
    real_read = auth.db.read
    revoked: list[int] = []

    @contextmanager
    def read_then_revoke() -> Iterator[Session]:
        # The check has read the device (still valid); the revocation commits before it goes on.
        with real_read() as session:
            yield session
        if not revoked:
            revoked.append(device.id)
            auth.revoke(device.id)

    reader: Callable[[], AbstractContextManager[Session]] = read_then_revoke
    monkeypatch.setattr(auth.db, "read", reader)
    assert auth.authenticate(token).id == device.id  # it started before the revocation
    monkeypatch.undo()
    assert revoked == [device.id]
    assert auth.cached(token) is None
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/api/v1/tasks", headers=headers).status_code == 401
