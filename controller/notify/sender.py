"""The background sender: takes due rows from the outbox, sends them, and records the outcome.

It runs in its own threads and never raises into the controller: a notifier that fails is
retried with backoff (1 s, 2 s, 4 s … at most 5 min, or what the receiver's Retry-After asks)
and logged; after `MAX_ATTEMPTS` tries, or once an approval it announces has expired, the row is
dropped and logged. Tasks never wait for it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from controller.notify.base import Message, Notifier
from controller.notify.errors import DeliveryFailed, TargetGone
from controller.store.models import Notification
from controller.store.notifications import NotificationStore

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 12
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 300.0
# The sender re-reads the outbox at least this often (rows added by another controller
# sharing the database, retries coming due).
POLL_S = 5.0
WORKERS = 4
# Sent and dropped rows are kept this long (to look into), then deleted, once an hour.
KEEP_S = 7 * 24 * 3600.0
PRUNE_EVERY_S = 3600.0


def backoff_s(attempts: int, retry_after_s: float | None = None) -> float:
    """How long to wait after the `attempts`-th failed try (with ±20 % jitter)."""
    wait = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** max(0, attempts - 1))
    wait *= random.uniform(0.8, 1.2)
    if retry_after_s is not None:
        wait = max(wait, min(retry_after_s, 3600.0))
    return wait


class Sender:
    """Sends the outbox with a few worker threads; `wake()` after rows are added."""

    def __init__(self, store: NotificationStore, notifiers: Mapping[str, Notifier]) -> None:
        self.store = store
        self.notifiers = dict(notifiers)
        self._wake = threading.Event()
        # Rows this process just added, already leased to it: sent without claiming.
        self._handed: list[int] = []
        self._handed_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def start(self) -> None:
        if self._thread is not None or not self.notifiers:
            return
        self._stop.clear()
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="notify-send")
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look at the outbox now (safe from any thread, cheap)."""
        self._wake.set()

    def hand(self, ids: list[int]) -> None:
        """Send these rows, added and leased to this process, now (from any thread)."""
        with self._handed_lock:
            self._handed.extend(ids)
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop taking rows; tries in flight get `timeout_s` to finish (unfinished rows are
        retried after the next start, when their lease runs out)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _run(self) -> None:
        pruned_at = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            if time.monotonic() - pruned_at > PRUNE_EVERY_S:
                pruned_at = time.monotonic()
                try:
                    self.store.prune(time.time() - KEEP_S)
                except Exception:
                    log.exception("notifications: cannot prune the outbox")
            with self._handed_lock:
                handed, self._handed = self._handed, []
            try:
                for row in self.store.leased(handed) if handed else ():
                    assert self._pool is not None
                    self._pool.submit(self._deliver, row)
                rows = self.store.claim()
                for row in rows:
                    assert self._pool is not None
                    self._pool.submit(self._deliver, row)
                next_due = self.store.next_due()
            except Exception:  # the database is sick: keep the controller up, try again later
                log.exception("notifications: cannot read the outbox; trying again in %g s", POLL_S)
                rows, next_due = [], None
            if len(rows) == 50:
                continue
            wait = POLL_S if next_due is None else min(POLL_S, max(0.0, next_due - time.time()))
            self._wake.wait(wait)

    def _deliver(self, row: Notification) -> None:
        try:
            self._try(row)
        except Exception:  # a bug in a notifier must not kill the worker
            log.exception(
                "notifications: %s for event %s failed unexpectedly", row.notifier, row.event_id
            )
            try:
                self.store.retry_later(row, "internal error", time.time() + backoff_s(row.attempts))
            except Exception:
                log.exception("notifications: cannot record the failure")

    def _try(self, row: Notification) -> None:
        message = Message.from_json(row.payload)
        notifier = self.notifiers.get(row.notifier)
        what = f"{row.notifier} notification of {message.event} (event {row.event_id})"
        now = time.time()
        if notifier is None:
            self.dropped += 1
            self.store.drop(row, f"notifier {row.notifier} is no longer configured")
            log.warning("notifications: dropped the %s: the notifier is no longer configured", what)
            return
        if message.expires_at is not None and message.expires_at <= now:
            self.dropped += 1
            self.store.drop(row, "the approval request expired before it could be delivered")
            log.warning("notifications: dropped the %s: the request has expired", what)
            return
        try:
            notifier.send(message, row.target)
        except TargetGone as exc:
            self.dropped += 1
            if row.notifier == "webpush" and row.target:
                self.store.remove_subscription(int(row.target), str(exc))
                log.info("notifications: push subscription %s removed: %s", row.target, exc)
            else:
                self.store.drop(row, str(exc))
                log.warning("notifications: dropped the %s: %s", what, exc)
            return
        except DeliveryFailed as exc:
            self.failed += 1
            if row.attempts >= MAX_ATTEMPTS:
                self.dropped += 1
                self.store.drop(row, f"gave up after {row.attempts} tries: {exc}")
                log.error(
                    "notifications: gave up on the %s after %d tries: %s", what, row.attempts, exc
                )
                return
            wait = backoff_s(row.attempts, exc.retry_after_s)
            self.store.retry_later(row, str(exc), now + wait)
            log.warning(
                "notifications: the %s failed (try %d): %s; trying again in %.0f s",
                what,
                row.attempts,
                exc,
                wait,
            )
            self.wake()
            return
        self.store.mark_sent(row)
        self.sent += 1
        log.debug("notifications: sent the %s", what)
