"""Bad input gets a JSON error with the right status and a message that says what to fix."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from conftest import Api


def error(response: object) -> dict[str, str]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    found: dict[str, str] = body["error"]
    return found


def test_malformed_json_is_a_400(api: Api) -> None:
    response = api.post(
        "/api/v1/tasks", content=b'{"command": [', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert error(response)["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"command": []}, "body.command"),
        ({}, "body.command"),
        ({"command": "ls"}, "body.command"),
        ({"command": ["ls"], "timeout": 5}, "body.timeout"),
        ({"command": ["ls"], "network": "host"}, "body.network"),
        ({"command": ["ls"], "timeout_s": -1}, "body.timeout_s"),
        ({"command": ["a\x00b"]}, "NUL"),
        ({"command": ["ls"], "thread": ""}, "body.thread"),
    ],
)
def test_invalid_task_bodies_are_422_naming_the_field(
    api: Api, body: dict[str, object], named: str
) -> None:
    response = api.post("/api/v1/tasks", json=body)
    assert response.status_code == 422
    assert named in error(response)["message"]


def test_unknown_ids_and_routes_are_404(api: Api) -> None:
    assert "dispatch tasks" in error(api.get("/api/v1/tasks/12345"))["message"]
    assert api.get("/api/v1/threads/12345").status_code == 404
    response = api.get("/api/v1/nothing-here")
    assert response.status_code == 404 and error(response)["code"] == "not_found"


def test_a_wrong_method_is_a_405_in_the_same_shape(api: Api) -> None:
    response = api.client.put("/api/v1/tasks", headers=api.headers, json={})
    assert response.status_code == 405
    assert error(response)["code"] == "method_not_allowed"


def test_ids_beyond_64_bits_are_422_not_a_crash(api: Api) -> None:
    assert api.get(f"/api/v1/tasks/{2**70}").status_code == 422


def test_oversized_bodies_are_refused_with_413(make_api: Callable[..., Api]) -> None:
    api = make_api(max_body_bytes=2048)
    big = {"command": ["echo", "x" * 4000]}
    response = api.post("/api/v1/tasks", json=big)
    assert response.status_code == 413
    assert "max_body_bytes" in error(response)["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit still holds
        yield b'{"command": ["echo", "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"]}'

    response = api.post(
        "/api/v1/tasks", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert api.get("/api/v1/tasks").json() == []  # nothing was queued


def test_an_internal_error_is_a_json_500_without_a_stack_trace(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**_kwargs: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(api.controller.tasks, "search", broken)
    response = api.get("/api/v1/tasks")
    assert response.status_code == 500
    found = error(response)
    assert found["code"] == "internal"
    assert "secret" not in response.text and "Traceback" not in response.text


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8420", "127.0.0.1.evil.example", "localhost@evil", "a b"]
)
def test_a_host_header_naming_another_site_is_a_400(api: Api, host: str) -> None:
    # What a page on a DNS-rebinding name sends once its name points at 127.0.0.1.
    response = api.get("/api/v1/tasks", headers={"Host": host})
    assert response.status_code == 400
    found = error(response)
    assert found["code"] == "bad_host" and "public_url" in found["message"]
    assert api.client.get("/pair", headers={"Host": host}).status_code == 400


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8420", "localhost", "LOCALHOST:8420", "[::1]:8420", "192.168.1.20:8420"]
)
def test_loopback_names_and_ip_addresses_are_accepted_as_host(api: Api, host: str) -> None:
    assert api.get("/api/v1/tasks", headers={"Host": host}).status_code == 200


def test_the_public_url_host_is_accepted(make_api: Callable[..., Api]) -> None:
    api = make_api(public_url="https://dispatch.example.org")
    assert api.get("/api/v1/tasks", headers={"Host": "dispatch.example.org"}).status_code == 200
    assert api.get("/api/v1/tasks", headers={"Host": "other.example.org"}).status_code == 400
