"""Running one agent task: its sandbox, its tools behind the approval gate, the model, its record.

`AgentJob.run()` is called by the runner on a pool thread for a claimed `agent` task:

1. start the task's sandbox (the desktop image when the screen or the browser is wanted, with the
   task's grants and network rule, hardened like every sandbox);
2. build the tools: bash and edit in that sandbox, the memory tool on the controller's store, the
   computer tool on the sandbox's screen or the host display, the browser in the sandbox;
3. put every call behind one `Confirmer` per tool: the policy (configured, tightened by the
   task's) decides, `ask` becomes an approval request stored by `ApprovalStore` and waits;
4. run `computer_use.agent.loop.run_agent` with the official client, each step stored as a
   `task.step` event (images by content hash), and record the answer, tokens and cost.

`computer_use` never imports the controller: the store is reached through `StoreGate` (its
`ApprovalGate`), `TaskSteps` (its `AgentSink`) and `MemoryStore` (its `MemoryBackend`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from anthropic.tools import ToolError

import sandbox
from computer_use.agent.loop import (
    AgentOutcome,
    AgentResult,
    AgentSpec,
    Step,
    agent_client,
    run_agent,
)
from computer_use.agent.memory import StoredMemoryTool
from computer_use.agent.sandbox_tools import SandboxBash, SandboxEdit
from computer_use.approval.gate import (
    ApprovalOutcome,
    ApprovalRequest,
    Confirmer,
    OutcomeKind,
    ToolCall,
    reason_before,
    thaw,
)
from computer_use.approval.policy import AnyPolicy, Call, FolderMode, Verdict
from controller.agent.services import AgentServices, SandboxStartFailed, backend_of
from controller.audit import AgentAudit
from controller.execution.folders import FolderPlan
from controller.settings import Settings
from controller.store.approvals import ApprovalStore, NewApproval
from controller.store.blobs import BlobStore
from controller.store.models import ApprovalState, Task
from controller.store.tasks import TaskStore
from sandbox import Network, Sandbox, SandboxSpec
from sandbox.base import DEADLINE_GRACE_S

log = logging.getLogger(__name__)

# How much of a thread's earlier work an agent task is told, newest kept.
CONTEXT_CHARS = 12_000
CONTEXT_ITEM_CHARS = 2_000
STEP_TEXT_CHARS = 16_000


@dataclass(frozen=True)
class FolderPolicy:
    """The gate's policy protocol over `computer_use.approval.policy`, with the folder modes
    and, for a browser call, its tab's URL."""

    policy: AnyPolicy
    folders: tuple[FolderMode, ...]

    def decide(self, call: ToolCall) -> Verdict:
        input = dict(call.input)
        if call.tool == "browser" and "url" not in input:
            # A browser call acts on its tab's page: `domain` rules judge that page's host
            # (`Call` takes it as `input["url"]`; a `navigate` keeps the URL it opens).
            input["url"] = call.tab_url
        return self.policy.decide(Call(call.tool, call.member, input, folders=self.folders))


