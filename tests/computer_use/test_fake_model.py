"""The fake Messages API against the REAL `anthropic` client and tool runner.

Each test drives `client.beta.messages.tool_runner` (or `messages.create`) over real loopback HTTP,
with a small computer toolset that records its calls and returns a generated PNG as screenshot.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.tools import (
    BetaAbstractComputerToolset20260801,
    BetaComputerConfirmContext,
    BetaScreenshotResult,
    BetaToolsetCallContext,
    ToolError,
)
from anthropic.types.beta import BetaComputerLeftClickInput, BetaComputerTypeInput
from PIL import Image, ImageDraw

from computer_use.approval.policy import Call, Decision, Policy, headless
from computer_use.testing.fake_model import (
    MESSAGE_THREADS_BETA,
    FakeModel,
    FakeModelError,
    Fault,
    ModelRequest,
    Reply,
    ToolCall,
    Turn,
    centre_of_largest_region,
    click_largest_region,
    newest_screenshot,
)

KEY = "test-key"
GREEN = (0, 200, 0)
SCREEN_SIZE = (320, 200)
# The largest green region: its centre is where a click must land.
BUTTON_BOX = (200, 120, 260, 150)


def screen_png() -> bytes:
    """A screen with a small green decoy and a larger green button."""
    image = Image.new("RGB", SCREEN_SIZE, (240, 240, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 10, 19, 19), fill=GREEN)
    draw.rectangle((BUTTON_BOX[0], BUTTON_BOX[1], BUTTON_BOX[2] - 1, BUTTON_BOX[3] - 1), fill=GREEN)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


class RecordingComputer(BetaAbstractComputerToolset20260801):
    """A computer toolset without a display: records every call it runs."""

    def __init__(self, confirm: Callable[[BetaComputerConfirmContext], bool]) -> None:
        super().__init__(confirm=confirm)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def screenshot(self, context: BetaToolsetCallContext, input: object) -> BetaScreenshotResult:
        self.calls.append(("screenshot", {}))
        return BetaScreenshotResult(
            data=base64.b64encode(screen_png()).decode(), media_type="image/png"
        )

    def left_click(
        self, context: BetaToolsetCallContext, input: BetaComputerLeftClickInput
    ) -> None:
        self.calls.append(("left_click", {"coordinate": input.coordinate}))

    def type(self, context: BetaToolsetCallContext, input: BetaComputerTypeInput) -> None:
        self.calls.append(("type", {"text": input.text}))


def client_for(model: FakeModel, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=model.url, **options)


def run_agent(
    client: anthropic.Anthropic,
    toolset: RecordingComputer,
    *,
    stream: bool,
    prompt: str = "Press OK",
) -> anthropic.types.beta.BetaMessage:
    runner = client.beta.messages.tool_runner(
        model="claude-fake",
        max_tokens=512,
        messages=[{"role": "user", "content": prompt}],
        tools=[toolset],
        stream=stream,
        max_iterations=10,
    )
    if stream:
        for message_stream in runner:
            for _event in message_stream:
                pass
    return runner.until_done()


def tool_results(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    last_user = [m for m in messages if m["role"] == "user"][-1]
    return [b for b in last_user["content"] if b.get("type") == "tool_result"]


def result_text(block: Mapping[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") for b in content or [])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("threads", [True, False], ids=["threaded", "thread-unsupported"])
def test_multi_turn_run_clicks_the_button_seen_in_the_screenshot(
    stream: bool, threads: bool
) -> None:
    """Screenshot → a click computed from that screenshot → final answer, with usage tokens."""
    script: list[Turn] = [
        Reply(text="Let me look.", tool_calls=[ToolCall("screenshot")], input_tokens=11),
        click_largest_region(GREEN, text="Clicking OK."),
        Reply(text="Done: OK pressed.", input_tokens=33, output_tokens=7),
    ]
    with FakeModel(script, threads=threads) as model:
        toolset = RecordingComputer(confirm=lambda ctx: True)
        with toolset:
            final = run_agent(client_for(model, max_retries=0), toolset, stream=stream)
        model.assert_script_done()

    centre = ((BUTTON_BOX[0] + BUTTON_BOX[2] - 1) // 2, (BUTTON_BOX[1] + BUTTON_BOX[3] - 1) // 2)
    assert toolset.calls == [("screenshot", {}), ("left_click", {"coordinate": list(centre)})]
    assert [b.text for b in final.content if b.type == "text"] == ["Done: OK pressed."]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (33, 7)

    replies = model.message_requests()
    assert len(replies) == 3
    # Whatever went over the wire, the model saw the whole conversation, screenshot included.
    assert replies[1].messages[0] == {"role": "user", "content": "Press OK"}
    assert newest_screenshot(replies[1].messages).size == SCREEN_SIZE
    (result,) = tool_results(replies[2].messages)
    assert result["toolset_name"] == "computer" and not result.get("is_error")
    assert "Clicked" in result_text(result)
    if threads:
        assert [r.thread and r.thread["type"] for r in replies] == [
            "create",
            "continue",
            "continue",
        ]
        assert all(MESSAGE_THREADS_BETA in r.headers["anthropic-beta"] for r in replies)
        # A continue carries only the new message; the thread supplied the rest.
        assert all(len(r.body["messages"]) == 1 for r in replies if r.body)
        assert "tools" not in (replies[1].body or {})
    else:
        rejected = [r for r in model.requests if r.status == 400]
        assert len(rejected) == 1 and rejected[0].thread == {"type": "create"}
        # The SDK resent the whole history unthreaded, without the beta.
        assert all(r.thread is None for r in replies)
        assert all(MESSAGE_THREADS_BETA not in r.headers.get("anthropic-beta", "") for r in replies)
        assert [len(r.body["messages"]) for r in replies if r.body] == [1, 3, 5]


def test_requests_carry_the_key_and_the_toolset_definition(fake_model: FakeModel) -> None:
    fake_model.add(Reply(text="hi"))
    with RecordingComputer(confirm=lambda ctx: True) as toolset:
        run_agent(client_for(fake_model), toolset, stream=False)
    (request,) = fake_model.message_requests()
    assert request.headers["authorization"] == f"Bearer {KEY}"
    (tool,) = request.body["tools"] if request.body else []
    assert tool["type"] == "computer_toolset_20260801"
    # Members the toolset does not implement are switched off on the wire.
    assert tool["configs"]["key"] == {"enabled": False}
    assert "left_click" not in tool["configs"]


def test_base_url_and_key_from_the_environment(
    fake_model: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in fake_model.environ().items():
        monkeypatch.setenv(name, value)
    fake_model.add(Reply(text="from the environment"))
    message = anthropic.Anthropic().messages.create(
        model="claude-fake", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "from the environment"


def test_confirm_false_refuses_and_the_model_is_told(fake_model: FakeModel) -> None:
    fake_model.add(
        Reply(tool_calls=[ToolCall("left_click", {"coordinate": [5, 5]})]),
        Reply(text="Understood, I will not click."),
    )
    seen: list[str] = []

    def confirm(ctx: BetaComputerConfirmContext) -> bool:
        seen.append(ctx.member)
        return False

    with RecordingComputer(confirm=confirm) as toolset:
        run_agent(client_for(fake_model), toolset, stream=False)
    assert seen == ["left_click"]
    assert toolset.calls == []
    (result,) = tool_results(fake_model.message_requests()[-1].messages)
    assert result["is_error"] is True
    assert "did not grant permission to run" in result_text(result)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_confirm_raising_tool_error_sends_the_persons_reason(stream: bool) -> None:
    """A denial with a reason; the second call of the same turn is not run either."""
    script = [
        Reply(
            text="Typing the password, then clicking.",
            tool_calls=[
                ToolCall("type", {"text": "hunter2"}),
                ToolCall("left_click", {"coordinate": [1, 1]}),
            ],
        ),
        Reply(text="Stopping as asked."),
    ]
    with FakeModel(script) as model:

        def confirm(ctx: BetaComputerConfirmContext) -> bool:
            raise ToolError("Denied by the owner: never type passwords")

        with RecordingComputer(confirm=confirm) as toolset:
            final = run_agent(client_for(model), toolset, stream=stream)
        model.assert_script_done()
    assert toolset.calls == []
    assert final.content[0].type == "text" and final.content[0].text == "Stopping as asked."
    denied, skipped = tool_results(model.message_requests()[-1].messages)
    assert denied["is_error"] is True
    assert result_text(denied) == "Denied by the owner: never type passwords"
    assert skipped["is_error"] is True
    assert "Not executed" in result_text(skipped)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.rate_limited(retry_after_s=0.01), anthropic.RateLimitError),
        (Fault.overloaded(), anthropic.OverloadedError),
        (Fault.server_error(), anthropic.InternalServerError),
    ],
    ids=["429", "529", "500"],
)
def test_transient_errors_are_retried_by_the_client(fault: Fault, error: type[Exception]) -> None:
    with FakeModel([fault, fault, Reply(text="third time")]) as model:
        with RecordingComputer(confirm=lambda ctx: True) as toolset:
            final = run_agent(client_for(model, max_retries=2), toolset, stream=False)
        model.assert_script_done()
    assert final.content[0].type == "text" and final.content[0].text == "third time"
    # The client, not the runner, retried: one logical request, numbered attempts.
    assert [r.headers.get("x-stainless-retry-count") for r in model.requests] == ["0", "1", "2"]
    assert [r.status for r in model.requests][:2] == [_status(fault)] * 2

    with FakeModel([fault, fault]) as model, pytest.raises(error) as raised:
        client_for(model, max_retries=1).messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert isinstance(raised.value, anthropic.APIStatusError)
    assert raised.value.status_code == _status(fault)
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"]["type"] == _ERROR_TYPES[fault.kind]


def _status(fault: Fault) -> int:
    return {"rate_limited": 429, "overloaded": 529, "server_error": 500}[fault.kind]


_ERROR_TYPES = {
    "rate_limited": "rate_limit_error",
    "overloaded": "overloaded_error",
    "server_error": "api_error",
}


def test_connection_reset_before_a_reply_is_retried(fake_model: FakeModel) -> None:
    fake_model.add(Fault.connection_reset(), Reply(text="after the reset"))
    message = client_for(fake_model, max_retries=1).messages.create(
        model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "after the reset"
    assert len(fake_model.requests) == 2


def test_connection_reset_mid_stream_reaches_the_caller() -> None:
    """Once a stream is open the client does not retry: the runner raises a transport error.

    The SDK (2.14) lets the raw `httpx2` error through rather than an `APIConnectionError`: the
    agent must treat both as a connection reset.
    """
    with FakeModel([Fault.connection_reset()]) as model:
        events: list[str] = []
        runner = client_for(model, max_retries=2).beta.messages.tool_runner(
            model="m",
            max_tokens=5,
            messages=[{"role": "user", "content": "hi"}],
            tools=[],
            stream=True,
            max_iterations=2,
        )
        with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
            for message_stream in runner:
                for event in message_stream:
                    events.append(event.type)
        model.assert_script_done()
    assert events[:2] == ["message_start", "content_block_start"]
    assert "message_stop" not in events
    assert len(model.requests) == 1


@pytest.mark.slow
def test_slow_reply_times_out_and_the_retry_gets_the_next_turn() -> None:
    # 3 s leaves a loaded machine room for the fast reply; the slow one is woken by stop().
    script = [Reply(text="too late", delay_s=120), Reply(text="in time")]
    with FakeModel(script) as model:
        client = client_for(model, max_retries=1, timeout=3.0)
        message = client.messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
        model.assert_script_done()
    assert message.content[0].type == "text" and message.content[0].text == "in time"

    with (
        FakeModel([Reply(text="too late", delay_s=120)]) as model,
        pytest.raises(anthropic.APITimeoutError),
    ):
        client_for(model, max_retries=0, timeout=3.0).messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )


def test_wrong_key_is_an_authentication_error_and_consumes_nothing(fake_model: FakeModel) -> None:
    client = anthropic.Anthropic(api_key="sk-wrong", base_url=fake_model.url, max_retries=2)
    with pytest.raises(anthropic.AuthenticationError) as raised:
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert raised.value.status_code == 401
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        "request_id": raised.value.request_id,
    }
    assert len(fake_model.requests) == 1  # 401 is not retried
    # The scripted 401 (a key revoked mid-run) surfaces the same way through the runner.
    fake_model.add(Fault.unauthorized())
    with (
        RecordingComputer(confirm=lambda ctx: True) as toolset,
        pytest.raises(anthropic.AuthenticationError),
    ):
        run_agent(client_for(fake_model), toolset, stream=True)


def test_pause_turn_is_resumed(fake_model: FakeModel) -> None:
    fake_model.add(Reply(text="Still working", stop_reason="pause_turn"), Reply(text="Finished"))
    with RecordingComputer(confirm=lambda ctx: True) as toolset:
        final = run_agent(client_for(fake_model), toolset, stream=False)
    assert final.content[0].type == "text" and final.content[0].text == "Finished"
    _first, second = fake_model.message_requests()
    # Threaded, the resume sends nothing new; the model sees its own paused reply last.
    assert second.body is not None and second.body["messages"] == []
    assert second.messages[-1]["role"] == "assistant"
    assert second.messages[-1]["content"][0]["text"] == "Still working"


def test_a_callable_turn_sees_what_the_model_was_told(fake_model: FakeModel) -> None:
    seen: list[ModelRequest] = []

    def turn(request: ModelRequest) -> Reply:
        seen.append(request)
        return Reply(text="ok")

    fake_model.add(turn)
    client_for(fake_model).messages.create(
        model="m",
        max_tokens=5,
        system="You are careful.",
        messages=[{"role": "user", "content": "hello"}],
    )
    (request,) = seen
    assert request.system == "You are careful."
    assert request.messages == [{"role": "user", "content": "hello"}]


def test_script_exhausted_fails_loudly_without_retries() -> None:
    with FakeModel([Reply(text="only one")], name="test_exhausted") as model:
        client = client_for(model, max_retries=2)
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "a"}])
        with pytest.raises(anthropic.InternalServerError, match=r"test_exhausted.*no turn left"):
            client.messages.create(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "b"}]
            )
        assert len(model.requests) == 2  # x-should-retry: false held the client back
        with pytest.raises(FakeModelError, match="no turn left"):
            model.assert_script_done()


def test_unused_turns_fail_the_check() -> None:
    with (
        FakeModel([Reply(text="never asked for")], name="unused") as model,
        pytest.raises(FakeModelError, match="1 turn"),
    ):
        model.assert_script_done()


def test_unknown_thread_makes_the_sdk_replay_the_whole_history(fake_model: FakeModel) -> None:
    """A server that lost the thread (`thread_not_found`): the SDK replays under a new thread."""
    fake_model.add(Reply(text="one"), Reply(text="two"))
    thread = anthropic.Anthropic(api_key=KEY, base_url=fake_model.url).beta.messages.thread(
        model="m", max_tokens=5
    )
    thread.send({"role": "user", "content": "first"})
    fake_model.forget_threads()
    reply = thread.send({"role": "user", "content": "second"})
    assert reply.content[0].type == "text" and reply.content[0].text == "two"
    statuses = [(r.status, r.thread and r.thread["type"]) for r in fake_model.requests]
    assert statuses == [(200, "create"), (404, "continue"), (200, "create")]
    assert len(fake_model.requests[-1].messages) == 3


def test_centre_of_largest_region_ignores_smaller_regions() -> None:
    image = Image.open(io.BytesIO(screen_png()))
    assert centre_of_largest_region(image, GREEN) == (229, 134)
    with pytest.raises(FakeModelError, match="no pixel"):
        centre_of_largest_region(image, (1, 2, 3))
    with pytest.raises(FakeModelError, match="no image"):
        newest_screenshot([{"role": "user", "content": "no pictures"}])


def test_a_tool_call_without_its_result_is_refused_like_the_api_does(
    fake_model: FakeModel,
) -> None:
    """An agent that drops a tool result must fail in tests as it would against the API."""
    client = client_for(fake_model, max_retries=0)
    history: list[Any] = [
        {"role": "user", "content": "click"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "left_click", "input": {}},
            ],
        },
        {"role": "user", "content": "I forgot the result"},
    ]
    with pytest.raises(anthropic.BadRequestError, match="toolu_1"):
        client.messages.create(model="m", max_tokens=5, messages=history)
    stray: list[Any] = [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}]}
    ]
    with pytest.raises(anthropic.BadRequestError, match="unexpected `tool_use_id`"):
        client.messages.create(model="m", max_tokens=5, messages=stray)
    assert fake_model.remaining == 0 and [r.status for r in fake_model.requests] == [400, 400]


def test_a_failing_scripted_turn_is_a_loud_500_not_a_hang() -> None:
    """A click computed from a conversation without a screenshot: the test's bug, named."""
    with FakeModel([click_largest_region(GREEN)], name="no_screenshot") as model:
        with pytest.raises(anthropic.InternalServerError, match=r"no_screenshot.*no image"):
            client_for(model, max_retries=2).messages.create(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
        assert len(model.requests) == 1
        with pytest.raises(FakeModelError, match="raised"):
            model.assert_script_done()


def test_policy_verdicts_through_the_confirm_hook_reach_the_model(fake_model: FakeModel) -> None:
    """The two building blocks together: a headless region policy as the confirm hook."""
    policy = headless(
        Policy.parse(
            {
                "rules": [
                    {"tool": "computer", "member": "screenshot", "decision": "allow"},
                    {"tool": "*", "match": {"region": [0, 0, 100, 100]}, "decision": "allow"},
                ]
            }
        )
    )

    def confirm(ctx: BetaComputerConfirmContext) -> bool:
        call = Call("computer", ctx.member, ctx.input.model_dump(exclude_none=True))
        verdict = policy.decide(call)
        if verdict.decision is Decision.ALLOW:
            return True
        raise ToolError(f"Refused by policy: {verdict.explanation}")

    fake_model.add(
        Reply(tool_calls=[ToolCall("left_click", {"coordinate": [5, 5]})]),
        Reply(tool_calls=[ToolCall("left_click", {"coordinate": [500, 500]})]),
        Reply(text="The second click was refused."),
    )
    with RecordingComputer(confirm=confirm) as toolset:
        run_agent(client_for(fake_model), toolset, stream=True)
    assert toolset.calls == [("left_click", {"coordinate": [5, 5]})]
    (refused,) = tool_results(fake_model.message_requests()[-1].messages)
    assert refused["is_error"] is True
    assert result_text(refused) == "Refused by policy: no rule matched: default deny"
