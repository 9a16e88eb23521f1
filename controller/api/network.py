"""A task's network log over HTTP: every request its sandbox made through the egress proxy."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from controller.api.routes import Ctl, TaskId, current_device, errors, known_query_only
from controller.api.schemas import ts
from controller.store.network import NetworkLog

router = APIRouter(
    dependencies=[Depends(current_device), Depends(known_query_only)],
    responses=errors(401),
    tags=["tasks"],
)


class NetworkRequestOut(BaseModel):
    at: datetime
    domain: str = Field(description="The name asked for, as the sandbox wrote it.")
    port: int
    method: str = Field(description="CONNECT for HTTPS tunnels, else the HTTP method.")
    allowed: bool
    reason: str = Field(description="Why it was refused, or why an allowed request failed.")
    bytes_up: int = Field(description="Sandbox to destination.")
    bytes_down: int = Field(description="Destination to sandbox.")
    status: int | None = Field(description="What the proxy answered (200, 403, 502...).")


class TaskNetworkOut(BaseModel):
    task_id: int
    network: str = Field(description="none, open or allowlist; only allowlist is logged.")
    allow: list[str]
    requests: list[NetworkRequestOut]
    refused: int = Field(description="How many of the requests were refused.")


@router.get("/api/v1/tasks/{task_id}/network", responses=errors(404, 422))
def task_network(task_id: TaskId, c: Ctl) -> TaskNetworkOut:
    """The requests the task's sandbox made (network "allowlist"), oldest first."""
    task = c.tasks.get(task_id)
    rows = NetworkLog(c.db).for_task(task_id)
    requests = [
        NetworkRequestOut(
            at=ts(r.at),  # type: ignore[arg-type]
            domain=r.domain,
            port=r.port,
            method=r.method,
            allowed=r.allowed,
            reason=r.reason,
            bytes_up=r.bytes_up,
            bytes_down=r.bytes_down,
            status=r.status,
        )
        for r in rows
    ]
    return TaskNetworkOut(
        task_id=task.id,
        network=task.network,
        allow=list(task.network_allow or []),
        requests=requests,
        refused=sum(1 for r in rows if not r.allowed),
    )
