"""A generic webhook: the message as a JSON POST, signed with HMAC-SHA256 when a secret is set.

    POST <url>
    Content-Type: application/json
    X-Dispatch-Event: approval.requested
    X-Dispatch-Delivery: 42              (the event id: the same on every retry, to deduplicate)
    X-Dispatch-Signature: sha256=HEX     (HMAC-SHA256 of the exact body, keyed by the secret)

A receiver checks the signature over the raw body before parsing it, with a constant-time
comparison (`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx

from controller.notify import http
from controller.notify.base import Message
from controller.notify.config import WebhookSettings


def signature(secret: str, body: bytes) -> str:
    """The X-Dispatch-Signature value for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    name = "webhook"
    fan_out = False

    def __init__(self, settings: WebhookSettings, client: httpx.Client | None = None) -> None:
        self.url = settings.url
        self.events = settings.events
        self._secret = settings.secret
        self._http = client or http.client()

    def send(self, message: Message, target: str) -> None:
        body = json.dumps(message.as_json(), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Dispatch-Event": message.event,
            "X-Dispatch-Delivery": str(message.event_id),
        }
        if self._secret:
            headers["X-Dispatch-Signature"] = signature(self._secret, body)
        http.post(self._http, "the webhook", self.url, content=body, headers=headers)

    def close(self) -> None:
        self._http.close()


def create(settings: WebhookSettings) -> WebhookNotifier:
    return WebhookNotifier(settings)
