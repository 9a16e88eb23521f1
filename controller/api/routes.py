"""The HTTP routes. `public` needs no token (health, pairing); everything in `private` does.

A private route is open to every paired device unless it depends on `OwnerOnly` (or, like
revocation, which a device may do to itself, calls `require_owner`): the owner's powers
(issuing pairing codes, revoking other devices, settings) are refused to a device token with a
403 that names the role. tests/controller/test_auth.py classifies every route.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import OperationalError

from controller.api.schemas import (
    DeviceOut,
    ErrorResponse,
    FolderOut,
    Health,
    MessageCreate,
    MessageItem,
    MessageOut,
    PairingCodeOut,
    PairRequest,
    PairResponse,
    RevokedDevice,
    TaskDetail,
    TaskItem,
    TaskOut,
    ThreadCreate,
    ThreadDetail,
    ThreadOut,
)
from controller.api.submissions import AnyTaskCreate
from controller.auth import Auth, require_owner, shown_name
from controller.errors import BadRequest, InsufficientStorage, Unprocessable
from controller.execution.disk import is_disk_full
from controller.execution.submission import check_network, submit
from controller.service import Controller
from controller.store.models import Device, Task, TaskKind, TaskStatus
from sandbox import Network

MAX_ID = 2**63 - 1
EVENT_ID = re.compile(r"[0-9]{1,18}")
CANCEL_WAIT_S = 10.0

bearer = HTTPBearer(
    auto_error=False,
    description="A device token: from `POST /api/v1/pair`, or the owner token in the data "
    "directory (`owner-token`).",
)


def package_version() -> str:
    try:
        return metadata.version("dispatch")
    except metadata.PackageNotFoundError:
        return "0+local"


async def get_controller(request: Request) -> Controller:
    controller: Controller = request.app.state.controller
    return controller


async def current_device(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Device:
    """The authenticated device; every private route depends on this."""
    gated = request.scope.get("state", {}).get("device")
    if isinstance(gated, Device):
        return gated  # `app.TokenGate` checked this request's token before reading its body
    token = credentials.credentials if credentials is not None else None
    auth = get_auth(request)
    device = auth.cached(token)
    if device is None:
        device = await anyio.to_thread.run_sync(auth.authenticate, token)
    return device


def get_auth(request: Request) -> Auth:
    controller: Controller = request.app.state.controller
    return controller.auth


async def known_query_only(request: Request) -> None:
    """Refuse query parameters the route does not take, so a misspelt filter is not ignored."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = {p.alias for p in dependant.query_params}
    for dependency in dependant.dependencies:
        known |= {p.alias for p in dependency.query_params}
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        accepted = ", ".join(sorted(known)) or "none"
        raise Unprocessable(
            f"unknown query parameter {unknown[0]!r}; this route accepts: {accepted}",
            code="unknown_parameter",
        )


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer with."""
    return {status: {"model": ErrorResponse} for status in statuses}


def json_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Like `errors`, for routes whose success is not JSON (FastAPI would give the errors the
    success's media type)."""
    ref = {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
    return {
        status: {"description": "Error", "content": {"application/json": ref}}
        for status in statuses
    }


Ctl = Annotated[Controller, Depends(get_controller)]
Authed = Annotated[Device, Depends(current_device)]
TaskId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
ThreadId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
DeviceId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `task.state`, `task.output`, `thread.created`, "
        "`thread.message`; each `data` is a JSON event. Resume with `Last-Event-ID`. The "
        "stream ends when the device's token is revoked.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


class OwnerOnly:
    """A dependency: the caller's device, refused (403 `owner_only`) unless it is the owner.

    Every owner's power depends on one, e.g.
    `owner: Annotated[Device, Depends(OwnerOnly("changing settings", "dispatch config"))]`.
    """

    def __init__(self, action: str, command: str) -> None:
        """`action` as a phrase ("issuing pairing codes"); `command` does it on the CLI."""
        self.action = action
        self.command = command

    async def __call__(self, device: Authed) -> Device:
        require_owner(device, self.action, self.command)
        return device


def tasks_out(c: Controller, tasks: list[Task]) -> list[TaskOut]:
    """The tasks as the API shows them, each with the device that submitted it."""
    by = c.auth.devices_by_id(t.submitted_by for t in tasks)
    return [TaskOut.of(t, by.get(t.submitted_by) if t.submitted_by else None) for t in tasks]


def submitter(c: Controller, task: Task) -> Device | None:
    """The device that submitted `task`, if recorded."""
    if task.submitted_by is None:
        return None
    return c.auth.devices_by_id([task.submitted_by]).get(task.submitted_by)


public = APIRouter(dependencies=[Depends(known_query_only)])
private = APIRouter(
    dependencies=[Depends(current_device), Depends(known_query_only)], responses=errors(401)
)


# --- service -----------------------------------------------------------------------------


@public.get("/healthz", tags=["service"])
def healthz() -> Health:
    """Liveness; needs no token."""
    return Health(version=package_version())


@private.get(
    "/metrics",
    tags=["service"],
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **json_errors(401),
    },
)
def metrics(c: Ctl) -> PlainTextResponse:
    """Prometheus text format."""
    lines = ["# HELP dispatch_tasks Tasks by status.", "# TYPE dispatch_tasks gauge"]
    for status, count in c.tasks.counts().items():
        lines.append(f'dispatch_tasks{{status="{status.value}"}} {count}')
    figures = [
        ("tasks_submitted_total", "counter", "Tasks accepted since start.", c.tasks.submitted),
        ("tasks_running", "gauge", "Tasks running in this process.", c.runner.running),
        ("max_concurrent_tasks", "gauge", "Concurrency limit.", c.settings.max_concurrent_tasks),
        (
            "event_commits_total",
            "counter",
            "Transactions that appended events.",
            c.events.published,
        ),
        ("sse_clients", "gauge", "Open event streams.", c.counters.sse_clients),
        (
            "interrupted_at_start",
            "gauge",
            "Tasks found running at start-up.",
            c.counters.interrupted_at_start,
        ),
        (
            "uptime_seconds",
            "gauge",
            "Seconds since start.",
            round(time.time() - c.counters.started_at, 3),
        ),
    ]
    for name, kind, help_text, value in figures:
        lines += [f"# HELP dispatch_{name} {help_text}", f"# TYPE dispatch_{name} {kind}"]
        lines.append(f"dispatch_{name} {value}")
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


