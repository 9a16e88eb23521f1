"""Running one agent task: its sandbox, its tools behind the approval gate, the model, its record.

`AgentJob.run()` is called by the runner on a pool thread for a claimed `agent` task:

1. start the task's sandbox (the desktop image when the screen or the browser is wanted, with the
   task's grants and network rule, hardened like every sandbox);
2. build the tools: bash and edit in that sandbox, the memory tool on the controller's store, the
   computer tool on the sandbox's screen or the host display, the browser in the sandbox;
3. put every call behind one `Confirmer` per tool: the policy (configured, tightened by the
   task's) decides, `ask` becomes an approval request stored by `ApprovalStore` and waits;
4. run `computer_use.agent.run_agent` with the official client, each step stored as a
   `task.step` event (images by content hash), and record the answer, tokens and cost.

`computer_use` never imports the controller: the store is reached through `StoreGate` (its
`ApprovalGate`), `TaskSteps` (its `AgentSink`) and `MemoryStore` (its `MemoryBackend`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from computer_use.gate import (
    ApprovalOutcome,
    ApprovalRequest,
    Confirmer,
    OutcomeKind,
    ToolCall,
    thaw,
)

import sandbox
from computer_use.agent import AgentOutcome, AgentResult, AgentSpec, Step, agent_client, run_agent
from computer_use.memory import StoredMemoryTool
from computer_use.policy import AnyPolicy, Call, FolderMode, Policy, Verdict, combine
from computer_use.sandbox_tools import SandboxBash, SandboxEdit
from controller.settings import Settings
from controller.store.approvals import ApprovalStore, NewApproval
from controller.store.blobs import BlobStore
from controller.store.memory import MemoryStore
from controller.store.models import ApprovalState, Task
from controller.store.tasks import TaskStore
from sandbox import Mount, Network, Sandbox, SandboxSpec

log = logging.getLogger(__name__)

# How much of a thread's earlier work an agent task is told, newest kept.
CONTEXT_CHARS = 12_000
CONTEXT_ITEM_CHARS = 2_000
STEP_TEXT_CHARS = 16_000


def task_policy(settings_policy: AnyPolicy, task: Task) -> AnyPolicy:
    """The configured policy, tightened by the task's own (already validated at submission)."""
    raw = (task.agent or {}).get("policy")
    return combine(settings_policy, Policy.parse(raw) if raw is not None else None)


@dataclass(frozen=True)
class FolderPolicy:
    """The gate's policy protocol over `computer_use.policy`, with the task's folder modes."""

    policy: AnyPolicy
    folders: tuple[FolderMode, ...]

    def decide(self, call: ToolCall) -> Verdict:
        return self.policy.decide(
            Call(call.tool, call.member, dict(call.input), folders=self.folders)
        )


class StoreGate:
    """`computer_use.gate.ApprovalGate` on the controller's approval store."""

    def __init__(self, approvals: ApprovalStore, cancelled: Callable[[], bool]) -> None:
        self.approvals = approvals
        self.cancelled = cancelled

    def request(self, req: ApprovalRequest) -> ApprovalOutcome:
        stored = self.approvals.request(
            NewApproval(
                task_id=req.task_id,
                tool=req.tool,
                member=req.member,
                input=thaw(req.input),
                screen_input=thaw(req.screen_input),
                description=req.description,
                model_reason=req.model_reason,
                policy_rule=req.policy_rule,
                screenshot_png=req.screenshot_png,
                annotated_png=req.annotated_png,
                replaces=req.replaces,
            )
        )
        final = self.approvals.wait(stored.id, cancelled=self.cancelled)
        kinds = {
            ApprovalState.APPROVED: OutcomeKind.APPROVED,
            ApprovalState.DENIED: OutcomeKind.DENIED,
            ApprovalState.EXPIRED: OutcomeKind.EXPIRED,
        }
        return ApprovalOutcome(
            kind=kinds.get(final.state, OutcomeKind.CANCELLED),
            request_id=final.id,
            reason=final.decision_reason,
        )


class TaskSteps:
    """`computer_use.agent.AgentSink`: each step a `task.step` event, images as blobs."""

    def __init__(
        self, tasks: TaskStore, blobs: BlobStore, task: Task, cancelled: Callable[[], bool]
    ) -> None:
        self.tasks = tasks
        self.blobs = blobs
        self.task = task
        self._cancelled = cancelled
        self.count = 0

    def record(self, step: Step) -> None:
        self.count += 1
        data: dict[str, Any] = {
            "index": self.count,
            "kind": step.kind,
            "text": step.text[:STEP_TEXT_CHARS],
            "tool_calls": [dict(c) for c in step.tool_calls],
            "results": [dict(r) for r in step.results],
            "tokens_in": step.tokens_in,
            "tokens_out": step.tokens_out,
            "at": step.at,
        }
        self.tasks.append_step(self.task, data)

    def store_image(self, data: bytes, media_type: str) -> str:
        return self.blobs.put(data)

    def cancelled(self) -> bool:
        return self._cancelled()


