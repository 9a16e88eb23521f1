"""Fixtures for computer_use tests: the scripted fake Messages API, started per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from computer_use.testing.fake_model import FakeModel


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


# The sandbox fixtures, for the tools that run inside a sandbox.
from tests.sandbox.conftest import make_sandbox, workspace  # noqa: E402, F401
