"""Roles, from the point of view of someone holding a stolen phone token.

Only the owner (the controller machine's CLI) issues pairing codes and revokes other devices; a
device cannot name itself into looking like the owner; revoking a device locks it out and cancels
the work it queued; every task says who submitted it; network "open" is the owner's decision.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from conftest import Api, LiveServer, wait_until
from sqlalchemy import func, select
from test_recovery import ServeProcess

from controller.cli import main
from controller.client import Client, ClientError
from controller.errors import ConfigError, Unauthorized
from controller.settings import load_settings
from controller.store.models import PairingCode
from controller.store.tasks import NewTask
from sandbox import Network

OWNER_LOOKALIKES = [
    "owner (this machine)",
    "  Owner (This Machine) ",
    "OWNER",
    "owner",
    "Owner's phone",
    "\uff4f\uff57\uff4e\uff45\uff52 (this machine)",  # fullwidth letters: "owner" after NFKC
    "(this machine)",
    "o.w.n.e.r",
    "0wner",  # a digit zero: Unicode's confusables fold it to O
    "\u043e\u051d\u0578\u0435\u0433",  # Cyrillic and Armenian lookalikes only: reads "owner"
    "\u03a9mega phone",  # Greek and Latin in one word
]
HIDING_NAMES = [
    "phone\u202egnp.exe",  # RIGHT-TO-LEFT OVERRIDE
    "phone\u2066owner\u2069",  # bidi isolates
    "pho\u200bne",  # ZERO WIDTH SPACE
    "pho\u0085ne",  # a C1 control
    "pho\u2028ne",  # LINE SEPARATOR
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def pair_device(api: Api, name: str = "phone") -> tuple[int, dict[str, str]]:
    code = api.post("/api/v1/pairing-codes").json()["code"]
    response = api.client.post("/api/v1/pair", json={"code": code, "device_name": name})
    assert response.status_code == 201, response.text
    body = response.json()
    return body["device_id"], bearer(body["token"])


def pairing_codes_stored(api: Api) -> int:
    with api.controller.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(PairingCode)) or 0)


# --- who may issue pairing codes ---------------------------------------------------------


def test_a_stolen_device_token_cannot_issue_pairing_codes(api: Api) -> None:
    phone_id, phone = pair_device(api)
    before = pairing_codes_stored(api)
    response = api.client.post("/api/v1/pairing-codes", headers=phone)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "owner_only"
    assert error["message"] == (
        f"issuing pairing codes needs the owner role; this token belongs to device 'phone' "
        f"(id {phone_id}), which has the device role. Run `dispatch pair` on the controller's "
        "machine, whose CLI holds the owner token"
    )
    assert pairing_codes_stored(api) == before  # no code was made
    # The owner still can.
    assert api.post("/api/v1/pairing-codes").status_code == 201


# --- names that pose as the owner --------------------------------------------------------


@pytest.mark.parametrize("name", OWNER_LOOKALIKES + HIDING_NAMES)
def test_pairing_refuses_a_name_that_poses_as_the_owner_or_hides_text(api: Api, name: str) -> None:
    code = api.post("/api/v1/pairing-codes").json()["code"]
    response = api.client.post("/api/v1/pair", json={"code": code, "device_name": name})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_device_name"
    assert error["message"].startswith("device_name ")
    # The refusal did not use up the code: the same code pairs a plainly named device.
    response = api.client.post("/api/v1/pair", json={"code": code, "device_name": "tablet"})
    assert response.status_code == 201, response.text
    roles = [(d["name"], d["role"]) for d in api.get("/api/v1/devices").json()]
    assert roles == [("owner (this machine)", "owner"), ("tablet", "device")]


def test_names_that_merely_mention_an_owner_and_emoji_are_kept(api: Api) -> None:
    # Other scripts, and scripts side by side in separate words or as Japanese writes them.
    others = ("Телефон", "iPhone de José", "田中のiPhone", "Ταμπλέτα tablet")
    for name in ("📱", "Ana's phone", "the owner's laptop", "pixel 8 — work", *others):
        device_id, _ = pair_device(api, name)
        listed = {d["id"]: d for d in api.get("/api/v1/devices").json()}
        assert (listed[device_id]["name"], listed[device_id]["role"]) == (name, "device")


def test_the_owner_is_shown_by_role_even_if_an_old_device_was_named_like_it(api: Api) -> None:
    # A device paired before names were checked, named exactly like the owner.
    auth = api.controller.auth
    device, _token = auth.pair(auth.issue_pairing_code().code, "tablet", "10.0.0.5")
    with api.controller.db.write() as session:
        session.get(type(device), device.id).name = "owner (this machine)"  # type: ignore[union-attr]
    listed = api.get("/api/v1/devices").json()
    assert [(d["name"], d["role"], d["is_owner"]) for d in listed] == [
        ("owner (this machine)", "owner", True),
        ("owner (this machine)", "device", False),
    ]


# --- who may revoke ------------------------------------------------------------------------


def test_a_device_cannot_revoke_others_but_may_sign_itself_out(api: Api) -> None:
    phone_id, phone = pair_device(api)
    tablet_id, tablet = pair_device(api, "tablet")
    response = api.client.delete(f"/api/v1/devices/{tablet_id}", headers=phone)
    assert response.status_code == 403
    message = response.json()["error"]["message"]
    assert message.startswith("revoking another device needs the owner role")
    assert f"`dispatch devices revoke {tablet_id}`" in message
    assert api.client.get("/api/v1/tasks", headers=tablet).status_code == 200  # untouched
    # Signing out: a device may revoke its own token.
    response = api.client.delete(f"/api/v1/devices/{phone_id}", headers=phone)
    assert response.status_code == 200 and response.json()["revoked_at"]
    assert api.client.get("/api/v1/tasks", headers=phone).status_code == 401


def stalled_thread(api: Api, name: str) -> dict[str, Any]:
    """A thread whose first task runs (and holds back the rest) until cancelled."""
    blocker = api.submit(["sleep", "60"], thread=name)
    api.wait_task(blocker["id"], ("running",))
    return blocker


def test_the_owner_revoking_a_stolen_token_locks_it_out_and_cancels_its_queued_tasks(
    api: Api,
) -> None:
    thief_id, thief = pair_device(api)
    blocker = stalled_thread(api, "work")
    queued = []
    for command in (["echo", "one"], ["echo", "two"]):
        response = api.client.post(
            "/api/v1/tasks", headers=thief, json={"command": command, "thread": "work"}
        )
        assert response.status_code == 202, response.text
        queued.append(response.json()["id"])
    # The thief's running task and the owner's queued one are not the thief's queued work.
    running = api.client.post(
        "/api/v1/tasks", headers=thief, json={"command": ["sleep", "60"], "thread": "other"}
    ).json()
    api.wait_task(running["id"], ("running",))
    owners_queued = api.submit(["echo", "mine"], thread="work")
    last_event = api.controller.events.last_id()

    response = api.delete(f"/api/v1/devices/{thief_id}")
    assert response.status_code == 200, response.text
    assert response.json()["cancelled_task_ids"] == queued

    reason = (
        f"cancelled before it started: device 'phone' (id {thief_id}) that submitted it was revoked"
    )
    for task_id in queued:
        task = api.task(task_id)
        assert (task["status"], task["reason"]) == ("cancelled", reason)
    states = [
        (e.task_id, e.data["status"], e.data["reason"])
        for e in api.controller.events.after(last_event)
        if e.kind == "task.state" and e.task_id in queued
    ]
    assert states == [(i, "cancelled", reason) for i in queued]  # one event each
    assert api.task(running["id"])["status"] == "running"  # started work keeps running
    # Locked out of everything, pairing codes included.
    for method, path in (("GET", "/api/v1/tasks"), ("POST", "/api/v1/pairing-codes")):
        assert api.client.request(method, path, headers=thief).status_code == 401
    # The owner's own work goes on once the blocker is out of the way.
    api.post(f"/api/v1/tasks/{blocker['id']}/cancel")
    assert api.wait_task(owners_queued["id"])["status"] == "succeeded"
    api.post(f"/api/v1/tasks/{running['id']}/cancel")


def test_a_submission_racing_the_revocation_is_refused_not_left_queued(api: Api) -> None:
    # The request was let in before the revocation; its write transaction comes after it.
    auth = api.controller.auth
    device, _token = auth.pair(auth.issue_pairing_code().code, "phone", "10.0.0.8")
    auth.revoke(device.id, cascade=api.controller.tasks.cancel_queued_by)
    new = NewTask(thread="t", command=["true"], mounts=[], network=Network.NONE, timeout_s=5)
    with pytest.raises(Unauthorized, match="revoked"):
        api.controller.tasks.submit(new, device_id=device.id)
    assert api.controller.tasks.search() == []


# --- who submitted what --------------------------------------------------------------------


def test_every_task_names_the_device_that_submitted_it(api: Api) -> None:
    phone_id, phone = pair_device(api)
    owner_id = api.get("/api/v1/devices").json()[0]["id"]
    mine = api.submit(["echo", "owner"], thread="t")
    theirs = api.client.post(
        "/api/v1/tasks", headers=phone, json={"command": ["false"], "thread": "t"}
    ).json()
    owner = {"device_id": owner_id, "name": "owner (this machine)", "role": "owner"}
    device = {"device_id": phone_id, "name": "phone", "role": "device"}
    assert (mine["submitted_by"], theirs["submitted_by"]) == (owner, device)
    api.wait_task(theirs["id"])
    assert api.task(theirs["id"])["submitted_by"] == device
    listed = {t["id"]: t["submitted_by"] for t in api.get("/api/v1/tasks").json()}
    assert listed == {mine["id"]: owner, theirs["id"]: device}
    history = api.get(f"/api/v1/threads/{mine['thread_id']}").json()["history"]
    assert [i["task"]["submitted_by"] for i in history] == [owner, device]
    # A retry is submitted by whoever retried it.
    retried = api.post(f"/api/v1/tasks/{theirs['id']}/retry").json()
    assert retried["submitted_by"] == owner
    # Revoked devices are still named on their tasks.
    api.delete(f"/api/v1/devices/{phone_id}")
    assert api.task(theirs["id"])["submitted_by"] == device


# --- network "open" ------------------------------------------------------------------------


def test_a_device_may_not_ask_for_open_network_unless_the_owner_allows_it(api: Api) -> None:
    phone_id, phone = pair_device(api)
    body = {"command": ["true"], "network": "open"}
    response = api.client.post("/api/v1/tasks", headers=phone, json=body)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "open_network_not_allowed"
    assert f"device 'phone' (id {phone_id}) has the device role" in error["message"]
    assert "allow_open_network = true" in error["message"]
    assert "DISPATCH_ALLOW_OPEN_NETWORK=true" in error["message"]
    assert api.controller.tasks.search() == []  # nothing was queued
    # The owner decides, so the owner may; and a device may not retry the owner's open task.
    owners = api.submit(["true"], network="open")
    assert owners["network"] == "open"
    api.wait_task(owners["id"])
    response = api.client.post(f"/api/v1/tasks/{owners['id']}/retry", headers=phone)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "open_network_not_allowed"
    # Without network, the device is served as usual.
    assert api.client.post("/api/v1/tasks", headers=phone, json={"command": ["true"]}).is_success


def test_allow_open_network_lets_devices_ask_for_it(make_api: Callable[..., Api]) -> None:
    api = make_api(allow_open_network=True)
    _, phone = pair_device(api)
    response = api.client.post(
        "/api/v1/tasks", headers=phone, json={"command": ["true"], "network": "open"}
    )
    assert response.status_code == 202, response.text
    task = api.wait_task(response.json()["id"])
    retried = api.client.post(f"/api/v1/tasks/{task['id']}/retry", headers=phone)
    assert retried.status_code == 202 and retried.json()["network"] == "open"


def test_allow_open_network_is_read_from_env_and_config_and_checked(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("allow_open_network = true\n")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_DATA_HOME": str(tmp_path / "data")}
    assert load_settings({}, env).allow_open_network is False  # the default
    assert load_settings({}, env, config=config).allow_open_network is True
    off = {**env, "DISPATCH_ALLOW_OPEN_NETWORK": "false"}
    assert load_settings({}, off, config=config).allow_open_network is False  # env beats file
    assert load_settings({}, {**env, "DISPATCH_ALLOW_OPEN_NETWORK": "YES"}).allow_open_network
    with pytest.raises(ConfigError, match=r"allow_open_network .*DISPATCH_ALLOW.* true or false"):
        load_settings({}, {**env, "DISPATCH_ALLOW_OPEN_NETWORK": "sure"})
    config.write_text('allow_open_network = "maybe"\n')
    with pytest.raises(ConfigError, match=r"allow_open_network .*config\.toml.* true or false"):
        load_settings({}, env, config=config)


# --- the CLI -------------------------------------------------------------------------------


def test_the_cli_shows_roles_and_who_submitted_each_task(live_server: LiveServer) -> None:
    owner = Client(live_server.url, live_server.token)
    code = owner.pairing_code()["code"]
    paired = httpx.post(
        f"{live_server.url}/api/v1/pair", json={"code": code, "device_name": "phone"}
    ).json()
    phone = Client(live_server.url, paired["token"])
    theirs = phone.submit(["true"])
    mine = owner.submit(["true"])
    env = {"DISPATCH_SERVER": live_server.url, "DISPATCH_TOKEN": live_server.token}
    devices = CliRunner().invoke(main, ["devices"], env=env)
    assert devices.exit_code == 0, devices.output
    lines = devices.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "ROLE", "NAME"]
    assert lines[1].split()[1:5] == ["owner", "owner", "(this", "machine)"]
    assert lines[2].split()[1:3] == ["device", "phone"]
    listed = CliRunner().invoke(main, ["tasks"], env=env)
    assert listed.exit_code == 0, listed.output
    rows = {int(line.split()[0]): line for line in listed.stdout.splitlines()[1:]}
    assert " BY " in listed.stdout.splitlines()[0]
    assert " owner " in rows[mine["id"]]
    assert f" phone#{paired['device_id']} " in rows[theirs["id"]]
    # A device's own CLI is told which role it lacks, and exits 1 (refused).
    refused = CliRunner().invoke(main, ["pair"], env={**env, "DISPATCH_TOKEN": paired["token"]})
    assert refused.exit_code == 1
    assert "needs the owner role" in refused.stderr
    owner.close()
    phone.close()


# --- end to end, through a real `dispatch serve` ---------------------------------------------


@pytest.fixture
def serve(workspace: Path) -> Iterator[ServeProcess]:
    process = ServeProcess(workspace, "fake", max_concurrent=2)
    process.start()
    yield process
    process.stop()
    # Shown by pytest only when the test failed.
    print(f"--- {process.log} ---\n{process.log.read_text()[-4000:]}")


def test_a_stolen_phone_is_locked_out_by_the_owner_through_dispatch_serve(
    serve: ServeProcess,
) -> None:
    local = {"DISPATCH_DATA_DIR": str(serve.data_dir), "DISPATCH_SERVER": "", "DISPATCH_TOKEN": ""}
    # The owner pairs a phone with the CLI, as a person would.
    issued = CliRunner().invoke(main, ["pair", "--json"], env=local)
    assert issued.exit_code == 0, issued.output
    code = json.loads(issued.stdout)["code"]
    paired = httpx.post(
        f"{serve.url}/api/v1/pair", json={"code": code, "device_name": "phone"}
    ).json()
    thief = Client(serve.url, paired["token"])
    owner = serve.client()

    # The thief tries the owner's powers: all refused, naming the role.
    with pytest.raises(ClientError) as refused:
        thief.pairing_code()
    assert (refused.value.status, refused.value.code) == (403, "owner_only")
    owner_id = next(d["id"] for d in thief.devices() if d["role"] == "owner")
    with pytest.raises(ClientError) as refused:
        thief.revoke(owner_id)
    assert refused.value.status == 403 and "owner role" in refused.value.message
    hidden = httpx.post(
        f"{serve.url}/api/v1/pair",
        json={"code": owner.pairing_code()["code"], "device_name": "owner (this machine)"},
    )
    assert hidden.status_code == 422 and "device_name" in hidden.json()["error"]["message"]

    # The thief queues work behind a running task; the owner revokes the phone from the CLI.
    blocker = owner.submit(["sleep", "60"], thread="work")
    wait_until(lambda: owner.task(blocker["id"])["status"] == "running", 30, "the blocker")
    queued = [thief.submit(["echo", str(i)], thread="work")["id"] for i in range(3)]
    revoked = CliRunner().invoke(main, ["devices", "revoke", str(paired["device_id"])], env=local)
    assert revoked.exit_code == 0, revoked.output
    assert f"cancelled 3 queued task(s) it had submitted: {', '.join(map(str, queued))}" in (
        revoked.stdout
    )
    with pytest.raises(ClientError) as locked_out:
        thief.tasks()
    assert locked_out.value.status == 401
    for task_id in queued:
        task = owner.task(task_id)
        assert task["status"] == "cancelled"
        assert f"device 'phone' (id {paired['device_id']})" in task["reason"]
        assert "was revoked" in task["reason"]
        assert task["submitted_by"]["role"] == "device"
    owner.cancel(blocker["id"])
    owner.close()
    thief.close()


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_submissions_racing_a_revocation_leave_nothing_of_the_device_queued(
    database: str, make_api: Callable[..., Api], request: pytest.FixtureRequest
) -> None:
    flags = (
        {"database_url": request.getfixturevalue("postgres_url")} if database == "postgres" else {}
    )
    api = make_api(**flags)
    thief_id, thief = pair_device(api)
    blocker = stalled_thread(api, "work")
    accepted: list[int] = []
    refused: list[int] = []
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            response = api.client.post(
                "/api/v1/tasks", headers=thief, json={"command": ["true"], "thread": "work"}
            )
            if response.status_code == 401:
                refused.append(401)
                return
            assert response.status_code == 202, response.text
            accepted.append(response.json()["id"])

    flooders = [threading.Thread(target=flood) for _ in range(4)]
    for flooder in flooders:
        flooder.start()
    wait_until(lambda: len(accepted) >= 8, 30, "the thief's first submissions")
    cancelled = api.delete(f"/api/v1/devices/{thief_id}").json()["cancelled_task_ids"]
    for flooder in flooders:
        flooder.join(30)
    stop.set()
    assert refused == [401] * 4  # every flooder was shut out
    # Whatever got in is cancelled with the device, and nothing of its work is left queued.
    assert sorted(cancelled) == sorted(accepted)
    statuses = {t.id: t.status.value for t in api.controller.tasks.search(limit=1000)}
    assert {statuses[i] for i in accepted} == {"cancelled"}
    assert statuses[blocker["id"]] == "running"
    api.post(f"/api/v1/tasks/{blocker['id']}/cancel")