def thread_context(earlier: list[Mapping[str, Any]]) -> str:
    """The thread's earlier work as text: prompts, answers, command results; newest kept."""
    parts: list[str] = []
    used = 0
    for item in reversed(earlier):
        text = item["text"][:CONTEXT_ITEM_CHARS]
        if used + len(text) > CONTEXT_CHARS:
            parts.append("(earlier work of this thread left out)")
            break
        parts.append(text)
        used += len(text)
    if not parts:
        return ""
    return "Earlier in this thread:\n" + "\n\n".join(reversed(parts))


@dataclass
class AgentJob:
    """Everything one agent task needs; `run()` returns how it ended."""

    settings: Settings
    task: Task
    mounts: tuple[Mount, ...]
    tasks: TaskStore
    approvals: ApprovalStore
    blobs: BlobStore
    memory: MemoryStore
    policy: AnyPolicy
    context: str
    factory: Callable[[str, SandboxSpec], Sandbox]
    attach: Callable[[Sandbox], bool]
    cancelled: Callable[[], bool]
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def agent(self) -> Mapping[str, Any]:
        return self.task.agent or {}

    def run(self) -> AgentResult:
        started = time.monotonic()
        tools = list(self.agent.get("tools", []))
        box = self._sandbox(tools)
        try:
            folders = tuple(m.mode for m in self.mounts)
            policy = FolderPolicy(self.policy, folders)  # type: ignore[arg-type]
            gate = StoreGate(self.approvals, self.cancelled)
            toolsets: list[Any] = []
            if box is not None and "bash" in tools:
                guard = self._confirmer("bash", policy, gate).guard
                workdir = str(self.mounts[0].host) if self.mounts else None
                toolsets.append(SandboxBash(box, guard, workdir=workdir))
            if box is not None and "edit" in tools:
                toolsets.append(SandboxEdit(box, self._confirmer("edit", policy, gate).guard))
            if "memory" in tools:
                toolsets.append(StoredMemoryTool(self.memory))
            toolsets += self.screen_tools(tools, box, policy, gate)
            spec = AgentSpec(
                prompt=str(self.agent.get("prompt", "")),
                model=str(self.agent.get("model") or self.settings.model),
                max_steps=int(self.agent.get("max_steps", 30)),
                context=self.context,
            )
            sink = TaskSteps(self.tasks, self.blobs, self.task, self.cancelled)
            client = agent_client(
                api_key=self.settings.anthropic_api_key or "",
                base_url=self.settings.anthropic_base_url,
                on_retry=lambda text: sink.record(Step(kind="retry", text=text)),
            )
            result = run_agent(client, spec, toolsets, sink)
            log.info(
                "agent task %s: %s in %.1f s",
                self.task.id,
                result.outcome.value,
                time.monotonic() - started,
            )
            return result
        finally:
            for close in reversed(self.closers):
                try:
                    close()
                except Exception:
                    log.exception("could not close a tool of task %s", self.task.id)

    def _sandbox(self, tools: list[str]) -> Sandbox | None:
        wants_screen = ("computer" in tools and self.agent.get("display") == "sandbox") or (
            "browser" in tools
        )
        if not ({"bash", "edit"} & set(tools)) and not wants_screen:
            return None
        spec = SandboxSpec(
            image=self.settings.desktop_image if wants_screen else self.settings.sandbox_image,
            mounts=self.mounts,
            network=Network(self.task.network),
            workdir=self.mounts[0].host if self.mounts else None,
            labels={"dispatch.task": str(self.task.id)},
        )
        box = self.factory(self.settings.sandbox_backend, spec)
        if not self.attach(box):
            raise sandbox.SandboxNotRunning("the task was cancelled before its sandbox started")
        box.start()
        self.tasks.set_sandbox(self.task.id, box.id)
        return box

    def _confirmer(
        self, tool: str, policy: FolderPolicy, gate: StoreGate, **screen: Any
    ) -> Confirmer:
        return Confirmer(
            task_id=self.task.id,
            tool=tool,
            policy=policy,
            gate=gate,
            timeout_s=self.settings.approval_timeout_s,
            **screen,
        )

    def screen_tools(
        self, tools: list[str], box: Sandbox | None, policy: FolderPolicy, gate: StoreGate
    ) -> list[Any]:
        """The computer and browser toolsets (wired in `controller.screens`)."""
        from controller.screens import screen_toolsets

        return screen_toolsets(self, tools, box, policy, gate)


def outcome_status(result: AgentResult) -> str:
    """The task status an agent result ends in."""
    return {
        AgentOutcome.SUCCEEDED: "succeeded",
        AgentOutcome.CANCELLED: "cancelled",
    }.get(result.outcome, "failed")
