"""Fixtures for the notification tests: a controller whose config.toml has `[notify]` tables,
and the loopback receivers of `receivers`. Imported by the test modules (a conftest.py here
would shadow tests/controller/conftest.py, which other modules import as `conftest`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from conftest import LOCAL_BASE_URL, Api, FakeFactory
from fastapi.testclient import TestClient
from receivers import PushService, Receiver

from controller.api.app import create_app
from controller.service import Controller
from controller.settings import Settings, load_settings


def write_config(workspace: Path, notify: str) -> Path:
    config = workspace / "conf" / "config.toml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(f'[[folders]]\npath = "{workspace / "projects"}"\nmode = "rw"\n\n{notify}')
    return config


def notify_settings(workspace: Path, notify: str, **flags: Any) -> Settings:
    flags = {"data_dir": workspace / "data", "sandbox_backend": "fake", **flags}
    environ = {"XDG_CONFIG_HOME": str(workspace / "xdg-config")}
    return load_settings(flags, environ, config=write_config(workspace, notify))


PUSH_ON_LOOPBACK = "[notify.webpush]\nallow_http_endpoints = true\n"


# Named apart from the fixtures' names, so test modules can import them (as `from harness
# import ...`) without their parameters shadowing the import.
@pytest.fixture(name="push_service")
def push_service_fixture() -> Iterator[PushService]:
    service = PushService()
    yield service
    print(f"push stand-in errors: {service.errors}")
    service.close()


@pytest.fixture(name="receiver")
def receiver_fixture() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


@pytest.fixture(name="start_api")
def start_api_fixture(workspace: Path) -> Iterator[Callable[..., Api]]:
    """Start a controller in process with `[notify]` config `notify`; stop it at the end."""
    with ExitStack() as stack:

        def start(notify: str = PUSH_ON_LOOPBACK, **flags: Any) -> Api:
            factory = FakeFactory()
            controller = Controller(notify_settings(workspace, notify, **flags), factory=factory)
            app = create_app(controller.settings, controller=controller)
            client = stack.enter_context(
                TestClient(app, base_url=LOCAL_BASE_URL, raise_server_exceptions=False)
            )
            return Api(app, client, controller, factory)

        yield start


def pair_device(api: Api, name: str = "phone") -> tuple[int, dict[str, str]]:
    code = api.post("/api/v1/pairing-codes").json()["code"]
    body = api.client.post("/api/v1/pair", json={"code": code, "device_name": name}).json()
    return int(body["device_id"]), {"Authorization": f"Bearer {body['token']}"}
