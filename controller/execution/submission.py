"""A task submission checked and queued: what `POST /api/v1/tasks` and `dispatch run` share.

No FastAPI here: `dispatch run` submits without the HTTP server, and loading the web stack for it
would cost it half a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.agent.tasks import check_agent_task
from controller.api.submissions import AgentTaskCreate, AnyTaskCreate, NetworkAllow, TaskCreate
from controller.errors import Forbidden, Unprocessable
from controller.execution.folders import check_folders
from controller.settings import Settings, expand_allow
from controller.store.models import Device, Task, TaskKind
from controller.store.tasks import NewTask
from sandbox import Network
from sandbox.egress import PolicyInvalid

if TYPE_CHECKING:
    from controller.service import Controller


def submit(body: AnyTaskCreate, c: Controller, device: Device) -> Task:
    """Check a submission against the settings and queue it at the end of its thread.

    Raises:
        ApiError: what is wrong with it (the API answers with it as is).
    """
    new = checked(body, c.settings, device)
    c.disk.refuse_if_low()
    return c.tasks.submit(new, device_id=device.id)


def checked(body: AnyTaskCreate, settings: Settings, device: Device) -> NewTask:
    """A submission checked against the settings and who asks, as it would be stored.

    `dispatch run` checks every task of its file with this before it queues the first.

    Raises:
        ApiError: what is wrong with it.
    """
    network, allow = network_choice(body.network, settings)
    check_network(device, network, settings)
    timeout_s = body.timeout_s if body.timeout_s is not None else settings.default_task_timeout_s
    if timeout_s > settings.max_task_timeout_s:
        raise Unprocessable(
            f"timeout_s {timeout_s:g} is above the limit of {settings.max_task_timeout_s:g} s; "
            "ask for less (the limit is the max_task_timeout_s setting)",
            code="timeout_too_long",
        )
    agent = check_agent_task(body, settings) if isinstance(body, AgentTaskCreate) else None
    check_isolation(body, network)
    mounts = check_folders(((f.path, f.mode) for f in body.folders), settings)
    return NewTask(
        thread=body.thread,
        command=body.command if isinstance(body, TaskCreate) else [],
        mounts=mounts,
        network=network,
        timeout_s=timeout_s,
        kind=TaskKind.AGENT if agent is not None else TaskKind.COMMAND,
        agent=agent,
        allow=allow,
        isolation=body.isolation,
    )


def network_choice(
    choice: str | NetworkAllow, settings: Settings
) -> tuple[Network, tuple[str, ...]]:
    """A submission's `network` as a mode and its allow list (presets expanded, checked).

    Raises:
        Unprocessable: `bad_network_allow`, naming the entry and the fix.
    """
    if not isinstance(choice, NetworkAllow):
        return Network(choice), ()
    try:
        return Network.ALLOWLIST, expand_allow(choice.allow, settings)
    except PolicyInvalid as exc:
        raise Unprocessable(f"network.allow: {exc}", code="bad_network_allow") from None


def check_network(device: Device, network: Network, settings: Settings) -> None:
    """Refuse network `open` to a device unless the owner allowed it (`allow_open_network`).

    Raises:
        Forbidden: `open_network_not_allowed`, naming the setting and how to set it.
    """
    if network is not Network.OPEN or device.is_owner or settings.allow_open_network:
        return
    raise Forbidden(
        f'network "open" is the owner\'s decision and this controller does not allow it for '
        f"devices: device {device.name!r} (id {device.id}) has the device role and the "
        "allow_open_network setting is false. Ask without network access, or have the owner set "
        "allow_open_network = true in config.toml (or DISPATCH_ALLOW_OPEN_NETWORK=true) and "
        "restart the controller",
        code="open_network_not_allowed",
    )


def check_isolation(body: AnyTaskCreate, network: Network) -> None:
    """What a VM (`isolation: "vm"`, the libvirt backend) cannot do yet, refused up front.

    Raises:
        Unprocessable: `vm_unsupported`, naming what to change.
    """
    if body.isolation != "vm":
        return
    if network is Network.ALLOWLIST:
        raise Unprocessable(
            'isolation "vm" cannot use network "allowlist" yet (its egress proxy serves '
            'containers only); use isolation "container", or network "none" or "open"',
            code="vm_unsupported",
        )
    if isinstance(body, AgentTaskCreate) and {"computer", "browser"} & set(body.tools):
        screen = "sandbox" if body.display == "sandbox" or "browser" in body.tools else None
        if screen:
            raise Unprocessable(
                'isolation "vm" has no desktop or browser yet; use isolation "container" for '
                'the computer and browser tools, or display "host" for the computer tool',
                code="vm_unsupported",
            )
