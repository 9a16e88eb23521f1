"""Fixtures shared by the computer_use tests."""

from tests.sandbox.conftest import make_sandbox, workspace  # noqa: F401 (re-exported fixtures)