@private.get("/api/v1/openapi.json", tags=["service"], include_in_schema=False)
def openapi(request: Request) -> dict[str, Any]:
    schema: dict[str, Any] = request.app.openapi()
    return schema


# --- pairing and devices -----------------------------------------------------------------


@public.post(
    "/api/v1/pair",
    tags=["devices"],
    status_code=201,
    responses=errors(400, 401, 413, 422, 429),
)
def pair(body: PairRequest, request: Request, c: Ctl) -> PairResponse:
    """Trade a one-time pairing code for a device token; needs no token."""
    client = request.client.host if request.client else "unknown"
    device, token = c.auth.pair(body.code, body.device_name, client)
    return PairResponse(device_id=device.id, device_name=device.name, token=token)


# The page a phone opens from the QR code: a form that posts the code and keeps the token.
PAIR_PAGE = (Path(__file__).parent.parent / "static" / "pair.html").read_text(encoding="utf-8")
# What a pairing code can look like as typed or linked (see `auth.normalise_code`); anything
# else in `?code=` is left out of the page rather than echoed into it.
CODE_PREFILL = re.compile(r"[A-Za-z0-9 -]{1,32}")
PairCode = Annotated[
    str | None, Query(max_length=32, description="The code to prefill, from the QR code's URL.")
]


@public.get("/pair", include_in_schema=False)
def pair_page(code: PairCode = None) -> HTMLResponse:
    """The page a phone opens from the QR code (`/pair?code=XXXX-XXXX`); needs no token."""
    prefill = code if code is not None and CODE_PREFILL.fullmatch(code) else ""
    return HTMLResponse(
        PAIR_PAGE.replace("__PAIRING_CODE__", html.escape(prefill, quote=True)),
        # The page holds a pairing code: keep it out of caches, and other sites out of frames.
        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
    )


@private.post(
    "/api/v1/pairing-codes",
    tags=["devices"],
    status_code=201,
    responses=errors(403),
    dependencies=[Depends(OwnerOnly("issuing pairing codes", "dispatch pair"))],
)
def new_pairing_code(c: Ctl) -> PairingCodeOut:
    """A one-time code (valid 10 minutes) and the URL a phone opens to pair with it; owner only."""
    issued = c.auth.issue_pairing_code()
    return PairingCodeOut(
        code=issued.code,
        url=f"{c.settings.url}/pair?code={issued.code}",
        expires_at=issued.expires_at,  # type: ignore[arg-type]
    )


@private.get("/api/v1/devices", tags=["devices"])
def devices(c: Ctl) -> list[DeviceOut]:
    """Every device, revoked ones too, each with its role."""
    return [DeviceOut.of(d) for d in c.auth.devices()]


