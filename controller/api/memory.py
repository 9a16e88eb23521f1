"""The agent's memory over HTTP: what it remembers, for the person to read, change and delete.

Paths are the memory tool's own (`/memories/notes.md`); in URLs they are given without the
leading `/memories/`: `GET /api/v1/memory/notes.md`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from anthropic.tools import ToolError
from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from computer_use.agent.memory import MAX_FILE_BYTES, ROOT, normalise
from controller.api.routes import Ctl, current_device, errors, known_query_only
from controller.api.schemas import Strict, ts
from controller.errors import NotFound, Unprocessable

router = APIRouter(
    dependencies=[Depends(current_device), Depends(known_query_only)],
    responses=errors(401),
    tags=["memory"],
)


# A path below /memories: segments of printable characters, none starting with a dot (so no
# `.` or `..`), no empty segment.
_SEGMENT = r"[^/\x00-\x1f\x7f-\x9f.][^/\x00-\x1f\x7f-\x9f]*"
MemoryPath = Annotated[
    str,
    PathParam(
        max_length=400,
        pattern=f"^{_SEGMENT}(/{_SEGMENT})*$",
        description="Below /memories/, e.g. notes.md or people/me.md.",
    ),
]


class MemoryFileOut(BaseModel):
    path: str = Field(description="The memory tool's path, e.g. /memories/notes.md.")
    size_bytes: int
    updated_at: datetime


class MemoryFileDetail(MemoryFileOut):
    content: str


class MemoryWrite(Strict):
    content: str = Field(max_length=MAX_FILE_BYTES, description="The file's new text.")


def _path(relative: str) -> str:
    try:
        return normalise(f"{ROOT}/{relative}")
    except ToolError as exc:
        raise Unprocessable(
            f"{exc}; name a file like notes.md or people/me.md", code="bad_path"
        ) from None


@router.get("/api/v1/memory")
def list_memory(c: Ctl) -> list[MemoryFileOut]:
    """Every file the agent keeps, by path."""
    return [
        MemoryFileOut(path=f.path, size_bytes=len(f.content.encode()), updated_at=ts(f.updated_at))  # type: ignore[arg-type]
        for f in c.memory.files()
    ]


@router.get("/api/v1/memory/{path:path}", responses=errors(404, 422))
def read_memory(path: MemoryPath, c: Ctl) -> MemoryFileDetail:
    found = c.memory.get(_path(path))
    if found is None:
        raise NotFound(f"the agent has no memory file {ROOT}/{path}; see GET /api/v1/memory")
    return MemoryFileDetail(
        path=found.path,
        size_bytes=len(found.content.encode()),
        updated_at=ts(found.updated_at),  # type: ignore[arg-type]
        content=found.content,
    )


@router.put("/api/v1/memory/{path:path}", responses=errors(400, 404, 413, 422, 507))
def write_memory(path: MemoryPath, body: MemoryWrite, c: Ctl) -> MemoryFileDetail:
    """Create or replace a memory file; the agent reads it in its next task."""
    clean = _path(path)
    c.memory.write(clean, body.content)
    return read_memory(clean[len(ROOT) + 1 :], c)


@router.delete("/api/v1/memory/{path:path}", status_code=204, responses=errors(404, 422, 507))
def delete_memory(path: MemoryPath, c: Ctl) -> None:
    """Forget a file (or every file under a folder)."""
    clean = _path(path)
    doomed = [p for p in c.memory.paths() if p == clean or p.startswith(clean + "/")]
    if not doomed:
        raise NotFound(f"the agent has no memory file {clean}; see GET /api/v1/memory")
    c.memory.delete(doomed)