class StoreGate:
    """`computer_use.approval.gate.ApprovalGate` on the controller's approval store."""

    def __init__(
        self,
        approvals: ApprovalStore,
        cancelled: Callable[[], bool],
        audit: AgentAudit | None = None,
    ) -> None:
        self.approvals = approvals
        self.cancelled = cancelled
        self.audit = audit

    def request(self, req: ApprovalRequest) -> ApprovalOutcome:
        # Announced at once; its images, encoding meanwhile, follow (no decision before them).
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
                screenshot_png=None,
                annotated_png=None,
                replaces=req.replaces,
                images_follow=req.images is not None,
            )
        )
        try:
            screenshot, annotated = req.images.result() if req.images else (None, None)
            if self.audit is not None:
                self.audit.requested(stored.id, req.description, screenshot, annotated)
            if screenshot is not None and annotated is not None:
                self.approvals.attach_images(stored.id, screenshot, annotated)
        except Exception:
            # Not recorded or not shown: the request is withdrawn and the gate fails closed.
            self.approvals.void(
                stored.id, "the request's screenshot or its audit record could not be stored"
            )
            raise
        final = self.approvals.wait(stored.id, cancelled=self.cancelled)
        if self.audit is not None:
            self.audit.decided(final.id, final.state.value, final.decided_by, final.decision_reason)
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
    """`computer_use.agent.loop.AgentSink`: each step a `task.step` event, images as blobs."""

    def __init__(
        self,
        tasks: TaskStore,
        blobs: BlobStore,
        task: Task,
        cancelled: Callable[[], bool],
        audit: AgentAudit | None = None,
    ) -> None:
        self.tasks = tasks
        self.blobs = blobs
        self.task = task
        self._cancelled = cancelled
        self.audit = audit
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
        if self.audit is None:
            return
        if step.kind == "model":
            trail = self.audit.trail
            trail.model_turn(
                self.task.id, self.task.thread_id, step.text, step.tokens_in, step.tokens_out
            )
        elif step.kind == "tools":
            self.audit.results(step.results, lambda ref: self.blobs.path(ref).read_bytes())

    def store_image(self, data: bytes, media_type: str) -> str:
        return self.blobs.put(data)

    def cancelled(self) -> bool:
        return self._cancelled()


def thread_context(earlier: Sequence[Mapping[str, Any]]) -> str:
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


