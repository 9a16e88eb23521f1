"""The check every write made on a device's behalf repeats inside its own transaction."""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from controller.errors import Unauthorized
from controller.store.models import Device

DEVICE_REVOKED_AT = select(Device.revoked_at).where(Device.id == bindparam("device_id"))


def still_valid(session: Session, device_id: int) -> None:
    """Refuse a write for a device revoked after its request was let in.

    The token is checked when the headers arrive, but the body may come much later. Checked in
    the write transaction, which revocations are serialised with, the write either commits
    before the revocation (which then sees it) or is refused here, never done after it.

    Raises:
        Unauthorized: the device is revoked or gone.
    """
    found = session.connection().execute(DEVICE_REVOKED_AT, {"device_id": device_id})
    row = found.one_or_none()
    if row is None or row.revoked_at is not None:
        raise Unauthorized(
            "the token is unknown or was revoked; pair this device again with `dispatch pair`"
        )
