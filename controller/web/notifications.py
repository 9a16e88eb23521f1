"""Settings → Notifications: what is configured, this device's Web Push subscriptions, a test.

Subscribing happens in the browser (`static/console.js` registers `/sw.js`, asks PushManager
for a subscription with the controller's VAPID key, and posts it to `/api/v1/push/
subscriptions`). The test (`POST /settings/notifications/test`) sends one notification now
to each of this device's subscriptions and to ntfy and the webhook when they are configured,
and says how each went. Secrets (the ntfy token, the webhook's signing secret, any password or
query in their URLs) are never shown.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from controller.api.push import PushSubscriptionOut
from controller.api.routes import Authed, Ctl, current_device, known_query_only
from controller.notify.base import Message
from controller.notify.errors import NotifyError
from controller.service import Controller
from controller.store.models import Device

fragments = APIRouter(
    dependencies=[Depends(current_device), Depends(known_query_only)], include_in_schema=False
)


def shown_url(url: str) -> str:
    """`url` without what may be a secret: a user and password, a query, a fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}" + ("?…" if parts.query else "")


def notify_view(c: Controller, device: Device) -> dict[str, Any]:
    """What the settings page shows about notifications."""
    config = c.settings.notify
    ntfy = config.ntfy
    webhook = config.webhook
    return {
        "webpush": config.webpush.enabled and c.notify.vapid_public_key is not None,
        "webpush_events": config.webpush.events,
        "subscriptions": [
            PushSubscriptionOut.of(s) for s in c.notify.store.subscriptions(device.id)
        ],
        "ntfy": None
        if ntfy is None
        else {
            "url": shown_url(ntfy.url),
            "topic": ntfy.topic,
            "token": ntfy.token is not None,
            "events": ntfy.events,
        },
        "webhook": None
        if webhook is None
        else {
            "url": shown_url(webhook.url),
            "signed": webhook.secret is not None,
            "events": webhook.events,
        },
    }


class TestSent(BaseModel):
    channel: str
    target: str
    delivered: bool
    error: str | None = None


class TestSentOut(BaseModel):
    results: list[TestSent]


def send_test(c: Controller, device: Device) -> list[TestSent]:
    """One test notification to this device's subscriptions, ntfy and the webhook, now."""
    sent: list[TestSent] = []
    if c.notify.vapid_public_key is not None:
        origins = {
            s.id: PushSubscriptionOut.of(s).endpoint_origin
            for s in c.notify.store.subscriptions(device.id)
        }
        for result in c.notify.send_test(device):
            target = f"Web Push ({origins.get(result.subscription_id, 'this device')})"
            sent.append(
                TestSent(
                    channel="webpush", target=target, delivered=result.delivered, error=result.error
                )
            )
    message = Message(
        event="test",
        event_id=0,
        title="Dispatch",
        body=f"A test from {device.name}: notifications reach you here.",
        url=f"{c.settings.url}/settings",
        created_at=time.time(),
        thread={},
        task={},
    )
    for name, target in (("ntfy", "ntfy"), ("webhook", "Webhook")):
        notifier = c.notify.notifiers.get(name)
        if notifier is None:
            continue
        try:
            notifier.send(message, "")
        except NotifyError as exc:
            sent.append(TestSent(channel=name, target=target, delivered=False, error=str(exc)))
        else:
            sent.append(TestSent(channel=name, target=target, delivered=True))
    return sent


@fragments.post("/settings/notifications/test")
def test_notifications(c: Ctl, device: Authed) -> TestSentOut:
    """Send a test notification to every place this device's notifications go."""
    return TestSentOut(results=send_test(c, device))
