"""Errors raised by the computer_use package.

    ComputerUseError             root: catch this to handle any computer_use failure
    ├── PolicyError              an approval policy does not parse; names the field and the fix
    └── AuditError               the audit log cannot be written or read as it must be (a full
                                 disk, a log cut or edited behind the writer's back)

A call the policy denies is not an error: it is a `Verdict` the caller acts on, and the model
receives the denial as a tool result.
"""

from __future__ import annotations


class ComputerUseError(Exception):
    """Root of every error the computer_use package raises."""


class PolicyError(ComputerUseError):
    """A policy that does not parse; `field` is where (`rules[2].decision`), the message the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class AuditError(ComputerUseError):
    """The audit log could not record an entry durably, or is not in a state it can extend.

    Raised by `append` so the action it guards never runs unrecorded; the message names the fix.
    """
