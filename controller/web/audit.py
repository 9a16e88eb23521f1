"""The console's audit pages: a task's timeline as the audit log has it, its verification, and
its export as a zip.

The timeline is `computer_use.audit.timeline`'s steps (the words `dispatch audit show` prints),
with each step's screenshots as thumbnails and each decision's device by name. The check is
`verify` of the whole chain with this task's screenshots (what `GET /api/v1/audit/verify?task=`
answers); the page says "verified" or names the first bad entry. The export is exactly what
`dispatch audit export` writes (`export_task`), zipped: it verifies on its own, offline.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse
from starlette.background import BackgroundTask

from computer_use.audit.export import NoSuchTask, export_task
from computer_use.audit.timeline import ROLE_TITLES, Step, steps
from computer_use.audit.verify import verify
from controller.api.routes import MAX_ID, Authed, Ctl, current_device, known_query_only
from controller.auth import shown_name
from controller.errors import NotFound
from controller.service import Controller
from controller.store.models import TaskKind
from controller.web.templating import common, render

TaskId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
ROLE_ORDER = ("seen", "judged", "annotated", "after")

pages = APIRouter(
    dependencies=[Depends(current_device), Depends(known_query_only)], include_in_schema=False
)
fragments = APIRouter(
    dependencies=[Depends(current_device), Depends(known_query_only)], include_in_schema=False
)


def _step_view(c: Controller, step: Step, names: dict[int, str]) -> dict[str, Any]:
    entry = step.entry
    data = entry.data
    shots = []
    ordered = sorted(entry.shots.items(), key=lambda kv: (*ROLE_ORDER, kv[0]).index(kv[0]))
    for role, digest in ordered:
        shots.append(
            {
                "role": role,
                "caption": ROLE_TITLES.get(role, role),  # type: ignore[call-overload]
                "sha": digest,
                "stored": c.audit.log.screenshots.path(digest).is_file(),
            }
        )
    decision = None
    if entry.kind.value == "approval_decided":
        device = data.get("device")
        decision = {
            "decision": str(data.get("decision") or ""),
            "by": str(data.get("by") or "nobody"),
            "device": names.get(device) if isinstance(device, int) else None,
            "device_id": device if isinstance(device, int) else None,
            "reason": data.get("reason"),
        }
    return {
        "seq": entry.seq,
        "time": entry.time.replace("T", " ")[:19],
        "kind": entry.kind.value,
        "title": step.title,
        "detail": step.detail,
        "decision": decision,
        "shots": shots,
        "unfinished": step.unfinished,
        "hash": entry.hash,
    }


def check(c: Controller, task_id: int) -> dict[str, Any]:
    """The chain verified whole, with this task's screenshots: the API's report as JSON."""
    try:
        return verify(c.audit.root, task=task_id).to_json()
    except FileNotFoundError:
        return {"ok": True, "summary": "the audit log is empty", "problem": None, "head": None}


def audit_view(c: Controller, task_id: int) -> dict[str, Any]:
    """Everything the audit page shows for a task."""
    task = c.tasks.get(task_id)  # 404 for an unknown task
    found = steps(c.audit.log.entries(task_id))
    device_ids = {
        s.entry.data.get("device")
        for s in found
        if s.entry.kind.value == "approval_decided" and isinstance(s.entry.data.get("device"), int)
    }
    names = {d.id: shown_name(d) for d in c.auth.devices_by_id(device_ids).values()}
    report = check(c, task_id)
    head = c.audit.head_value()
    return {
        "task": task,
        "title": (task.agent or {}).get("prompt", "")
        if task.kind is TaskKind.AGENT
        else " ".join(task.command),
        "steps": [_step_view(c, s, names) for s in found],
        "report": report,
        "head": f"{head.seq}:{head.hash}",
    }


@pages.get("/tasks/{task_id}/audit")
def audit_page(request: Request, task_id: TaskId, c: Ctl, device: Authed) -> HTMLResponse:
    shared = common(c, device)
    return render(request, "audit.html", view=audit_view(c, task_id), **shared)


@fragments.get("/fragments/tasks/{task_id}/audit")
def audit_fragment(request: Request, task_id: TaskId, c: Ctl) -> HTMLResponse:
    return render(request, "_audit.html", view=audit_view(c, task_id))


def _zip_export(c: Controller, task_id: int, work: Path) -> Path:
    folder = work / f"dispatch-audit-task-{task_id}"
    try:
        export_task(c.audit.root, task_id, folder)
    except (NoSuchTask, FileNotFoundError):
        raise NotFound(f"the audit log has no entry for task {task_id}") from None
    archive = work / f"{folder.name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for path in sorted(folder.rglob("*")):
            name = path.relative_to(work).as_posix()
            if path.is_dir():
                out.write(path, name)  # kept when empty: the export's layout is checked
                continue
            # Screenshots are compressed already; deflating them again only costs time.
            kind = zipfile.ZIP_STORED if path.parent.name == "shots" else zipfile.ZIP_DEFLATED
            out.write(path, name, compress_type=kind)
    return archive


@fragments.get("/tasks/{task_id}/audit/export")
def audit_export(task_id: TaskId, c: Ctl) -> FileResponse:
    """The task's audit export (`dispatch audit export`'s folder) as a zip."""
    c.tasks.get(task_id)  # 404 for an unknown task
    work = Path(tempfile.mkdtemp(prefix="dispatch-export-"))
    try:
        archive = _zip_export(c, task_id, work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return FileResponse(
        archive,
        media_type="application/zip",
        filename=archive.name,
        headers={"Content-Security-Policy": "sandbox", "Cache-Control": "no-store"},
        background=BackgroundTask(shutil.rmtree, work, ignore_errors=True),
    )
