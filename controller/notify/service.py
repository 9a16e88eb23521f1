"""The controller's notifications: the configured notifiers, the outbox, and its sender."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from controller.auth import Auth
from controller.errors import ConfigError
from controller.notify import create
from controller.notify.base import Notifier
from controller.notify.errors import DeliveryFailed, NotifierUnavailable, TargetGone
from controller.notify.sender import Sender
from controller.settings import Settings
from controller.store.db import Database
from controller.store.events import EventLog
from controller.store.models import Device
from controller.store.notifications import NotificationStore, Route

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TestResult:
    """How a test push to one subscription went."""

    subscription_id: int
    delivered: bool
    error: str | None = None


class Notifications:
    """Built with the controller; `start()` after the database is migrated, `stop()` at the end."""

    def __init__(self, settings: Settings, db: Database, events: EventLog, auth: Auth) -> None:
        self.settings = settings
        self.store = NotificationStore(db, settings.url)
        self.notifiers: dict[str, Notifier] = {}
        self.sender = Sender(self.store, {})
        self.store.on_added(self.sender.hand)
        events.watch(self.store.on_event)
        auth.on_revoke(self._revoked)
        self.webpush: Notifier | None = None

    def start(self) -> None:
        """Build the notifiers (the Web Push key is made on first start) and start sending.

        Raises:
            ConfigError: a notifier cannot be built.
        """
        config = self.settings.notify
        try:
            if config.webpush.enabled:
                self.webpush = create(
                    "webpush",
                    config.webpush,
                    data_dir=self.settings.data_dir,
                    public_url=self.settings.url,
                    subscription=self.store.subscription,
                )
                self.notifiers["webpush"] = self.webpush
            if config.ntfy is not None:
                self.notifiers["ntfy"] = create("ntfy", config.ntfy)
            if config.webhook is not None:
                self.notifiers["webhook"] = create("webhook", config.webhook)
        except NotifierUnavailable as exc:
            raise ConfigError(str(exc)) from None
        self.store.routes = tuple(
            Route(n.name, n.events, n.fan_out) for n in self.notifiers.values()
        )
        if self.store.db.is_sqlite:
            # One controller per SQLite database: a row leased by a sender that died with the
            # last process is tried now, not when its lease runs out.
            self.store.release_leases()
        removed = self.store.purge_revoked()
        if removed:
            log.info("removed %d push subscription(s) of revoked devices", removed)
        self.sender.notifiers = dict(self.notifiers)
        self.sender.start()

    def stop(self) -> None:
        self.sender.stop()
        for notifier in self.notifiers.values():
            notifier.close()

    def _revoked(self) -> None:
        # After the revocation committed: a revoked device's phone gets nothing more.
        try:
            self.store.purge_revoked()
        except Exception:
            log.exception("could not remove the push subscriptions of a revoked device")

    @property
    def vapid_public_key(self) -> str | None:
        from controller.notify.webpush import WebPushNotifier, public_key

        if not isinstance(self.webpush, WebPushNotifier):
            return None
        return public_key(self.webpush.vapid)

    def send_test(self, device: Device) -> list[TestResult]:
        """Push a test notification to each of `device`'s subscriptions now (not through the
        outbox: the person is waiting to see it arrive)."""
        from controller.notify.webpush import WebPushNotifier

        assert isinstance(self.webpush, WebPushNotifier)
        payload = {
            "event": "test",
            "event_id": 0,
            "title": "Dispatch",
            "body": f"Notifications reach {device.name}.",
            "url": f"{self.settings.url}/",
        }
        results = []
        for subscription in self.store.subscriptions(device.id):
            try:
                self.webpush.push(subscription, payload, topic=f"dispatch-test-{subscription.id}")
            except TargetGone as exc:
                self.store.remove_subscription(subscription.id, str(exc))
                results.append(TestResult(subscription.id, False, f"{exc}; it was removed"))
            except DeliveryFailed as exc:
                results.append(TestResult(subscription.id, False, str(exc)))
            else:
                results.append(TestResult(subscription.id, True))
        return results
