"""What a notification says, and the small interface every notifier implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Message:
    """One notification, as stored in the outbox and sent by every notifier.

    `event` is one of config.NOTIFY_EVENTS; `url` opens the approval card or the task in the
    console. `as_json()` is the webhook's body and the Web Push payload.
    """

    event: str
    event_id: int
    title: str
    body: str
    url: str
    created_at: float
    thread: dict[str, Any]
    task: dict[str, Any]
    approval: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "event_id": self.event_id,
            "title": self.title,
            "body": self.body,
            "url": self.url,
            "created_at": self.created_at,
            "thread": self.thread,
            "task": self.task,
            "approval": self.approval,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        return cls(**data)

    @property
    def expires_at(self) -> float | None:
        """When an approval request stops being decidable (a later notice is pointless)."""
        return self.approval["expires_at"] if self.approval else None


class Notifier(Protocol):
    """Sends messages to one kind of destination. Blocking; the sender calls it in a thread.

    `fan_out` notifiers (Web Push) have one destination per subscription: each gets its own
    outbox row, and `send` is given the subscription's id as `target`; the others get "".
    """

    name: str
    events: tuple[str, ...]
    fan_out: bool

    def send(self, message: Message, target: str) -> None:
        """Deliver `message` once.

        Raises:
            DeliveryFailed: try again later.
            TargetGone: the destination is gone; never try it again.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...
