"""A lost engine surfaces as EngineUnavailable, and a container whose removal failed is kept."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import requests.exceptions

from sandbox import EngineUnavailable, SandboxSpec
from sandbox.docker import DockerSandbox


class Api:
    """Just enough of docker's APIClient: the engine is away until `back` is set."""

    def __init__(self) -> None:
        self.back = False
        self.removed: list[str] = []

    def _lost(self) -> None:
        if not self.back:
            raise requests.exceptions.ConnectionError("Connection aborted: socket gone")

    def remove_container(self, cid: str, force: bool) -> None:
        self._lost()
        self.removed.append(cid)

    def exec_inspect(self, exec_id: str) -> dict[str, Any]:
        self._lost()
        return {"ExitCode": 0}

    def exec_start(self, exec_id: str, stream: bool, demux: bool) -> Any:
        self._lost()
        return iter(())


def sandbox(api: Api) -> DockerSandbox:
    box = DockerSandbox(SandboxSpec(user=(4321, 4321)), client=SimpleNamespace(api=api))
    box._container_id = "c1"  # as if started
    return box


def test_a_failed_removal_is_retried_by_the_next_stop() -> None:
    api = Api()
    box = sandbox(api)
    with pytest.raises(EngineUnavailable, match="dispatch sandbox prune"):
        box.stop()
    assert box.id == "c1"  # not forgotten: the container may still exist
    api.back = True
    box.stop()
    assert api.removed == ["c1"] and box.id != "c1"


def test_a_lost_connection_while_streaming_or_inspecting_is_engine_unavailable() -> None:
    box = sandbox(Api())
    with pytest.raises(EngineUnavailable, match="lost the Docker engine"):
        list(box._stream("e1"))
    with pytest.raises(EngineUnavailable, match="exit status"):
        box._exit_code("e1")
