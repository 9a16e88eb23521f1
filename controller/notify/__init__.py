"""Notifications: a person hears when an approval is needed and when a task ends.

    event (approval.requested, task.state)      ─ in its transaction ─▶  outbox rows
    outbox ─▶ Sender (threads, retries with backoff) ─▶ Notifier.send ─▶ Web Push | ntfy | webhook

Notifiers implement `base.Notifier` and are chosen by name from `BACKENDS`, imported lazily
(`webpush` needs pywebpush). `service.Notifications` puts the pieces together for the
controller.
"""

from __future__ import annotations

import importlib
from typing import Any

from controller.notify.base import Message, Notifier
from controller.notify.errors import (
    DeliveryFailed,
    NotifierUnavailable,
    NotifyError,
    TargetGone,
)

# name -> module whose `create(settings, **options)` builds it
BACKENDS: dict[str, str] = {
    "webpush": "controller.notify.webpush",
    "ntfy": "controller.notify.ntfy",
    "webhook": "controller.notify.webhook",
}


def create(name: str, settings: Any, **options: Any) -> Notifier:
    """Build the named notifier from its settings table.

    Raises:
        NotifierUnavailable: the name is unknown or its library cannot be imported.
    """
    try:
        module_name = BACKENDS[name]
    except KeyError:
        raise NotifierUnavailable(
            f"unknown notifier {name!r}; choose one of: {', '.join(sorted(BACKENDS))}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise NotifierUnavailable(
            f"notifier {name!r} cannot load ({exc}); reinstall dispatch"
        ) from exc
    notifier: Notifier = module.create(settings, **options)
    return notifier


__all__ = [
    "BACKENDS",
    "DeliveryFailed",
    "Message",
    "Notifier",
    "NotifierUnavailable",
    "NotifyError",
    "TargetGone",
    "create",
]
