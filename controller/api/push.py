"""Web Push over HTTP: the key a browser subscribes with, its subscriptions, and a test push.

A device manages its own subscriptions (the owner may remove anyone's); revoking a device
removes its subscriptions. Which events notify, and ntfy and the webhook, are set in
config.toml's `[notify]` tables (see controller.settings).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from controller.api.routes import MAX_ID, Authed, Ctl, current_device, errors, known_query_only
from controller.api.schemas import Strict, ts
from controller.errors import Conflict, Unprocessable
from controller.notify.webpush import ENDPOINT, check_endpoint
from controller.service import Controller
from controller.store.models import PushSubscription

router = APIRouter(
    dependencies=[Depends(current_device), Depends(known_query_only)],
    responses=errors(401),
    tags=["push"],
)
SubscriptionId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
# An uncompressed P-256 point (65 bytes, the first 0x04) and a 16-byte secret, base64url.
P256DH = r"B[A-P][A-Za-z0-9_-]{85}=?"
AUTH = r"[A-Za-z0-9_-]{22}(==)?"


# The patterns are documented, and checked by `_check` with messages that say what is wrong.
class PushKeys(Strict):
    p256dh: str = Field(
        max_length=200,
        json_schema_extra={"pattern": f"^{P256DH}$"},
        description="The browser's P-256 public key, base64url.",
    )
    auth: str = Field(
        max_length=100,
        json_schema_extra={"pattern": f"^{AUTH}$"},
        description="The browser's auth secret, base64url.",
    )


class PushSubscriptionIn(Strict):
    """The browser's `PushSubscription.toJSON()`, as it is."""

    endpoint: str = Field(
        max_length=2048,
        json_schema_extra={"pattern": f"^{ENDPOINT}$"},
        description="The push service URL. (http:// too, on a controller whose "
        "[notify.webpush] sets allow_http_endpoints, for a push service on its machine.)",
    )
    expirationTime: float | None = Field(default=None, strict=True)
    keys: PushKeys


class PushSubscriptionOut(BaseModel):
    id: int
    device_id: int
    endpoint_origin: str = Field(description="The push service (the full endpoint is not shown).")
    created_at: datetime
    last_sent_at: datetime | None

    @classmethod
    def of(cls, s: PushSubscription) -> PushSubscriptionOut:
        parts = urlsplit(s.endpoint)
        return cls(
            id=s.id,
            device_id=s.device_id,
            endpoint_origin=f"{parts.scheme}://{parts.netloc}",
            created_at=ts(s.created_at),  # type: ignore[arg-type]
            last_sent_at=ts(s.last_sent_at),
        )


class PushKeyOut(BaseModel):
    public_key: str = Field(
        description="The VAPID public key: pass it as applicationServerKey to "
        "PushManager.subscribe()."
    )


class TestPushResult(BaseModel):
    subscription_id: int
    delivered: bool
    error: str | None


class TestPushOut(BaseModel):
    results: list[TestPushResult]


def _check(body: PushSubscriptionIn, c: Controller) -> None:
    refused = check_endpoint(
        body.endpoint, allow_http=c.settings.notify.webpush.allow_http_endpoints
    )
    if refused is not None:
        raise Unprocessable(refused, code="bad_subscription")
    if not re.fullmatch(P256DH, body.keys.p256dh):
        raise Unprocessable(
            "keys.p256dh must be an uncompressed P-256 point (65 bytes), base64url; send "
            "PushSubscription.toJSON() unchanged",
            code="bad_subscription",
        )
    if not re.fullmatch(AUTH, body.keys.auth):
        raise Unprocessable(
            "keys.auth must be the 16-byte auth secret, base64url; send "
            "PushSubscription.toJSON() unchanged",
            code="bad_subscription",
        )


def _enabled(c: Controller) -> str:
    key = c.notify.vapid_public_key
    if key is None:
        raise Conflict(
            "Web Push is turned off on this controller; set enabled = true in [notify.webpush] "
            "of config.toml and restart it",
            code="push_disabled",
        )
    return key


@router.get("/api/v1/push/key", responses=errors(409))
def push_key(c: Ctl) -> PushKeyOut:
    """The key a browser subscribes with."""
    return PushKeyOut(public_key=_enabled(c))


@router.get("/api/v1/push/subscriptions")
def list_subscriptions(c: Ctl, device: Authed) -> list[PushSubscriptionOut]:
    """This device's subscriptions."""
    return [PushSubscriptionOut.of(s) for s in c.notify.store.subscriptions(device.id)]


@router.post(
    "/api/v1/push/subscriptions", status_code=201, responses=errors(400, 409, 413, 422, 507)
)
def subscribe(body: PushSubscriptionIn, c: Ctl, device: Authed) -> PushSubscriptionOut:
    """Subscribe this device; the same endpoint again replaces its keys (and is answered 201)."""
    _enabled(c)
    _check(body, c)
    stored = c.notify.store.subscribe(device.id, body.endpoint, body.keys.p256dh, body.keys.auth)
    return PushSubscriptionOut.of(stored)


@router.delete(
    "/api/v1/push/subscriptions/{subscription_id}",
    status_code=204,
    response_class=Response,
    responses=errors(404, 422, 507),
)
def unsubscribe(subscription_id: SubscriptionId, c: Ctl, device: Authed) -> Response:
    """Remove a subscription of this device (the owner may remove any)."""
    c.notify.store.unsubscribe(subscription_id, device)
    return Response(status_code=204)


@router.post("/api/v1/push/test", responses=errors(409))
def test_push(c: Ctl, device: Authed) -> TestPushOut:
    """Push a test notification to this device's subscriptions now, and say how each went."""
    _enabled(c)
    results = c.notify.send_test(device)
    if not results:
        raise Conflict(
            "this device has no push subscription; subscribe first (POST "
            "/api/v1/push/subscriptions, or Settings → Notifications in the console)",
            code="no_subscription",
        )
    return TestPushOut(
        results=[
            TestPushResult(subscription_id=r.subscription_id, delivered=r.delivered, error=r.error)
            for r in results
        ]
    )
