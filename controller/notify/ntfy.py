"""ntfy (https://ntfy.sh or a server of your own): one topic, published to as JSON.

The message goes to the server's root URL as JSON (ntfy's "publish as JSON"), which carries
the title, the text, a priority, and a click URL that opens the approval card or the task.
"""

from __future__ import annotations

from typing import Any

import httpx

from controller.notify import http
from controller.notify.base import Message
from controller.notify.config import NtfySettings

# ntfy priorities: 5 urgent (a person is being waited for), 4 high, 3 default.
PRIORITY = {"approval.requested": 5, "task.failed": 4, "task.interrupted": 4}
TAGS = {
    "approval.requested": ["raised_hand"],
    "task.succeeded": ["white_check_mark"],
    "task.failed": ["x"],
    "task.interrupted": ["warning"],
}


class NtfyNotifier:
    name = "ntfy"
    fan_out = False

    def __init__(self, settings: NtfySettings, client: httpx.Client | None = None) -> None:
        self.url = settings.url.rstrip("/") + "/"
        self.topic = settings.topic
        self.events = settings.events
        self._headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
        self._http = client or http.client()

    def body(self, message: Message) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "title": message.title,
            "message": message.body,
            "priority": PRIORITY.get(message.event, 3),
            "tags": TAGS.get(message.event, []),
            "click": message.url,
        }

    def send(self, message: Message, target: str) -> None:
        http.post(
            self._http, "the ntfy server", self.url, json=self.body(message), headers=self._headers
        )

    def close(self) -> None:
        self._http.close()


def create(settings: NtfySettings) -> NtfyNotifier:
    return NtfyNotifier(settings)
