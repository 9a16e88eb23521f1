"""The console's routes: server-rendered pages, the fragments its script swaps in, pairing.

Three routers. `public` needs no session: the pairing form's POST (which signs the browser
in), the static assets, and the local CA certificate with its install steps. `pages` are the
pages a browser navigates to; without a session it is sent to `/pair`. `fragments` are the
pieces (a task card, an approval card, the thread list) that `static/console.js` fetches when
an event arrives, the live screen's images, result downloads and signing out. Everything that
changes state goes through the JSON API (`/api/v1`) with the session's CSRF token, so the
console has no second way to do anything.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from controller.api.routes import (
    MAX_ID,
    PAIR_PAGE,
    Authed,
    Ctl,
    current_device,
    known_query_only,
)
from controller.auth import role_of, shown_name
from controller.errors import ApiError, BadRequest, NotFound
from controller.service import Controller
from controller.store.models import Approval, ApprovalState, Device, Task, TaskKind, TaskStatus
from controller.web import audit, notifications, results
from controller.web.session import (
    clear_cookie_header,
    cookie_header,
    is_tls,
    origin_error,
)
from controller.web.templating import common, pending_count, render, templates

STATIC = Path(__file__).parent.parent / "static"
ASSET_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".json": "application/manifest+json",
    ".webmanifest": "application/manifest+json",
}
ASSET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,80}")
SHA = re.compile(r"[0-9a-f]{64}")
# The end of a long output is what a person looks at; the whole of it is in the API.
SHOWN_OUTPUT_CHARS = 32_000
CA_FILE = Path("tls") / "ca.crt"
AGENT_TOOLS = ("bash", "edit", "memory", "computer", "browser")
DEFAULT_AGENT_TOOLS = ("bash", "edit", "memory")
STATUS_WORDS = {
    TaskStatus.QUEUED: "queued",
    TaskStatus.RUNNING: "running",
    TaskStatus.WAITING_FOR_APPROVAL: "waiting for you",
    TaskStatus.SUCCEEDED: "done",
    TaskStatus.FAILED: "failed",
    TaskStatus.CANCELLED: "cancelled",
    TaskStatus.INTERRUPTED: "interrupted",
}

templates.globals["status_words"] = STATUS_WORDS


# --- what the templates show -------------------------------------------------------------


def _latest_screen(steps: list[dict[str, Any]]) -> str | None:
    """The newest screenshot an agent's tool results hold (what the agent sees now)."""
    for step in reversed(steps):
        for result in reversed(step.get("results") or []):
            for sha in reversed(result.get("images") or []):
                if isinstance(sha, str) and SHA.fullmatch(sha):
                    return sha
    return None


def task_view(c: Controller, task: Task, devices: dict[int, Device]) -> dict[str, Any]:
    """Everything a task card shows."""
    steps = c.tasks.steps(task.id) if task.kind is TaskKind.AGENT else []
    output = "".join(chunk.text for chunk in c.tasks.output(task.id))
    approvals = c.approvals.search(task_id=task.id, limit=20)
    devices = {**devices, **c.auth.devices_by_id(a.decided_by for a in approvals)}
    duration = None
    if task.started_at is not None:
        duration = (task.finished_at or time.time()) - task.started_at
    by = devices.get(task.submitted_by) if task.submitted_by else None
    return {
        "task": task,
        "title": (task.agent or {}).get("prompt", "")
        if task.kind is TaskKind.AGENT
        else shlex.join(task.command),
        "status": task.status.value,
        "status_words": STATUS_WORDS[task.status],
        "duration": duration,
        "by": shown_name(by) if by else None,
        "output": output[-SHOWN_OUTPUT_CHARS:],
        "output_cut": len(output) > SHOWN_OUTPUT_CHARS,
        "steps": steps,
        "screen": _latest_screen(steps) if task.status.active else None,
        "approvals": [approval_view(a, devices) for a in reversed(approvals)],
        "results": results.changed_files(task) if task.status.terminal else [],
        "can_cancel": not task.status.terminal,
        "can_retry": task.status.terminal,
    }


def approval_view(approval: Approval, devices: dict[int, Device]) -> dict[str, Any]:
    by = devices.get(approval.decided_by) if approval.decided_by else None
    pending = approval.state is ApprovalState.PENDING and approval.expires_at > time.time()
    return {
        "approval": approval,
        "state": approval.state.value if pending or approval.state.final else "expired",
        "pending": pending,
        "by": shown_name(by) if by else None,
    }


