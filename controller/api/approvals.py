"""Approval requests over HTTP: list them, see the screenshot a person judges, decide once.

Any paired device (and the owner) may decide; a revoked token is refused by auth before the
route runs. A decision is accepted once, while the request is pending and unexpired; anything
else is a 409 that changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from controller.agent.tasks import configured_policy
from controller.api.routes import MAX_ID, Authed, Ctl, current_device, errors, known_query_only
from controller.api.schemas import Strict, ts
from controller.errors import NotFound
from controller.service import Controller
from controller.store.approvals import images_pending
from controller.store.models import Approval, ApprovalState

router = APIRouter(
    dependencies=[Depends(current_device), Depends(known_query_only)],
    responses=errors(401),
    tags=["approvals"],
)
ApprovalId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


class ApprovalOut(BaseModel):
    id: int
    task_id: int
    tool: str
    member: str
    input: dict[str, Any] = Field(description="What the model asked for, as it sent it.")
    screen_input: dict[str, Any] = Field(description="The same, in screen pixels.")
    description: str = Field(description="The action in plain words.")
    model_reason: str = Field(description="The model's own words before the call.")
    policy_rule: str | None = Field(description="The policy rule that asked for approval.")
    state: ApprovalState
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: int | None = Field(description="The device that decided.")
    decision_reason: str | None
    replaces: int | None = Field(description="The request this one replaced (screen changed).")
    screenshot_url: str | None = Field(
        description="The screenshot the person judges (PNG). A request is announced while its "
        "images are still being stored; this URL then answers once they are (within moments)."
    )
    annotated_url: str | None = Field(description="The same, marked with the action (PNG).")
    images_ready: bool = Field(
        description="Its images are stored; until then the request cannot be decided."
    )

    @classmethod
    def of(cls, a: Approval) -> ApprovalOut:
        base = f"/api/v1/approvals/{a.id}"
        return cls(
            id=a.id,
            task_id=a.task_id,
            tool=a.tool,
            member=a.member,
            input=a.input,
            screen_input=a.screen_input,
            description=a.description,
            model_reason=a.model_reason,
            policy_rule=a.policy_rule,
            state=a.state,
            created_at=ts(a.created_at),  # type: ignore[arg-type]
            expires_at=ts(a.expires_at),  # type: ignore[arg-type]
            decided_at=ts(a.decided_at),
            decided_by=a.decided_by,
            decision_reason=a.decision_reason,
            replaces=a.replaces,
            screenshot_url=f"{base}/screenshot" if a.screenshot or not a.images_ready else None,
            annotated_url=f"{base}/annotated" if a.annotated or not a.images_ready else None,
            images_ready=a.images_ready,
        )


class DecisionIn(Strict):
    decision: Literal["approve", "deny"] = Field(description='"approve" or "deny".')
    reason: str | None = Field(
        default=None, max_length=2000, description="Told to the model with a denial."
    )


PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
}


@router.get("/api/v1/approvals", responses=errors(422))
def list_approvals(
    c: Ctl,
    state: ApprovalState | None = None,
    task_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ApprovalOut]:
    """Newest first; `?state=pending` for the ones waiting for a decision."""
    return [
        ApprovalOut.of(a) for a in c.approvals.search(state=state, task_id=task_id, limit=limit)
    ]


@router.get("/api/v1/approvals/{approval_id}", responses=errors(404, 422))
def get_approval(approval_id: ApprovalId, c: Ctl) -> ApprovalOut:
    return ApprovalOut.of(c.approvals.get(approval_id))


# How often a request for an image looks again while the images are being stored.
IMAGE_POLL_S = 0.02


async def _image(c: Controller, approval_id: int, which: str) -> Response:
    # A request is announced before its images are stored: wait for them on the event loop (a
    # worker thread held per waiting request would let one device stall the server's pool).
    deadline = time.monotonic() + c.approvals.images_wait_s
    approval = await run_in_threadpool(c.approvals.get, approval_id)
    while not (approval.images_ready or approval.state.final):
        if time.monotonic() >= deadline:
            raise images_pending(approval_id)
        await asyncio.sleep(IMAGE_POLL_S)
        approval = await run_in_threadpool(c.approvals.get, approval_id)
    sha = getattr(approval, which)
    if sha is None:
        raise NotFound(f"approval request {approval_id} has no {which} (the call is off-screen)")
    return Response(
        await run_in_threadpool(c.blobs.get, sha),
        media_type="image/png",
        headers={"Cache-Control": "private, max-age=31536000, immutable", "ETag": f'"{sha}"'},
    )


@router.get(
    "/api/v1/approvals/{approval_id}/screenshot",
    response_class=Response,
    responses={**PNG_RESPONSE, **errors(404, 409, 422)},
)
async def approval_screenshot(approval_id: ApprovalId, c: Ctl) -> Response:
    """The screenshot taken just before asking: what the person judges."""
    return await _image(c, approval_id, "screenshot")


@router.get(
    "/api/v1/approvals/{approval_id}/annotated",
    response_class=Response,
    responses={**PNG_RESPONSE, **errors(404, 409, 422)},
)
async def approval_annotated(approval_id: ApprovalId, c: Ctl) -> Response:
    """The screenshot marked with the action: where a click lands, what is typed."""
    return await _image(c, approval_id, "annotated")


@router.post(
    "/api/v1/approvals/{approval_id}/decision", responses=errors(400, 404, 409, 413, 422, 507)
)
def decide(approval_id: ApprovalId, body: DecisionIn, c: Ctl, device: Authed) -> ApprovalOut:
    """Approve or deny a pending request, once; a late, second or void decision is a 409."""
    approval = c.approvals.decide(
        approval_id,
        approve=body.decision == "approve",
        device_id=device.id,
        reason=body.reason,
    )
    return ApprovalOut.of(approval)


class PolicyOut(BaseModel):
    """The approval policy agent tasks run under, before a task's own tightens it."""

    sandbox: dict[str, Any] = Field(description='For `display: "sandbox"` (and no screen).')
    host: dict[str, Any] = Field(description='For `display: "host"`: every computer action asks.')
    source: Literal["config", "default"] = Field(
        description="`[policy]` in the config file, or the built-in default."
    )


@router.get("/api/v1/policy", tags=["policy"])
def policy(c: Ctl) -> PolicyOut:
    """The effective default approval policy (format: see the README's agent section)."""
    settings = c.settings
    return PolicyOut(
        sandbox=configured_policy(settings, "sandbox").to_dict(),
        host=configured_policy(settings, "host").to_dict(),
        source="config" if settings.policy is not None else "default",
    )
