"""The sandbox a command task runs in, made from its stored fields and its folder plan.

Apart from the runner (which loads the database) so that `dispatch run` can make the same spec
for its head start before the database is loaded (controller/headless/headstart.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.execution.folders import FolderPlan
from controller.settings import Settings
from sandbox import Network, SandboxSpec
from sandbox.base import DEADLINE_GRACE_S


def command_spec(
    settings: Settings,
    plan: FolderPlan,
    *,
    network: Network,
    allow: tuple[str, ...],
    timeout_s: float,
    labels: Mapping[str, str],
) -> SandboxSpec:
    """The sandbox a command task runs in (also what `dispatch run` starts ahead of time)."""
    return SandboxSpec(
        image=settings.sandbox_image,
        mounts=plan.mounts,
        network=network,
        workdir=plan.requested[0].host if plan.requested else None,
        labels=labels,
        user=plan.user,
        # Kept by the sandbox itself: it stops even if this controller is killed meanwhile.
        deadline_s=timeout_s + DEADLINE_GRACE_S,
        git_writable=plan.git_writable,
        git_protected=plan.git_protected,
        allow=allow,
        resolve=settings.network_resolve,
    )