def thread_rows(c: Controller) -> list[dict[str, Any]]:
    """Every thread with its status at a glance: newest activity first."""
    latest: dict[int, list[Task]] = {}
    for task in c.tasks.search(limit=1000):
        latest.setdefault(task.thread_id, []).append(task)
    rows: list[dict[str, Any]] = []
    for thread in c.threads.all():
        tasks = latest.get(thread.id, [])
        statuses = {t.status for t in tasks}
        if TaskStatus.WAITING_FOR_APPROVAL in statuses:
            status = TaskStatus.WAITING_FOR_APPROVAL
        elif statuses & {TaskStatus.RUNNING, TaskStatus.QUEUED}:
            status = TaskStatus.RUNNING
        elif tasks:
            status = tasks[0].status  # newest first
        else:
            status = None
        rows.append(
            {
                "thread": thread,
                "status": status.value if status else "empty",
                "status_words": STATUS_WORDS[status] if status else "no tasks yet",
                "tasks": len(tasks),
                "latest_id": tasks[0].id if tasks else 0,
                "active_at": max([t.created_at for t in tasks] or [thread.created_at]),
            }
        )
    rows.sort(key=lambda r: r["active_at"], reverse=True)
    return rows


def _devices_for(c: Controller, tasks: Iterable[Task]) -> dict[int, Device]:
    return c.auth.devices_by_id(t.submitted_by for t in tasks)


# --- public: pairing, assets, the CA certificate -------------------------------------------

public = APIRouter(include_in_schema=False)


def _pair_page(code: str, message: str) -> str:
    from html import escape

    page = PAIR_PAGE.replace("__PAIRING_CODE__", escape(code, quote=True))
    shown = f'<p class="error" role="alert">{escape(message)}</p>' if message else ""
    return page.replace("<!--MESSAGE-->", shown)


@public.post("/pair")
async def pair_form(request: Request, c: Ctl) -> Response:
    """The pairing form: trade the code for a device and sign this browser in as it."""
    refused = origin_error(request.scope, c.settings.public_url)
    if refused is not None:
        return HTMLResponse(_pair_page("", refused), status_code=403)
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
    code = (form.get("code") or [""])[0][:32]
    name = (form.get("device_name") or [""])[0][:100]
    client = request.client.host if request.client else "unknown"
    try:
        _device, token = await anyio.to_thread.run_sync(c.auth.pair, code, name, client)
    except ApiError as exc:
        prefill = code if re.fullmatch(r"[A-Za-z0-9 -]{1,32}", code) else ""
        return HTMLResponse(
            _pair_page(prefill, exc.message),
            status_code=exc.status,
            headers={"Cache-Control": "no-store"},
        )
    response = RedirectResponse("/", status_code=303)
    response.headers["Set-Cookie"] = cookie_header(token, secure=is_tls(request.scope))
    response.headers["Cache-Control"] = "no-store"
    return response


@public.get("/static/{name}")
def asset(name: str) -> Response:
    """The console's stylesheet, script and icons; needs no session."""
    path = STATIC / name
    kind = ASSET_TYPES.get(path.suffix)
    if not ASSET_NAME.fullmatch(name) or kind is None or not path.is_file():
        raise NotFound(f"no asset {name[:80]!r}")
    return Response(path.read_bytes(), media_type=kind, headers={"Cache-Control": "no-cache"})


@public.get("/sw.js")
def service_worker() -> Response:
    """The service worker that shows Web Push notifications; at the root, so its scope is the
    whole console."""
    return Response(
        (STATIC / "sw.js").read_bytes(),
        media_type=ASSET_TYPES[".js"],
        headers={"Cache-Control": "no-cache"},
    )


@public.get("/ca.crt")
def ca_certificate(c: Ctl) -> Response:
    """The local certificate authority `dispatch tls init` made, for a phone to install."""
    path = c.settings.data_dir / CA_FILE
    if not path.is_file():
        raise NotFound(
            "this controller has no local certificate authority; run `dispatch tls init` on "
            "its machine (or use a certificate from a public authority)"
        )
    return Response(
        path.read_bytes(),
        media_type="application/x-x509-ca-cert",
        headers={"Content-Disposition": 'attachment; filename="dispatch-ca.crt"'},
    )


@public.get("/ca")
def ca_page(request: Request, c: Ctl) -> HTMLResponse:
    """How to install the local CA on Android and iOS; needs no session."""
    has_ca = (c.settings.data_dir / CA_FILE).is_file()
    return render(request, "ca.html", has_ca=has_ca, url=c.settings.url)


# --- pages ------------------------------------------------------------------------------

pages = APIRouter(
    dependencies=[Depends(current_device), Depends(known_query_only)], include_in_schema=False
)
ThreadId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
TaskId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
ApprovalId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


@pages.get("/")
def threads_page(request: Request, c: Ctl, device: Authed) -> HTMLResponse:
    shared = common(c, device)
    return render(request, "threads.html", rows=thread_rows(c), **shared)


@pages.get("/threads/{thread_id}")
def thread_page(request: Request, thread_id: ThreadId, c: Ctl, device: Authed) -> HTMLResponse:
    shared = common(c, device)
    history = c.threads.history(thread_id)
    devices = _devices_for(c, history.tasks)
    items: list[tuple[int, str, Any]] = [(m.position, "message", m) for m in history.messages]
    items += [(t.position, "task", task_view(c, t, devices)) for t in history.tasks]
    items.sort(key=lambda item: item[0])
    return render(
        request,
        "thread.html",
        thread=history.thread,
        items=items,
        folders=c.settings.folders,
        tools=AGENT_TOOLS,
        default_tools=DEFAULT_AGENT_TOOLS,
        host_display=c.settings.host_display,
        **shared,
    )


