"""Shared fixtures: the real Docker engine for tests marked `docker`, and the scripted fake
Messages API for the agent's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from computer_use.testing.fake_model import FakeModel
from sandbox.base import DEFAULT_IMAGE


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    """A client for the real engine; fails (not skips) when it is missing: CI must run these."""
    from sandbox.docker import connect

    client = connect()
    try:
        client.images.get(DEFAULT_IMAGE)
    except Exception:
        pytest.fail(f"{DEFAULT_IMAGE} is not built; run `make test` or `dispatch images build`")
    yield client
    client.close()


@pytest.fixture
def fake_model(request: pytest.FixtureRequest) -> Iterator[FakeModel]:
    """A started FakeModel named after the test; script it with `.add(...)`.

    At teardown the script must have been used up exactly: a request that found it empty, or a
    turn never asked for, fails the test even if the agent under test swallowed the error.
    """
    model = FakeModel(name=request.node.nodeid)
    model.start()
    try:
        yield model
    finally:
        model.stop()
    model.assert_script_done()
