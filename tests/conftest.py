"""Shared fixtures: the real Docker engine for tests marked `docker`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