class AuditedConfirmer(Confirmer):
    """The gate, with its write-ahead proposal before it decides and its refusals recorded."""

    def __init__(self, *args: Any, audit: AgentAudit, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.audit = audit

    def check(
        self,
        tool: str,
        member: str,
        input: Mapping[str, Any],
        *,
        tool_use_id: str | None = None,
        tab_url: str | None = None,
    ) -> None:
        why = self.stated_reason(tool_use_id)
        action_id = self.audit.propose(tool, member, input, tool_use_id, why)
        try:
            super().check(tool, member, input, tool_use_id=tool_use_id, tab_url=tab_url)
        except ToolError as exc:
            self.audit.refused(action_id, str(exc))
            raise


@dataclass
class AgentJob:
    """Everything one agent task needs; `run()` returns how it ended."""

    services: AgentServices
    task: Task
    plan: FolderPlan
    policy: AnyPolicy
    context: str
    factory: Callable[[str, SandboxSpec], Sandbox]
    attach: Callable[[Sandbox], bool]
    cancelled: Callable[[], bool]
    on_sandbox: Callable[[str], None]
    # Each request of a network-allowlist sandbox through its egress proxy.
    on_egress: Callable[[Any], None] | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)
    audit: AgentAudit | None = None
    # The reply whose tool calls are running: the model's stated reason comes from it.
    reply_content: list[Any] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def agent(self) -> Mapping[str, Any]:
        return self.task.agent or {}

    def run(self) -> AgentResult:
        """Raises: SandboxStartFailed (the engine is away), sandbox.SandboxError."""
        started = time.monotonic()
        tools = list(self.agent.get("tools", []))
        if self.services.audit is not None:
            self.audit = AgentAudit(
                self.services.audit,
                self.task.id,
                self.task.thread_id,
                lambda: self.reply_content,
                self.services.who,
            )
        try:
            box = self._sandbox(tools)
            folders = tuple(m.mode for m in self.plan.requested)
            policy = FolderPolicy(self.policy, folders)  # type: ignore[arg-type]
            gate = StoreGate(self.services.approvals, self.cancelled, self.audit)
            toolsets: list[Any] = []
            if box is not None and "bash" in tools:
                guard = self._confirmer("bash", policy, gate).guard
                workdir = str(self.plan.requested[0].host) if self.plan.requested else None
                toolsets.append(SandboxBash(box, guard, workdir=workdir))
            if box is not None and "edit" in tools:
                toolsets.append(SandboxEdit(box, self._confirmer("edit", policy, gate).guard))
            if "memory" in tools:
                guard = self._confirmer("memory", policy, gate).guard
                toolsets.append(StoredMemoryTool(self.services.memory, guard=guard))
            toolsets += self.screen_tools(tools, box, policy, gate)
            spec = AgentSpec(
                prompt=str(self.agent.get("prompt", "")),
                model=str(self.agent.get("model") or self.settings.model),
                max_steps=int(self.agent.get("max_steps", 30)),
                context=self.context,
                stop_on_denial=self.settings.headless,
            )
            sink = TaskSteps(
                self.services.tasks, self.services.blobs, self.task, self.cancelled, self.audit
            )
            client = agent_client(
                api_key=self.settings.anthropic_api_key or "",
                base_url=self.settings.anthropic_base_url,
                on_retry=lambda text: sink.record(Step(kind="retry", text=text)),
            )
            result = run_agent(client, spec, toolsets, sink, on_reply=self._on_reply)
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
            mounts=self.plan.mounts,
            network=Network(self.task.network),
            allow=tuple(self.task.network_allow or ()),
            resolve=self.settings.network_resolve,
            workdir=self.plan.requested[0].host if self.plan.requested else None,
            labels={"dispatch.task": str(self.task.id)},
            user=self.plan.user,
            deadline_s=self.task.timeout_s + DEADLINE_GRACE_S,
            git_writable=self.plan.git_writable,
            git_protected=self.plan.git_protected,
        )
        box = self.factory(backend_of(self.task, self.settings), spec)
        watch_egress = getattr(box, "watch_egress", None)
        if spec.network is Network.ALLOWLIST and watch_egress and self.on_egress is not None:
            watch_egress(self.on_egress)
        # Removed at the end whatever happens (and by `attach`'s kill when cancelled).
        self.closers.append(box.stop)
        if not self.attach(box):
            raise sandbox.SandboxNotRunning("the task was stopped before its sandbox started")
        try:
            box.start()
        except (sandbox.EngineUnavailable, OSError) as exc:
            raise SandboxStartFailed(exc) from exc
        self.on_sandbox(box.id)
        return box

    def _on_reply(self, message: Any) -> None:
        self.reply_content = list(message.content)

    def stated_reason(self, tool_use_id: str | None) -> str:
        """The model's words before the call: before that tool_use, or (for the sandbox tools,
        whose guard does not know its tool_use) before the reply's first call."""
        if tool_use_id is not None:
            return reason_before(self.reply_content, tool_use_id)
        texts = []
        for block in self.reply_content:
            if block.type == "tool_use":
                break
            if block.type == "text":
                texts.append(block.text.strip())
        return "\n".join(t for t in texts if t)

    def _confirmer(
        self, tool: str, policy: FolderPolicy, gate: StoreGate, **screen: Any
    ) -> Confirmer:
        make: Callable[..., Confirmer] = Confirmer
        if self.audit is not None:
            make, screen = AuditedConfirmer, {**screen, "audit": self.audit}
        return make(
            task_id=self.task.id,
            tool=tool,
            policy=policy,
            gate=gate,
            stated_reason=self.stated_reason,
            timeout_s=self.settings.approval_timeout_s,
            **screen,
        )

    def screen_tools(
        self, tools: list[str], box: Sandbox | None, policy: FolderPolicy, gate: StoreGate
    ) -> list[Any]:
        """The computer and browser toolsets (see `controller.agent.screens`)."""
        if not {"computer", "browser"} & set(tools):
            return []
        from controller.agent.screens import screen_toolsets

        return screen_toolsets(self, tools, box, policy, gate)


def outcome_status(result: AgentResult) -> str:
    """The task status an agent result ends in."""
    return {
        AgentOutcome.SUCCEEDED: "succeeded",
        AgentOutcome.CANCELLED: "cancelled",
    }.get(result.outcome, "failed")
