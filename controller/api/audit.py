"""The audit log over HTTP: its head, a verification, a task's steps and their screenshots.

The head (`GET /api/v1/audit/head`) is what a device keeps: a later log that does not extend
it was cut or rewritten, and `GET /api/v1/audit/verify?head=SEQ:HASH` says so.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, Field

from computer_use.audit.entry import HEX64, Head
from computer_use.audit.shots import media_type
from computer_use.audit.timeline import steps
from computer_use.audit.verify import verify
from controller.api.routes import MAX_ID, Ctl, current_device, errors, known_query_only
from controller.errors import BadRequest, NotFound

router = APIRouter(
    dependencies=[Depends(current_device), Depends(known_query_only)],
    responses=errors(401),
    tags=["audit"],
)
TaskId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


class AuditHead(BaseModel):
    seq: int = Field(description="The last entry's sequence number (0: the log is empty).")
    hash: str = Field(description="Its SHA-256; a later log must extend it.")


class AuditReport(BaseModel):
    ok: bool
    summary: str = Field(description="One line: intact with its counts, or the first problem.")
    report: dict[str, Any] = Field(description="Counts, unfinished actions, the problem.")


@router.get("/api/v1/audit/head")
def audit_head(c: Ctl) -> AuditHead:
    """The chain's head: keep it, and check later that the log still extends it."""
    head = c.audit.head_value()
    return AuditHead(seq=head.seq, hash=head.hash)


@router.get("/api/v1/audit/verify", responses=errors(400, 422))
async def audit_verify(
    c: Ctl,
    task: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    head: Annotated[
        str | None, Query(pattern=r"^[0-9]{1,18}:[0-9a-f]{64}$", description="SEQ:HASH")
    ] = None,
) -> AuditReport:
    """Check the whole chain (and its screenshots), or one task's part; against a head kept
    earlier when given."""
    try:
        kept = Head.parse(head) if head is not None else None
    except ValueError as exc:
        raise BadRequest(str(exc), code="bad_head") from None
    report = await anyio.to_thread.run_sync(lambda: verify(c.audit.root, task=task, head=kept))
    data = report.to_json()
    return AuditReport(ok=bool(data["ok"]), summary=str(data["summary"]), report=data)


@router.get("/api/v1/tasks/{task_id}/audit", responses=errors(404, 422))
def task_audit(task_id: TaskId, c: Ctl) -> list[dict[str, Any]]:
    """The task's steps as the audit log has them: action, decision, who, when, screenshots."""
    c.tasks.get(task_id)  # 404 for an unknown task
    return [step.to_json() for step in steps(c.audit.log.entries(task_id))]


@router.get(
    "/api/v1/audit/screenshots/{sha256}",
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}}},
        **errors(404, 422),
    },
    response_class=Response,
)
def audit_screenshot(sha256: Annotated[str, PathParam(max_length=64)], c: Ctl) -> Response:
    """A screenshot the log refers to, by its SHA-256."""
    if not HEX64.fullmatch(sha256):
        raise NotFound(f"{sha256[:64]!r} is not a screenshot's SHA-256")
    path = c.audit.log.screenshots.path(sha256)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(
            f"screenshot {sha256} is not stored (never written, or pruned by retention)"
        ) from None
    return Response(data, media_type=media_type(data)[0])