@private.delete(
    "/api/v1/devices/{device_id}", tags=["devices"], responses=errors(403, 404, 409, 422)
)
def revoke_device(device_id: DeviceId, c: Ctl, device: Authed) -> RevokedDevice:
    """Revoke a device's token: it stops working from its next request, and the tasks it queued
    that have not started are cancelled (running ones keep running). Owner only, except that a
    device may revoke itself (sign out)."""
    if device_id != device.id:
        require_owner(device, "revoking another device", f"dispatch devices revoke {device_id}")
    return RevokedDevice.of_revocation(c.auth.revoke(device_id, cascade=c.tasks.cancel_queued_by))


@private.get("/api/v1/folders", tags=["folders"])
def folders(c: Ctl) -> list[FolderOut]:
    """The folder grants from the config file; tasks may name these or folders inside them."""
    return [FolderOut(path=str(g.path), mode=g.mode) for g in c.settings.folders]  # type: ignore[arg-type]


# --- threads -----------------------------------------------------------------------------


@private.post(
    "/api/v1/threads", tags=["threads"], status_code=201, responses=errors(400, 409, 413, 422)
)
def create_thread(body: ThreadCreate, c: Ctl, device: Authed) -> ThreadOut:
    return ThreadOut.of(c.threads.create(body.name, device_id=device.id))


@private.get("/api/v1/threads", tags=["threads"])
def list_threads(c: Ctl) -> list[ThreadOut]:
    return [ThreadOut.of(t) for t in c.threads.all()]


@private.get("/api/v1/threads/{thread_id}", tags=["threads"], responses=errors(404, 422))
def get_thread(thread_id: ThreadId, c: Ctl) -> ThreadDetail:
    """The thread with its history of messages and tasks in order."""
    history = c.threads.history(thread_id)
    senders = c.auth.devices_by_id(m.device_id for m in history.messages)
    items: list[MessageItem | TaskItem] = [
        MessageItem(message=MessageOut.of(m, senders.get(m.device_id) if m.device_id else None))
        for m in history.messages
    ]
    items += [TaskItem(task=t) for t in tasks_out(c, history.tasks)]
    items.sort(key=lambda i: i.message.position if isinstance(i, MessageItem) else i.task.position)
    thread = ThreadOut.of(history.thread)
    return ThreadDetail(**thread.model_dump(), history=items)


@private.post(
    "/api/v1/threads/{thread_id}/messages",
    tags=["threads"],
    status_code=201,
    responses=errors(400, 404, 413, 422),
)
def add_message(thread_id: ThreadId, body: MessageCreate, c: Ctl, device: Authed) -> MessageOut:
    message = c.threads.add_message(thread_id, shown_name(device), body.text, device_id=device.id)
    return MessageOut.of(message, device)


# --- tasks -------------------------------------------------------------------------------


@private.post(
    "/api/v1/tasks",
    tags=["tasks"],
    status_code=202,
    response_model=TaskOut,
    responses=errors(400, 403, 413, 422, 507),
)
def submit_task(body: AnyTaskCreate, c: Ctl, device: Authed) -> Response:
    """Queue a task at the end of its thread; answers at once with its id. `kind` is `command`
    (the default) or `agent`. Network `{"allow": [...]}` gives restricted internet (those
    domains and presets only, through Dispatch's logging proxy); `open` needs the owner's token
    or the `allow_open_network` setting."""
    task = TaskOut.of(submit(body, c, device), device)
    # Serialised here, not validated again by FastAPI: this is the API's busiest route.
    return Response(task.model_dump_json(), status_code=202, media_type="application/json")


@private.get("/api/v1/tasks", tags=["tasks"], responses=errors(422))
def list_tasks(
    c: Ctl,
    thread_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    status: TaskStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Only ids below this.")
    ] = None,
) -> list[TaskOut]:
    """Newest first."""
    found = c.tasks.search(thread_id=thread_id, status=status, limit=limit, before_id=before)
    return tasks_out(c, found)


@private.get("/api/v1/tasks/{task_id}", tags=["tasks"], responses=errors(404, 422))
def get_task(task_id: TaskId, c: Ctl) -> TaskDetail:
    """The task with its output so far, exit code and timings."""
    task = c.tasks.get(task_id)
    steps = c.tasks.steps(task_id) if task.kind is TaskKind.AGENT else []
    return TaskDetail.with_output(task, submitter(c, task), c.tasks.output(task_id), steps)


