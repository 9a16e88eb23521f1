"""The console's Jinja2 templates, their filters, and `render` (shared by every page module)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from controller.service import Controller
from controller.store.models import ApprovalState, Device
from controller.web.session import csrf_token

TEMPLATES = Path(__file__).parent / "templates"

templates = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return str(count)


templates.filters["clock"] = _clock
templates.filters["duration"] = _duration
templates.filters["size"] = _size


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page or fragment from `templates/`, never cached (it shows live state)."""
    session = request.scope.get("state", {}).get("session")
    context.setdefault("csrf", csrf_token(session) if session else "")
    context.setdefault("path", request.url.path)
    body = templates.get_template(name).render(**context)
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def pending_count(c: Controller) -> int:
    """How many approval requests wait for a decision now (the badge in the navigation)."""
    now = time.time()
    return sum(1 for a in c.approvals.search(state=ApprovalState.PENDING) if a.expires_at > now)


def common(c: Controller, device: Device) -> dict[str, Any]:
    """What every page's frame shows: the device, the pending badge, where its stream starts."""
    # Read before the page's data, so the event stream resumes from before what it shows.
    return {"device": device, "after": c.events.last_id(), "pending": pending_count(c)}
