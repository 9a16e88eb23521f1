"""The agent loop with the real `anthropic` client and tool runner against the scripted fake API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anthropic.tools import ToolError

from computer_use.agent.loop import AgentOutcome, AgentSpec, Step, agent_client, run_agent
from computer_use.agent.memory import StoredMemoryTool
from computer_use.testing.fake_model import FakeModel, Fault, Reply, ToolCall


class DictMemory:
    """A memory backend in a dict."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}

    def paths(self) -> list[str]:
        return sorted(self.files)

    def read(self, path: str) -> str | None:
        return self.files.get(path)

    def write(self, path: str, text: str) -> None:
        self.files[path] = text

    def delete(self, paths: list[str]) -> None:
        for path in paths:
            self.files.pop(path, None)

    def rename(self, moves: dict[str, str]) -> None:
        for old, new in moves.items():
            self.files[new] = self.files.pop(old)


class GuardedMemory(StoredMemoryTool):
    """The memory tool behind a guard that refuses what the person would deny."""

    def __init__(self, backend: DictMemory, refuse: bool) -> None:
        super().__init__(backend)
        self.refuse = refuse

    def call(self, input: object) -> Any:
        if self.refuse:
            raise ToolError("The person denied this action: not my notes. It was not performed.")
        return super().call(input)


class Sink:
    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.images: list[bytes] = []
        self.cancel = False

    def record(self, step: Step) -> None:
        self.steps.append(step)

    def store_image(self, data: bytes, media_type: str) -> str:
        self.images.append(data)
        return f"sha-{len(self.images)}"

    def cancelled(self) -> bool:
        return self.cancel


def memory_call(path: str, text: str) -> ToolCall:
    return ToolCall("memory", {"command": "create", "path": path, "file_text": text}, toolset=None)


def run(
    fake: FakeModel,
    sink: Sink,
    tools: list[Any],
    *,
    max_steps: int = 10,
    retries: int = 2,
    stop_on_denial: bool = False,
) -> Any:
    client = agent_client(
        api_key="test-key",
        base_url=fake.url,
        on_retry=lambda text: sink.record(Step(kind="retry", text=text)),
        max_retries=retries,
        timeout_s=10,
    )
    spec = AgentSpec(
        prompt="Remember that I like tea.",
        model="claude-fake",
        max_steps=max_steps,
        stop_on_denial=stop_on_denial,
    )
    return run_agent(client, spec, tools, sink)


def kinds(sink: Sink) -> list[str]:
    return [s.kind for s in sink.steps]


def test_a_run_records_each_step_and_ends_with_the_answer(fake_model: FakeModel) -> None:
    memory = DictMemory()
    fake_model.add(
        Reply(text="I will note it.", tool_calls=[memory_call("/memories/me.md", "likes tea")]),
        Reply(text="Noted: you like tea.", input_tokens=150, output_tokens=10),
    )
    sink = Sink()
    result = run(fake_model, sink, [StoredMemoryTool(memory)])
    assert result.outcome is AgentOutcome.SUCCEEDED
    assert result.final_answer == "Noted: you like tea."
    assert (result.tokens_in, result.tokens_out) == (250, 30)
    assert memory.files == {"/memories/me.md": "likes tea"}
    assert kinds(sink) == ["model", "tools", "model"]
    assert sink.steps[0].tool_calls[0]["name"] == "memory"
    assert sink.steps[1].results[0]["is_error"] is False
    # What the model was told: the prompt first, then the tool's result.
    second = fake_model.message_requests()[1].body
    assert second["messages"][0]["content"] == "Remember that I like tea."


def test_max_steps_stops_before_the_calls_over_the_limit_run(fake_model: FakeModel) -> None:
    memory = DictMemory()
    fake_model.add(
        Reply(tool_calls=[memory_call("/memories/a.md", "a")]),
        Reply(tool_calls=[memory_call("/memories/b.md", "b")]),
    )
    sink = Sink()
    result = run(fake_model, sink, [StoredMemoryTool(memory)], max_steps=2)
    assert result.outcome is AgentOutcome.MAX_STEPS
    assert "max_steps (2)" in result.reason
    assert memory.files == {"/memories/a.md": "a"}