@pages.get("/tasks/{task_id}")
def task_page(task_id: TaskId, c: Ctl) -> RedirectResponse:
    """A task, shown in its thread (where an approval's or a notification's link lands)."""
    task = c.tasks.get(task_id)
    return RedirectResponse(f"/threads/{task.thread_id}#task-{task.id}", status_code=303)


@pages.get("/approvals")
def approvals_page(request: Request, c: Ctl, device: Authed) -> HTMLResponse:
    shared = common(c, device)
    found = c.approvals.search(limit=50)
    devices = c.auth.devices_by_id(a.decided_by for a in found)
    views = [approval_view(a, devices) for a in found]
    return render(
        request,
        "approvals.html",
        pending_views=[v for v in views if v["pending"]],
        decided_views=[v for v in views if not v["pending"]][:20],
        **shared,
    )


@pages.get("/memory")
def memory_page(request: Request, c: Ctl, device: Authed) -> HTMLResponse:
    shared = common(c, device)
    return render(request, "memory.html", files=c.memory.files(), **shared)


@pages.get("/settings")
def settings_page(request: Request, c: Ctl, device: Authed) -> HTMLResponse:
    shared = common(c, device)
    devices = [
        {"device": d, "name": shown_name(d), "role": role_of(d).value} for d in c.auth.devices()
    ]
    return render(
        request,
        "settings.html",
        folders=c.settings.folders,
        devices=devices,
        has_ca=(c.settings.data_dir / CA_FILE).is_file(),
        notify=notifications.notify_view(c, device),
        **shared,
    )


# --- fragments and downloads -------------------------------------------------------------

fragments = APIRouter(
    dependencies=[Depends(current_device), Depends(known_query_only)], include_in_schema=False
)


@fragments.get("/fragments/tasks/{task_id}")
def task_fragment(request: Request, task_id: TaskId, c: Ctl) -> HTMLResponse:
    task = c.tasks.get(task_id)
    view = task_view(c, task, _devices_for(c, [task]))
    return render(request, "_task.html", view=view)


@fragments.get("/fragments/approvals/{approval_id}")
def approval_fragment(request: Request, approval_id: ApprovalId, c: Ctl) -> HTMLResponse:
    approval = c.approvals.get(approval_id)
    view = approval_view(approval, c.auth.devices_by_id([approval.decided_by]))
    return render(request, "_approval.html", view=view, standalone=True)


@fragments.get("/fragments/threads")
def threads_fragment(request: Request, c: Ctl) -> HTMLResponse:
    return render(request, "_threads.html", rows=thread_rows(c))


@fragments.get("/fragments/pending")
def pending_fragment(c: Ctl) -> Response:
    """How many requests wait for a decision (the badge in the navigation)."""
    return Response(str(pending_count(c)), media_type="text/plain")


@fragments.get("/images/{sha}")
def image(sha: Annotated[str, PathParam(pattern="^[0-9a-f]{64}$")], c: Ctl) -> Response:
    """A screenshot an agent task took (the live screen), by its SHA-256."""
    return Response(
        c.blobs.get(sha),
        media_type="image/png",
        headers={"Cache-Control": "private, max-age=31536000, immutable"},
    )


@fragments.get("/tasks/{task_id}/files")
def download_result(
    task_id: TaskId,
    c: Ctl,
    path: Annotated[str, Query(min_length=2, max_length=4096)],
) -> StreamingResponse:
    """A file the task created or changed in one of its read-write folders."""
    fd, info = results.open_result(c.tasks.get(task_id), path)
    name = quote(Path(path).name)
    return StreamingResponse(
        results.read_chunks(fd),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(info.st_size),
            "Content-Disposition": f"attachment; filename*=utf-8''{name}",
            # Served as a download from our origin, so it must never run as a page of it.
            "Content-Security-Policy": "sandbox",
            "Cache-Control": "no-store",
        },
    )


@fragments.post("/signout")
def sign_out(request: Request, c: Ctl, device: Authed) -> Response:
    """Sign this browser out: its device is revoked, which ends its other tabs' streams too."""
    if request.scope.get("state", {}).get("session") is None:
        raise BadRequest(
            "signing out is for a browser session; a program revokes its own token with "
            "DELETE /api/v1/devices/{its device id}"
        )
    c.auth.revoke(device.id, cascade=c.tasks.cancel_queued_by)
    response = RedirectResponse("/pair", status_code=303)
    response.headers["Set-Cookie"] = clear_cookie_header(secure=is_tls(request.scope))
    return response


# `app` includes these by these names.
actions = fragments

# The audit and notification pages live in their own modules, under the same session rules.
pages.include_router(audit.pages)
fragments.include_router(audit.fragments)
fragments.include_router(notifications.fragments)
