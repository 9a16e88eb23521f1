"""A task's audit entries as steps a person reads: plain words for the terminal (`dispatch audit
show`), the API, and a self-contained `index.html` that opens offline.

Everything in an entry may come from the model (its text, its reasons, what it wanted to type)
or from whoever submitted the task, so it is shown escaped: control and formatting characters
(bidi overrides, zero-width spaces) as `\\u202e`-style escapes, then HTML-escaped in the page.
The page has no script at all, its CSS is inline, its images are relative paths next to it,
and a Content-Security-Policy forbids it to load anything else.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from computer_use.approval.annotate import escape, shorten
from computer_use.audit.entry import Entry, Head, Kind, Role

TEXT_CHARS = 600
ROLE_TITLES = {
    Role.SEEN: "what the model saw",
    Role.JUDGED: "what the person was shown",
    Role.ANNOTATED: "the action drawn on it",
    Role.AFTER: "after the action",
}


@dataclass(frozen=True)
class Step:
    """One entry in words: `title` (what happened), `detail` (the rest), `who` decided, if any."""

    entry: Entry
    title: str
    detail: str
    who: str | None
    unfinished: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            **self.entry.to_json(),
            "title": self.title,
            "detail": self.detail,
            "who": self.who,
            "unfinished": self.unfinished,
        }


def _s(value: Any, limit: int = TEXT_CHARS) -> str:
    return shorten(str(value), limit) if value not in (None, "") else ""


def _lines(value: Any, limit: int = TEXT_CHARS, max_lines: int = 40) -> str:
    """Like `_s`, but a text's own line breaks are kept (each line escaped on its own)."""
    if value in (None, ""):
        return ""
    lines = str(value).splitlines()
    shown = [shorten(line, limit) for line in lines[:max_lines]]
    if len(lines) > max_lines:
        shown.append(f"[{len(lines) - max_lines} more lines]")
    return "\n".join(shown)


