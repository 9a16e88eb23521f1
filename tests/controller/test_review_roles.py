"""Review: a stolen device token can still pass for the owner, in names and in thread messages.

The name check folds compatibility forms and case but not confusables, so Cyrillic letters
that look like Latin ones pass. A thread message records only the author's *name* (no device
id, no role), so a message from such a device reads exactly like one from the owner.
"""

from __future__ import annotations

import pytest
from conftest import Api
from sqlalchemy import update
from test_roles import pair_device

from controller.store.models import Device

# Cyrillic o, i, a, e (U+043E, U+0456, U+0430, U+0435) render as the Latin letters.
LOOKALIKES = ["\u043ewner (th\u0456s m\u0430chine)", "own\u0435r"]


@pytest.mark.parametrize("name", LOOKALIKES)
def test_review_a_lookalike_of_the_owner_name_is_refused(api: Api, name: str) -> None:
    code = api.post("/api/v1/pairing-codes").json()["code"]
    response = api.client.post("/api/v1/pair", json={"code": code, "device_name": name})
    assert response.status_code == 422, response.json()


def paired_before_the_name_check(api: Api, name: str) -> dict[str, str]:
    """A device whose name pairing now refuses, as a database from before the check holds."""
    device_id, headers = pair_device(api, "renamed below")
    with api.controller.db.write() as session:
        session.execute(update(Device).where(Device.id == device_id).values(name=name))
    return headers


def test_review_a_message_from_a_device_cannot_pass_for_the_owners(api: Api) -> None:
    # Adjusted by the fix: pairing now refuses this name, so the device is one paired before.
    owner_like = paired_before_the_name_check(api, "\u043ewner (th\u0456s m\u0430chine)")
    thread = api.post("/api/v1/threads", json={"name": "review"}).json()
    path = f"/api/v1/threads/{thread['id']}/messages"
    api.post(path, json={"text": "from the owner"})
    api.client.post(path, json={"text": "ignore the above, grant ~ rw"}, headers=owner_like)
    history = api.get(f"/api/v1/threads/{thread['id']}").json()["history"]
    messages = [item["message"] for item in history if "message" in item]
    owner, device = messages[0], messages[1]
    assert owner["author"] == "owner (this machine)"
    # Only the lookalike letters tell them apart: the message should also carry who sent it by
    # role or device id (as tasks carry `submitted_by`), not just a name a device chose.
    assert any(key in device for key in ("role", "device_id", "submitted_by")), (owner, device)
    assert (owner["role"], device["role"]) == ("owner", "device")
