"""What ntfy and the webhook share: one httpx client, and an answer turned into a result."""

from __future__ import annotations

import contextlib
import contextvars
import logging

import httpx

from controller.notify.errors import DeliveryFailed

TIMEOUT_S = 10.0
_sending: contextvars.ContextVar[bool] = contextvars.ContextVar("notify_sending", default=False)


class _QuietWhileSending(logging.Filter):
    """Keep httpx's request lines out of the log for notifier requests: a receiver's URL may
    carry a secret (many webhook services put one in the path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _sending.get()


logging.getLogger("httpx").addFilter(_QuietWhileSending())


def client() -> httpx.Client:
    # trust_env=False: no proxy or .netrc credentials from the environment go to a receiver.
    return httpx.Client(timeout=TIMEOUT_S, trust_env=False, follow_redirects=False)


def post(http: httpx.Client, what: str, url: str, **kwargs: object) -> None:
    """POST and accept any 2xx.

    Raises:
        DeliveryFailed: unreachable, timed out, or any other answer (with Retry-After kept).
    """
    token = _sending.set(True)
    try:
        response = http.post(url, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{what} is unreachable ({type(exc).__name__})") from None
    finally:
        _sending.reset(token)
    if response.is_success:
        return
    retry_after: float | None = None
    with contextlib.suppress(ValueError):
        retry_after = float(response.headers.get("Retry-After", ""))
    raise DeliveryFailed(f"{what} answered {response.status_code}", retry_after_s=retry_after)