@private.post(
    "/api/v1/tasks/{task_id}/cancel", tags=["tasks"], responses=errors(404, 409, 422, 507)
)
def cancel_task(task_id: TaskId, c: Ctl, device: Authed) -> TaskOut:
    """Cancel a queued task, or kill a running one's sandbox; answers once it has ended."""
    try:
        task = c.tasks.cancel_queued(task_id, device_id=device.id)
    except (OperationalError, OSError) as exc:
        # A full disk must not keep a runaway task alive: one running here is killed anyway,
        # and its end is recorded once the database takes writes again.
        if not (is_disk_full(exc) and c.runner.cancel(task_id)):
            raise
        task = c.tasks.get(task_id)
    if task.status.active:
        # A request waiting for a person is void at once: no decision can start its action now.
        c.approvals.void_for_task(task_id, "the task was cancelled")
        c.runner.cancel(task_id)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while task.status.active and time.monotonic() < deadline:
            time.sleep(0.02)
            task = c.tasks.get(task_id)
    if task.status.active and c.runner.unstored(task_id):
        raise InsufficientStorage(
            f"task {task_id} was stopped and its sandbox removed, but the database's disk is "
            "full, so it is recorded as cancelled only once some space is freed"
        )
    return TaskOut.of(task, submitter(c, task))


@private.post(
    "/api/v1/tasks/{task_id}/retry",
    tags=["tasks"],
    status_code=202,
    responses=errors(403, 404, 409, 422, 507),
)
def retry_task(task_id: TaskId, c: Ctl, device: Authed) -> TaskOut:
    """Queue a finished task again, as a new task at the end of its thread (network `open` as
    for a submission)."""
    check_network(device, Network(c.tasks.get(task_id).network), c.settings)
    c.disk.refuse_if_low()
    return TaskOut.of(c.tasks.retry(task_id, device_id=device.id), device)


# --- events ------------------------------------------------------------------------------


def _resume_point(last_event_id: str | None, after: int | None, default: int) -> int:
    # Last-Event-ID wins: an EventSource reconnects to its original URL (with its `after`)
    # and says in this header how far it got, so `after` first would replay events.
    if last_event_id is None or last_event_id == "":
        return default if after is None else after
    # ASCII digits only: str.isdigit() also takes "²" and "١٢", which int() refuses or reads.
    if not EVENT_ID.fullmatch(last_event_id):
        raise BadRequest(
            f"the Last-Event-ID header {last_event_id[:40]!r} is not an event id; send the id "
            "(a plain number) of the last event received, or no Last-Event-ID header"
        )
    return int(last_event_id)


def _sse(c: Controller, frames: AsyncIterator[str]) -> StreamingResponse:
    async def counted() -> AsyncIterator[str]:
        c.counters.sse_clients += 1
        try:
            async for frame in frames:
                yield frame
        finally:
            c.counters.sse_clients -= 1

    return StreamingResponse(
        counted(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", max_length=40)]
After = Annotated[
    int | None,
    Query(
        ge=0,
        le=MAX_ID,
        description="Replay events after this id (0: all); a `Last-Event-ID` header wins.",
    ),
]


@private.get(
    "/api/v1/events",
    tags=["events"],
    response_class=StreamingResponse,
    responses={**SSE_RESPONSE, **json_errors(400, 401, 422)},
)
async def all_events(
    c: Ctl, device: Authed, last_event_id: LastEventId = None, after: After = None
) -> StreamingResponse:
    """Every event from now on (or after `Last-Event-ID`, else `after`), as Server-Sent Events."""
    newest = await anyio.to_thread.run_sync(c.events.last_id)
    start = _resume_point(last_event_id, after, default=newest)
    return _sse(c, c.events.stream(start, holder=c.auth.watch(device.id)))


@private.get(
    "/api/v1/tasks/{task_id}/events",
    tags=["events"],
    response_class=StreamingResponse,
    responses={**SSE_RESPONSE, **json_errors(400, 401, 404, 422)},
)
async def task_events(
    task_id: TaskId,
    c: Ctl,
    device: Authed,
    last_event_id: LastEventId = None,
    after: After = None,
) -> StreamingResponse:
    """One task's events from its start (or after `Last-Event-ID`, else `after`), as SSE."""
    await anyio.to_thread.run_sync(c.tasks.get, task_id)  # 404 for an unknown task
    start = _resume_point(last_event_id, after, default=0)
    return _sse(c, c.events.stream(start, task_id=task_id, holder=c.auth.watch(device.id)))
