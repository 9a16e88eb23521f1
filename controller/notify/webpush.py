"""Web Push (RFC 8030) to the console installed on a phone, with pywebpush.

The controller identifies itself to push services with a VAPID key pair (RFC 8292), made once
and kept in the data directory (`vapid_private_key.pem`, 0600); browsers subscribe with its
public key. Each payload is encrypted for one subscription (RFC 8291, aes128gcm) by pywebpush:
no cryptography is written here. A push service answering 404 or 410 means the subscription
is gone: the notification is dropped and the subscription removed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid
from pywebpush import WebPushException, webpush

from controller.notify.base import Message
from controller.notify.config import WebPushSettings
from controller.notify.errors import DeliveryFailed, NotifierUnavailable, TargetGone
from controller.store.models import PushSubscription

KEY_FILE = "vapid_private_key.pem"
TIMEOUT_S = 10.0
# How long a push service keeps a message for a phone that is offline.
TTL_S = 24 * 3600
# Sent with each message so a push service holding an undelivered copy (a retry after a crash)
# replaces it rather than showing it twice (RFC 8030 §5.4: at most 32 base64url characters).
TOPIC_PREFIX = "dispatch-"
GONE = (404, 410)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_or_create_key(data_dir: Path) -> Vapid:
    """The controller's VAPID key, created on first use; the file is readable by this user only.

    Raises:
        NotifierUnavailable: the file cannot be read or written, or is not a P-256 key.
    """
    path = data_dir / KEY_FILE
    try:
        if not path.exists():
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            # O_EXCL: two controllers starting together keep whichever key was written first.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as out:
                    out.write(pem)
                    out.flush()
                    os.fsync(out.fileno())
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise NotifierUnavailable(
            f"the Web Push key {path} cannot be used ({exc}); delete it to make a new one "
            "(subscribed devices must then subscribe again)"
        ) from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
        raise NotifierUnavailable(
            f"the Web Push key {path} is not a P-256 key; delete it to make a new one"
        )
    return Vapid(private_key=loaded)


def public_key(vapid: Vapid) -> str:
    """The applicationServerKey a browser subscribes with: the raw point, base64url."""
    raw = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(raw)


def default_subject(public_url: str) -> str:
    """A VAPID contact: the controller's https address, else a placeholder address.

    Only a bare https://host is a contact pywebpush accepts: with a port or a path (the usual
    https://192.168.1.20:8420) it refuses to sign, and every push would fail.
    """
    parts = urlsplit(public_url)
    host = parts.hostname or ""
    if parts.scheme == "https" and re.fullmatch(r"localhost|[\w-]+\.[\w.-]+", host):
        return f"https://{host}"
    return "mailto:dispatch@localhost"


# What a push service's endpoint looks like: no user, printable ASCII without spaces (the API
# documents it; written so JSON Schema's regexes and Python's read it alike).
ENDPOINT = r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?"
ENDPOINT_RE = re.compile(ENDPOINT)
HTTP_ENDPOINT_RE = re.compile("http" + ENDPOINT[len("https") :])


def check_endpoint(endpoint: str, *, allow_http: bool) -> str | None:
    """Why a subscription's endpoint is refused, or None when it is usable."""
    if ENDPOINT_RE.fullmatch(endpoint) or (allow_http and HTTP_ENDPOINT_RE.fullmatch(endpoint)):
        return None
    if HTTP_ENDPOINT_RE.fullmatch(endpoint) and not allow_http:
        return (
            "endpoint must be an https:// URL, as every browser's push service gives; set "
            "allow_http_endpoints = true in [notify.webpush] for a push service on this machine"
        )
    return "endpoint must be a push service URL (https://host/...) from PushManager.subscribe()"


class WebPushNotifier:
    """Sends each message to one push subscription, looked up by id."""

    name = "webpush"
    fan_out = True

    def __init__(
        self,
        settings: WebPushSettings,
        vapid: Vapid,
        subject: str,
        subscription: Callable[[int], PushSubscription | None],
    ) -> None:
        self.events = settings.events
        self.allow_http = settings.allow_http_endpoints
        self.vapid = vapid
        self.subject = subject
        self._subscription = subscription
        # requests.Session is not thread-safe; each sender thread keeps its own connections.
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # Only the push service is talked to: no proxy or .netrc credentials from the
            # environment are sent along.
            session.trust_env = False
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def send(self, message: Message, target: str) -> None:
        found = self._subscription(int(target))
        if found is None:
            raise TargetGone(f"push subscription {target} was removed")
        self.push(found, message.as_json(), topic=f"{TOPIC_PREFIX}{message.event_id}")

    def push(self, subscription: PushSubscription, payload: dict[str, Any], topic: str) -> None:
        """Encrypt `payload` for `subscription` and hand it to its push service.

        Raises:
            DeliveryFailed, TargetGone.
        """
        refused = check_endpoint(subscription.endpoint, allow_http=self.allow_http)
        if refused is not None:
            raise TargetGone(refused)
        info = {
            "endpoint": subscription.endpoint,
            "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
        }
        try:
            webpush(
                info,
                json.dumps(payload, separators=(",", ":")),
                vapid_private_key=self.vapid,
                # A fresh dict each time: pywebpush fills in `aud` from the endpoint.
                vapid_claims={"sub": self.subject},
                timeout=TIMEOUT_S,
                ttl=TTL_S,
                headers={"Urgency": "high", "Topic": topic[:32]},
                requests_session=self._session(),
            )
        except WebPushException as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in GONE:
                raise TargetGone(f"the push service answered {status}: subscription gone") from None
            retry_after = _retry_after(exc.response)
            raise DeliveryFailed(
                f"the push service answered {status}", retry_after_s=retry_after
            ) from None
        except requests.RequestException as exc:
            raise DeliveryFailed(
                f"the push service is unreachable ({type(exc).__name__})"
            ) from None
        except (ValueError, TypeError) as exc:
            # Keys a browser would never send (not a P-256 point, a short auth secret).
            raise TargetGone(f"the subscription's keys are unusable ({exc})") from None

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("Retry-After") if response is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def create(
    settings: WebPushSettings,
    *,
    data_dir: Path,
    public_url: str,
    subscription: Callable[[int], PushSubscription | None],
) -> WebPushNotifier:
    """The Web Push notifier, with the controller's VAPID key (made now if missing)."""
    subject = settings.subject or default_subject(public_url)
    return WebPushNotifier(settings, load_or_create_key(data_dir), subject, subscription)