def _command(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(escape(str(part)) for part in value)
    return _s(value)


def _words(found: Entry, proposals: Mapping[str, str]) -> tuple[str, str, str | None]:
    d = found.data
    action = proposals.get(str(d.get("action_id")), "the action")
    match found.kind:
        case Kind.TASK_SUBMITTED:
            by = f" by {_s(d['by'], 80)}" if d.get("by") else ""
            request = json.dumps(d.get("request"), ensure_ascii=False, default=str)
            return f"Task submitted{by}", f"{_s(d.get('type'))}: {_s(request)}", None
        case Kind.TASK_STARTED:
            return "Task started", _s(d.get("where", "")), None
        case Kind.MODEL_TURN:
            tokens = (
                f" ({d.get('input_tokens', '?')} tokens in, {d.get('output_tokens', '?')} out)"
                if "input_tokens" in d or "output_tokens" in d
                else ""
            )
            return f"The model's turn{tokens}", _lines(d.get("text")), None
        case Kind.ACTION_PROPOSED:
            reason = f"Reason given: {_s(d.get('reason'))}" if d.get("reason") else ""
            policy = f" (policy: {_s(d['policy'], 80)})" if d.get("policy") else ""
            return f"Proposed: {_s(d['description'], 200)}{policy}", reason, None
        case Kind.APPROVAL_REQUESTED:
            number = f" (request {d['approval_id']})" if d.get("approval_id") is not None else ""
            return f"Approval asked{number}: {action}", "", None
        case Kind.APPROVAL_DECIDED:
            who = _s(d.get("by"), 80) + (f" on {_s(d['device'], 80)}" if d.get("device") else "")
            reason = f"Reason: {_s(d.get('reason'))}" if d.get("reason") else ""
            return f"{_s(d.get('decision')).capitalize()} by {who}: {action}", reason, who
        case Kind.ACTION_PERFORMED:
            result = _lines(d.get("result") or d.get("error") or "")
            return f"Performed ({_s(d.get('outcome'), 40)}): {action}", result, None
        case Kind.SANDBOX_COMMAND:
            return (
                f"Command exited {d.get('exit_code')} ({_s(d.get('outcome'), 60)})",
                _command(d.get("command")),
                None,
            )
        case Kind.NETWORK_REQUEST:
            verdict = "allowed" if d.get("allowed") else "refused"
            where = f"{_s(d.get('domain'), 255)}:{d.get('port')}"
            return (
                f"Network {verdict}: {_s(d.get('method'), 16)} {where}",
                _s(d.get("reason")),
                None,
            )
        case Kind.TASK_FINISHED:
            return f"Task finished: {_s(d.get('status'), 60)}", _s(d.get("reason")), None
        case Kind.SCREENSHOTS_PRUNED:
            count = len(d.get("shots", ()))
            return f"{count} screenshots pruned (older than {d['older_than_days']} days)", "", None
        case Kind.LOG_REPAIRED:
            return (
                f"A torn last line ({d.get('bytes')} bytes) set aside after a crash",
                _s(d.get("saved_as")),
                None,
            )
    return found.kind.value, "", None  # pragma: no cover - every kind is matched above


def steps(entries: Iterable[Entry]) -> list[Step]:
    """The entries as steps; a proposal with no result after it is marked unfinished."""
    listed = list(entries)
    proposals: dict[str, str] = {}
    closed: set[str] = set()
    for found in listed:
        action = str(found.data.get("action_id"))
        if found.kind is Kind.ACTION_PROPOSED:
            proposals[action] = _s(found.data.get("description"), 200)
        elif found.kind is Kind.ACTION_PERFORMED or (
            found.kind is Kind.APPROVAL_DECIDED
            and found.data.get("decision") in ("denied", "expired", "cancelled", "deny")
        ):
            closed.add(action)
    out = []
    for found in listed:
        title, detail, who = _words(found, proposals)
        unfinished = (
            found.kind is Kind.ACTION_PROPOSED and str(found.data.get("action_id")) not in closed
        )
        if unfinished:
            title += " - NO RESULT RECORDED (the controller stopped before it finished)"
        out.append(Step(found, title, detail, who, unfinished))
    return out


def text(found: list[Step]) -> str:
    """The steps for a terminal, one or two lines each (callers escape for their terminal)."""
    lines = []
    for step in found:
        when = step.entry.time.replace("T", " ")[:19]
        shots = ", ".join(f"{role} {h[:12]}" for role, h in step.entry.shots.items())
        lines.append(f"{step.entry.seq:>6}  {when}  {step.title}")
        if step.detail:
            lines.append(f"{'':>8}{step.detail}")
        if shots:
            lines.append(f"{'':>8}screenshots: {shots}")
    return "\n".join(lines)


def _role_order(item: tuple[str, str]) -> tuple[int, str]:
    order = list(Role)
    return (order.index(Role(item[0])) if item[0] in ROLE_TITLES else len(order), item[0])


CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f5f5f7;color:#1d1d1f}
header{background:#1d1d28;color:#fff;padding:16px 20px}
header h1{margin:0 0 4px;font-size:20px}
header p{margin:2px 0;font-size:13px;opacity:.85;word-break:break-all}
main{max-width:1100px;margin:0 auto;padding:12px}
.step{background:#fff;border-radius:10px;margin:12px 0;padding:12px 16px;
box-shadow:0 1px 3px rgba(0,0,0,.12);border-left:5px solid #8a8aa0}
.step.action_proposed{border-color:#c07000}.step.approval_decided{border-color:#2a7a2a}
.step.unfinished{border-color:#c00020;background:#fff4f4}
.meta{font-size:12px;color:#666}.title{font-weight:600;margin:4px 0}
.detail{white-space:pre-wrap;word-break:break-word;font-size:14px}
.who{font-size:13px;color:#2a5a2a}
figure{display:inline-block;margin:8px 12px 0 0;vertical-align:top;max-width:48%}
figure img{max-width:100%;border:1px solid #ccc;border-radius:4px}
figcaption{font-size:12px;color:#555}
.pruned{font-size:12px;color:#999;border:1px dashed #bbb;padding:20px;display:inline-block}
code{font-size:11px;color:#777;word-break:break-all}
"""

CSP = "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'"


def page(
    task: int,
    found: list[Step],
    head: Head,
    image_for: Callable[[str], str | None],
    verified: str,
) -> str:
    """The index.html of an export. `image_for(hash)` is the image's relative path, or None
    if the file was pruned; `verified` is the one-line result of checking the export."""
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Dispatch audit - task {task}</title><style>{CSS}</style></head><body>",
        f"<header><h1>Task {task}: {len(found)} audited steps</h1>",
        f"<p>{e(verified)}</p>",
        f"<p>Chain head at export: {e(str(head))}</p></header><main>",
    ]
    for step in found:
        classes = f"step {step.entry.kind.value}" + (" unfinished" if step.unfinished else "")
        parts.append(f'<section class="{classes}" id="seq-{step.entry.seq}">')
        parts.append(
            f'<div class="meta">#{step.entry.seq} &middot; {e(step.entry.time)} &middot; '
            f"{e(step.entry.kind.value)}</div>"
        )
        parts.append(f'<div class="title">{e(step.title)}</div>')
        if step.who:
            parts.append(f'<div class="who">Decided by {e(step.who)} at {e(step.entry.time)}</div>')
        if step.detail:
            parts.append(f'<div class="detail">{e(step.detail)}</div>')
        for role, digest in sorted(step.entry.shots.items(), key=_role_order):
            caption = ROLE_TITLES.get(role, role)  # type: ignore[call-overload]
            source = image_for(digest)
            if source is None:
                parts.append(
                    f'<figure><div class="pruned">screenshot pruned by retention</div>'
                    f"<figcaption>{e(caption)} <code>{digest}</code></figcaption></figure>"
                )
                continue
            parts.append(
                f'<figure><a href="{e(source)}"><img src="{e(source)}" alt="{e(caption)}" '
                f'data-sha256="{digest}"></a><figcaption>{e(caption)} <code>{digest}</code>'
                "</figcaption></figure>"
            )
        parts.append(f'<div class="meta"><code>hash {step.entry.hash}</code></div></section>')
    parts.append("</main></body></html>")
    return "\n".join(parts)
