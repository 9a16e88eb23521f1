"""Errors of the notifiers.

    NotifyError
     ├── NotifierUnavailable   a notifier cannot be built (library missing, bad key file)
     ├── DeliveryFailed        this try failed; the sender tries again later
     └── TargetGone            the destination no longer exists (a push subscription answered
                               404/410); its notifications are dropped and the subscription removed

A failure to deliver is never the task's failure: the sender logs it and retries with backoff.
"""

from __future__ import annotations


class NotifyError(Exception):
    """Base of every notifier error."""


class NotifierUnavailable(NotifyError):
    """The notifier cannot be built; the message says what to install or fix."""


class DeliveryFailed(NotifyError):
    """One try failed (unreachable, timed out, 5xx, 429, a refused request)."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TargetGone(NotifyError):
    """The destination is gone for good; retrying cannot help."""