def test_a_rejected_key_ends_the_run_with_the_fix(fake_model: FakeModel) -> None:
    fake_model.add(Fault.unauthorized())
    sink = Sink()
    result = run(fake_model, sink, [StoredMemoryTool(DictMemory())])
    # Not the task's fault: headless runs report it as an infrastructure error.
    assert result.outcome is AgentOutcome.MODEL_UNAVAILABLE
    assert "rejected the key (401" in result.reason and "ANTHROPIC_API_KEY" in result.reason


def test_transient_errors_are_retried_and_shown_as_steps(fake_model: FakeModel) -> None:
    fake_model.add(Fault.overloaded(), Fault.rate_limited(), Reply(text="done"))
    sink = Sink()
    result = run(fake_model, sink, [StoredMemoryTool(DictMemory())], retries=3)
    assert result.outcome is AgentOutcome.SUCCEEDED
    retries = [s.text for s in sink.steps if s.kind == "retry"]
    assert retries == [
        "attempt 1: the model API answered 529; retrying",
        "attempt 2: the model API answered 429; retrying",
    ]


def test_errors_past_the_retries_fail_with_status_and_message(fake_model: FakeModel) -> None:
    fake_model.add(Fault.server_error(), Fault.server_error())
    sink = Sink()
    result = run(fake_model, sink, [StoredMemoryTool(DictMemory())], retries=1)
    assert result.outcome is AgentOutcome.FAILED
    assert result.reason.startswith("the model API answered 500: Internal server error")
    assert [s.kind for s in sink.steps] == ["retry"]


def test_a_model_that_stops_after_a_denial_ends_denied(fake_model: FakeModel) -> None:
    fake_model.add(
        Reply(tool_calls=[memory_call("/memories/x.md", "x")]),
        Reply(text="Understood, I will not write it."),
    )
    sink = Sink()
    result = run(fake_model, sink, [GuardedMemory(DictMemory(), refuse=True)])
    assert result.outcome is AgentOutcome.DENIED
    assert result.reason.startswith("stopped after a denial: The person denied this action")
    told: Mapping[str, Any] = fake_model.message_requests()[1].body["messages"][-1]["content"][0]
    assert told["is_error"] is True and "not my notes" in str(told["content"])


def test_cancelling_between_steps_stops_the_run(fake_model: FakeModel) -> None:
    fake_model.add(Reply(tool_calls=[memory_call("/memories/x.md", "x")]))
    sink = Sink()
    sink.cancel = True
    result = run(fake_model, sink, [StoredMemoryTool(DictMemory())])
    assert result.outcome is AgentOutcome.CANCELLED
    assert kinds(sink) == ["model"]


def test_a_headless_run_stops_at_a_denial_after_telling_the_model(fake_model: FakeModel) -> None:
    memory = DictMemory()
    fake_model.add(
        Reply(tool_calls=[memory_call("/memories/x.md", "x")]),
        # The model hears the denial and tries something else: that call must not run.
        Reply(text="Then elsewhere.", tool_calls=[memory_call("/memories/y.md", "y")]),
    )
    sink = Sink()

    class RefusesOnce(GuardedMemory):
        def call(self, input: object) -> Any:
            refuse, self.refuse = self.refuse, False
            if refuse:
                raise ToolError(
                    "The person denied this action: not my notes. It was not performed."
                )
            return super().call(input)

    result = run(fake_model, sink, [RefusesOnce(memory, refuse=True)], stop_on_denial=True)
    assert result.outcome is AgentOutcome.DENIED
    assert result.reason == (
        "stopped after a denial: The person denied this action: not my notes. It was not performed."
    )
    assert "not my notes" in str(fake_model.message_requests()[-1].body["messages"][-1])
    assert kinds(sink) == ["model", "tools", "model"]
    assert memory.files == {}  # the second call, which would have been allowed, never ran
