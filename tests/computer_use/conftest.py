"""Fixtures for computer_use tests; `fake_model` (the fake Messages API) is in tests/conftest.py."""

# The sandbox fixtures, for the tools that run inside a sandbox.
from tests.sandbox.conftest import make_sandbox, workspace  # noqa: F401
