"""Auth: every route but health and pairing needs a valid token; pairing; revocation."""

from __future__ import annotations

import hashlib
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator

import pytest
from conftest import Api
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Route

PUBLIC = {("GET", "/healthz"), ("POST", "/api/v1/pair"), ("GET", "/pair")}


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
                    found.append((method, route.path))
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
            response = api.client.request(method, url, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["WWW-Authenticate"] == "Bearer"


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
