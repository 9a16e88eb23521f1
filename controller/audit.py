"""What the controller writes into the audit chain (computer_use.audit), and when.

    submission ─▶ task_submitted (who asked for what)
    a worker   ─▶ task_started ─▶ sandbox_command (command tasks) ─▶ task_finished
    an agent   ─▶ model_turn (each reply)
                  action_proposed (before the gate decides; write-ahead of the action)
                  approval_requested / approval_decided (the screenshot judged, who decided)
                  action_performed (its result and the screenshot after it), or, when the
                  policy or a person refused it, an action_performed whose outcome says so

An entry about an action is durable before the action runs: `AuditTrail.propose` raises when
the log refuses the write, and the gate then refuses the action. Entries about tasks
(submitted, started, finished) are written after the database took the change; if the log
refuses one, that is logged loudly and the task goes on, so nothing already accepted is lost.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from computer_use.audit.chain import AUDIT_FOLDER, AuditLog
from computer_use.audit.entry import Head, Kind
from computer_use.errors import AuditError

log = logging.getLogger(__name__)
RESULT_CHARS = 4000


class AuditTrail:
    """The controller's audit log with one method per thing it records."""

    def __init__(self, data_dir: Path, *, mask: Sequence[str] = ()) -> None:
        """`mask`: values (a headless run's secrets) written as `***` wherever they appear."""
        self.root = data_dir / AUDIT_FOLDER
        self._mask = tuple(sorted((m for m in mask if m), key=len, reverse=True))
        self._log: AuditLog | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def open(self) -> None:
        """Raises: AuditError (the folder or the log's tail cannot be used)."""
        if self._log is None:
            self._log = AuditLog.open(self.root)

    def close(self) -> None:
        log_, self._log = self._log, None
        if log_ is not None:
            log_.close()

    @property
    def log(self) -> AuditLog:
        if self._log is None:
            raise AuditError("the audit log is not open; the controller has not started")
        return self._log

    def _append(
        self,
        kind: Kind,
        task: int | None,
        thread: int | None,
        data: Mapping[str, Any],
        shots: Mapping[str, str | bytes] | None = None,
    ) -> None:
        """Raises: AuditError."""
        self.log.append(kind, task=task, thread=thread, data=self._clean(data), shots=shots)

    def _clean(self, value: Any) -> Any:
        """`value` as the log may hold it: secrets masked (keys too), and text a page or a
        program controls made encodable, since a lone UTF-16 surrogate (which JavaScript
        strings may hold) cannot be written as UTF-8 and would silently drop the entry."""
        if isinstance(value, str):
            value = value.encode("utf-8", "replace").decode("utf-8")
            for secret in self._mask:
                value = value.replace(secret, "***")
            return value
        if isinstance(value, Mapping):
            return {self._clean(str(k)): self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value

    def head(self) -> dict[str, Any] | None:
        """The chain head as published with events ({"seq", "hash"}), or None when closed."""
        return self._log.head().to_json() if self._log is not None else None

    def head_value(self) -> Head:
        return self.log.head()

    def action_id(self) -> str:
        """An id for an action that has no tool_use id (unique in this process)."""
        with self._lock:
            return f"action-{next(self._ids)}"

    # --- tasks: logged, never fatal -------------------------------------------------------

    def _quiet(self, kind: Kind, task: int, thread: int | None, data: Mapping[str, Any]) -> None:
        try:
            self._append(kind, task, thread, data)
        except AuditError as exc:
            log.error("could not write %s of task %s to the audit log: %s", kind, task, exc)

    def submitted(
        self, task: int, thread: int, *, kind: str, request: Mapping[str, Any], by: str
    ) -> None:
        self._quiet(Kind.TASK_SUBMITTED, task, thread, {"type": kind, "request": request, "by": by})

    def started(self, task: int, thread: int) -> None:
        self._quiet(Kind.TASK_STARTED, task, thread, {})

    def command(
        self, task: int, thread: int, command: Sequence[str], exit_code: int | None, outcome: str
    ) -> None:
        data = {"command": list(command), "exit_code": exit_code, "outcome": outcome}
        self._quiet(Kind.SANDBOX_COMMAND, task, thread, data)

    def network(self, task: int, thread: int, request: Mapping[str, Any]) -> None:
        self._quiet(Kind.NETWORK_REQUEST, task, thread, request)

    def finished(self, task: int, thread: int, status: str, reason: str | None) -> None:
        self._quiet(Kind.TASK_FINISHED, task, thread, {"status": status, "reason": reason})

    def model_turn(
        self, task: int, thread: int, text: str, tokens_in: int, tokens_out: int
    ) -> None:
        data = {"text": text, "input_tokens": tokens_in, "output_tokens": tokens_out}
        self._quiet(Kind.MODEL_TURN, task, thread, data)

    # --- actions: write-ahead, fatal to the action ---------------------------------------

    def propose(
        self,
        task: int,
        thread: int,
        *,
        action_id: str,
        tool: str,
        member: str,
        input: Mapping[str, Any],
        reason: str,
    ) -> None:
        """Raises: AuditError (the action must not run)."""
        # Here, not at the top: it draws with Pillow and SciPy, and only agents propose actions.
        from computer_use.approval.annotate import describe

        data = {
            "action_id": action_id,
            "tool": tool,
            "member": member,
            "input": dict(input),
            "description": describe(tool, member, input),
            "reason": reason,
        }
        self._append(Kind.ACTION_PROPOSED, task, thread, data)

    def requested(
        self,
        task: int,
        thread: int,
        *,
        action_id: str,
        approval_id: int,
        description: str,
        judged: bytes | None,
        annotated: bytes | None,
    ) -> None:
        """Raises: AuditError (the request must not be shown)."""
        shots = {k: v for k, v in (("judged", judged), ("annotated", annotated)) if v}
        data = {"action_id": action_id, "approval_id": approval_id, "description": description}
        self._append(Kind.APPROVAL_REQUESTED, task, thread, data, shots)

    def decided(
        self,
        task: int,
        thread: int | None,
        *,
        action_id: str,
        approval_id: int,
        decision: str,
        by: str,
        device: int | None,
        reason: str | None,
    ) -> None:
        data = {
            "action_id": action_id,
            "approval_id": approval_id,
            "decision": decision,
            "by": by,
            "device": device,
            "reason": reason,
        }
        self._quiet(Kind.APPROVAL_DECIDED, task, thread, data)

    def performed(
        self,
        task: int,
        thread: int,
        *,
        action_id: str,
        outcome: str,
        text: str,
        after: bytes | None = None,
    ) -> None:
        key = "error" if outcome != "ok" else "result"
        data = {"action_id": action_id, "outcome": outcome, key: text[:RESULT_CHARS]}
        try:
            self._append(
                Kind.ACTION_PERFORMED, task, thread, data, {"after": after} if after else None
            )
        except AuditError as exc:
            log.error("could not write the result of %s to the audit log: %s", action_id, exc)


class AgentAudit:
    """One agent task's actions in the audit log: ids, open proposals, the current request.

    The gate's checks run one at a time on the task's thread, in the order of the reply's
    tool_use blocks, so the sandbox tools' guard (which is not told its tool_use id) takes the
    first unclaimed block of its tool.
    """

    def __init__(
        self,
        trail: AuditTrail,
        task: int,
        thread: int,
        reply: Callable[[], Sequence[Any]],
        who: Callable[[int | None], str],
    ) -> None:
        self.trail = trail
        self.task = task
        self.thread = thread
        self.reply = reply
        self.who = who
        self.open: dict[str, str] = {}  # tool_use id -> action id, until its result
        self.current: str | None = None
        self._claimed: set[str] = set()

    def propose(
        self, tool: str, member: str, input: Mapping[str, Any], tool_use_id: str | None, why: str
    ) -> str:
        """Write the proposal (durable) and return its action id. Raises: AuditError."""
        if tool_use_id is None:
            tool_use_id = next(
                (
                    b.id
                    for b in self.reply()
                    if getattr(b, "type", None) == "tool_use"
                    and b.name == tool
                    and b.id not in self._claimed
                ),
                None,
            )
        action_id = tool_use_id or self.trail.action_id()
        self._claimed.add(action_id)
        self.open[action_id] = action_id
        self.current = action_id
        self.trail.propose(
            self.task,
            self.thread,
            action_id=action_id,
            tool=tool,
            member=member,
            input=input,
            reason=why,
        )
        return action_id

    def refused(self, action_id: str, why: str) -> None:
        if self.open.pop(action_id, None) is not None:
            self.trail.performed(
                self.task, self.thread, action_id=action_id, outcome="not_performed", text=why
            )

    def requested(self, approval_id: int, description: str, judged: Any, annotated: Any) -> None:
        self.trail.requested(
            self.task,
            self.thread,
            action_id=self.current or self.trail.action_id(),
            approval_id=approval_id,
            description=description,
            judged=judged,
            annotated=annotated,
        )

    def decided(
        self, approval_id: int, decision: str, device: int | None, reason: str | None
    ) -> None:
        self.trail.decided(
            self.task,
            self.thread,
            action_id=self.current or "",
            approval_id=approval_id,
            decision=decision,
            by=self.who(device) if decision in ("approved", "denied") else "nobody",
            device=device,
            reason=reason,
        )

    def results(self, results: Sequence[Mapping[str, Any]], image: Callable[[str], bytes]) -> None:
        """The tools step: each call's result closes its proposal (with the screen after it)."""
        for result in results:
            action_id = self.open.pop(str(result.get("tool_use_id")), None)
            if action_id is None:
                continue
            refs = result.get("images") or []
            self.trail.performed(
                self.task,
                self.thread,
                action_id=action_id,
                outcome="error" if result.get("is_error") else "ok",
                text=str(result.get("text", "")),
                after=image(refs[0]) if refs else None,
            )


__all__ = ["AgentAudit", "AuditTrail"]
