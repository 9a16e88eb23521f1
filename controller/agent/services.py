"""What the runner and the controller hold of agent tasks, without loading the agent stack.

`controller.agent.runner` runs an agent task with the SDK, its toolsets and the approval gate
(two seconds and more to import); a controller that only ever runs commands, as `dispatch run`
of a command-only task file does, never needs them, so they load with the first agent job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controller.agent.tasks import task_policy
from controller.audit import AuditTrail
from controller.execution.folders import FolderPlan
from controller.settings import Settings
from controller.store.approvals import ApprovalStore
from controller.store.blobs import BlobStore
from controller.store.memory import MemoryStore
from controller.store.models import Task
from controller.store.tasks import TaskStore
from sandbox import Sandbox, SandboxSpec

if TYPE_CHECKING:
    from controller.agent.runner import AgentJob


class SandboxStartFailed(Exception):
    """The task's sandbox could not start because its engine is away: the task waits."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


@dataclass
class AgentServices:
    """The controller's stores an agent job uses; one per controller."""

    settings: Settings
    tasks: TaskStore
    approvals: ApprovalStore
    blobs: BlobStore
    memory: MemoryStore
    audit: AuditTrail | None = None
    # A device's name for the audit log, from its id (None: nobody).
    who: Callable[[int | None], str] = lambda device: f"device {device}"

    def job(
        self,
        task: Task,
        plan: FolderPlan,
        *,
        factory: Callable[[str, SandboxSpec], Sandbox],
        attach: Callable[[Sandbox], bool],
        cancelled: Callable[[], bool],
        on_sandbox: Callable[[str], None],
        on_egress: Callable[[Any], None] | None = None,
    ) -> AgentJob:
        from controller.agent.runner import AgentJob, thread_context

        return AgentJob(
            services=self,
            task=task,
            plan=plan,
            policy=task_policy(self.settings, dict(task.agent or {})),
            context=thread_context(self.tasks.earlier_in_thread(task)),
            factory=factory,
            attach=attach,
            cancelled=cancelled,
            on_sandbox=on_sandbox,
            on_egress=on_egress,
        )


def backend_of(task: Task, settings: Settings) -> str:
    """The sandbox backend a task runs in: its `isolation: "vm"` asks for a libvirt VM."""
    return "libvirt" if task.isolation == "vm" else settings.sandbox_backend
