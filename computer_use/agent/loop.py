"""The agent loop: the SDK's tool runner, recorded step by step, ending with a reason to act on.

`run_agent` drives `client.beta.messages.tool_runner` one model reply at a time. After each reply
it records the model's text, its tool calls and the token usage; it then lets the runner run the
calls (each toolset's `confirm` hook is the approval gate) and records their results, with images
handed to the sink to be stored by content hash. Nothing ends silently:

- the model API's errors become the task's reason, with status and message (the key rejected,
  the model unknown, the service overloaded after every retry);
- transient errors (429, 529, 5xx, resets) are retried by the SDK itself with backoff; a client
  middleware sees every attempt, so each retry shows as a step;
- a run that reaches `max_steps` stops before running the calls of the reply over the limit;
- a run whose model gives up right after the person denied an action ends `denied`.
"""

from __future__ import annotations

import base64
import enum
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anthropic
import httpx2
from anthropic import Middleware
from anthropic._request import APIRequest
from anthropic.types.beta import BetaMessageParam

# What a refused call tells the model (see computer_use.approval.gate); it ends a run `denied`.
DENIAL_MARKERS = ("The person denied", "No decision within", "denied by the policy")
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
RESULT_TEXT_CHARS = 16_000

# Dollars per million tokens (input, output), by model-name prefix: an estimate shown to the
# person, never used to decide anything. Longest prefix wins; an unknown model has no estimate.
PRICES_USD_PER_MTOK: Mapping[str, tuple[float, float]] = {
    "claude-opus-4": (15.0, 75.0),
    "claude-opus": (15.0, 75.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-sonnet": (3.0, 15.0),
    "claude-haiku-4": (1.0, 5.0),
    "claude-haiku": (0.8, 4.0),
}


def cost_estimate_usd(model: str, tokens_in: int, tokens_out: int) -> float | None:
    """Dollars for these tokens at list price, or None when the model's price is unknown."""
    matches = [prefix for prefix in PRICES_USD_PER_MTOK if model.startswith(prefix)]
    if not matches:
        return None
    price_in, price_out = PRICES_USD_PER_MTOK[max(matches, key=len)]
    return round((tokens_in * price_in + tokens_out * price_out) / 1_000_000, 6)


class AgentOutcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DENIED = "denied"
    # The model API could not be reached or refused the key: nothing the task did is at fault.
    MODEL_UNAVAILABLE = "model_unavailable"
    MAX_STEPS = "max_steps"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class AgentSpec:
    """What to ask of the model, already checked by the caller."""

    prompt: str
    model: str
    max_steps: int = 30
    max_tokens: int = 4096
    system: str | None = None
    # Earlier work of the thread, already bounded, put before the prompt.
    context: str = ""
    # Headless runs: after a denial the model hears why, and its next calls do not run.
    stop_on_denial: bool = False


@dataclass(frozen=True)
class Step:
    """One recorded step; `kind` is `model` (a reply), `tools` (the calls' results) or `retry`.

    The sink numbers steps as it stores them: retries are reported from inside the client.
    """

    kind: str
    text: str = ""
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    results: tuple[Mapping[str, Any], ...] = ()
    tokens_in: int = 0
    tokens_out: int = 0
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class AgentResult:
    outcome: AgentOutcome
    reason: str | None
    final_answer: str | None
    tokens_in: int
    tokens_out: int
    cost_usd: float | None
    steps: int

    @property
    def ok(self) -> bool:
        return self.outcome is AgentOutcome.SUCCEEDED


class AgentSink(Protocol):
    """Where a run's steps go (the controller's store); called from the agent's thread."""

    def record(self, step: Step) -> None:
        """Persist one step."""

    def store_image(self, data: bytes, media_type: str) -> str:
        """Keep an image (a screenshot in a tool result) and return its reference."""

    def cancelled(self) -> bool:
        """Whether the person cancelled the task; checked between steps."""


class RetryNotices(Middleware):
    """Tells `on_retry` of every failed attempt the SDK is about to retry, so it shows as a step."""

    def __init__(self, on_retry: Callable[[str], None], max_retries: int) -> None:
        self.on_retry = on_retry
        self.max_retries = max_retries

    def handle(self, request: APIRequest, call_next: Any) -> Any:
        attempt = request.retries_taken + 1
        retrying = request.retries_taken < self.max_retries
        try:
            response = call_next(request)
        except (anthropic.APIConnectionError, anthropic.APITimeoutError) as exc:
            if retrying:
                self.on_retry(f"attempt {attempt}: {describe_connection_error(exc)}; retrying")
            raise
        status = response.status_code
        if retrying and status in RETRYABLE_STATUSES:
            self.on_retry(f"attempt {attempt}: the model API answered {status}; retrying")
        return response


def describe_connection_error(exc: BaseException) -> str:
    if isinstance(exc, anthropic.APITimeoutError):
        return "the model API did not answer in time"
    cause = exc.__cause__ or exc.__context__
    detail = f" ({type(cause).__name__}: {cause})" if cause else ""
    return f"could not reach the model API{detail}"


def api_error_reason(exc: anthropic.APIError, base_url: str) -> str:
    """The model API's error as one line a person can act on."""
    if isinstance(exc, anthropic.AuthenticationError):
        return (
            f"the model API rejected the key (401: {_api_message(exc)}); set a valid "
            "ANTHROPIC_API_KEY for the controller and retry the task"
        )
    if isinstance(exc, anthropic.PermissionDeniedError):
        return f"the model API refused this key (403: {_api_message(exc)})"
    if isinstance(exc, anthropic.NotFoundError):
        return (
            f"the model API answered 404 ({_api_message(exc)}); check the model name "
            "(the task's `model` or the `model` setting)"
        )
    if isinstance(exc, anthropic.APIStatusError):
        return f"the model API answered {exc.status_code}: {_api_message(exc)} (after retries)"
    if isinstance(exc, anthropic.APIConnectionError | anthropic.APITimeoutError):
        return f"{describe_connection_error(exc)} at {base_url} (after retries)"
    return f"the model API failed: {exc}"


def _api_message(exc: anthropic.APIError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])[:500]
    return str(exc.message)[:500]


def first_prompt(spec: AgentSpec) -> list[BetaMessageParam]:
    """The opening user message: the thread's earlier work, then the task."""
    text = spec.prompt
    if spec.context:
        text = f"{spec.context}\n\nThe task now:\n{spec.prompt}"
    return [{"role": "user", "content": text}]


def _block_dict(block: Any) -> dict[str, Any]:
    if hasattr(block, "model_dump"):
        dumped: dict[str, Any] = block.model_dump(mode="json", exclude_none=True)
        return dumped
    return dict(block)


def summarise_results(
    results: Sequence[Mapping[str, Any]], sink: AgentSink
) -> list[dict[str, Any]]:
    """Tool results as stored: text kept (bounded), images replaced by a stored reference."""
    summary = []
    for result in results:
        content = result.get("content")
        texts: list[str] = []
        images: list[str] = []
        for block in content if isinstance(content, list) else [content]:
            if isinstance(block, str):
                texts.append(block)
            elif isinstance(block, Mapping) and block.get("type") == "text":
                texts.append(str(block.get("text", "")))
            elif isinstance(block, Mapping) and block.get("type") == "image":
                source = block.get("source") or {}
                if source.get("type") == "base64":
                    data = base64.b64decode(source.get("data", ""))
                    images.append(sink.store_image(data, source.get("media_type", "image/png")))
        text = "\n".join(texts)
        if len(text) > RESULT_TEXT_CHARS:
            text = text[:RESULT_TEXT_CHARS] + f"\n[... {len(text) - RESULT_TEXT_CHARS} chars]"
        summary.append(
            {
                "tool_use_id": result.get("tool_use_id"),
                "is_error": bool(result.get("is_error", False)),
                "text": text,
                "images": images,
            }
        )
    return summary


def _is_denial(result: Mapping[str, Any]) -> bool:
    return bool(result.get("is_error")) and any(m in result.get("text", "") for m in DENIAL_MARKERS)


def run_agent(
    client: anthropic.Anthropic,
    spec: AgentSpec,
    tools: Sequence[Any],
    sink: AgentSink,
    on_reply: Callable[[Any], None] | None = None,
) -> AgentResult:
    """Run the model with `tools` until it answers, fails, is denied, cancelled or out of steps.

    `on_reply(message)` sees each reply before its tool calls run (the approval gate takes the
    model's stated reason from it). The client should carry `RetryNotices` (see
    `agent_client`) for retries to show as steps.
    """
    tokens_in = tokens_out = 0
    replies = 0
    last_text = ""
    last_results: list[dict[str, Any]] = []
    steps = 0
    denied: str | None = None

    def finish(outcome: AgentOutcome, reason: str | None, answer: str | None) -> AgentResult:
        return AgentResult(
            outcome=outcome,
            reason=reason,
            final_answer=answer,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=cost_estimate_usd(spec.model, tokens_in, tokens_out),
            steps=steps,
        )

    runner = client.beta.messages.tool_runner(
        model=spec.model,
        max_tokens=spec.max_tokens,
        messages=first_prompt(spec),
        stream=False,
        tools=list(tools),
        # The whole history each turn: what the model was told is in every request.
        thread=False,
        system=spec.system or anthropic.omit,
    )
    try:
        for message in runner:
            replies += 1
            if on_reply is not None:
                on_reply(message)
            usage = message.usage
            tokens_in += usage.input_tokens or 0
            tokens_out += usage.output_tokens or 0
            last_text = "".join(b.text for b in message.content if b.type == "text")
            calls = tuple(
                {
                    "id": b.id,
                    "name": b.name,
                    "toolset": getattr(b, "toolset_name", None),
                    "input": _block_dict(b.input) if not isinstance(b.input, dict) else b.input,
                }
                for b in message.content
                if b.type == "tool_use"
            )
            steps += 1
            sink.record(
                Step(
                    kind="model",
                    text=last_text,
                    tool_calls=calls,
                    tokens_in=usage.input_tokens or 0,
                    tokens_out=usage.output_tokens or 0,
                )
            )
            if sink.cancelled():
                return finish(AgentOutcome.CANCELLED, "cancelled", None)
            if not calls:
                continue
            if denied is not None:
                return finish(AgentOutcome.DENIED, f"stopped after a denial: {denied}", None)
            if replies >= spec.max_steps:
                return finish(
                    AgentOutcome.MAX_STEPS,
                    f"stopped: reached max_steps ({spec.max_steps}) before the model finished; "
                    "its last calls were not run. Retry with a higher max_steps or a smaller task",
                    None,
                )
            response = runner.generate_tool_call_response()
            raw = [b for b in (response["content"] if response else []) if isinstance(b, Mapping)]
            last_results = summarise_results(raw, sink)
            steps += 1
            sink.record(Step(kind="tools", results=tuple(last_results)))
            if sink.cancelled():
                return finish(AgentOutcome.CANCELLED, "cancelled", None)
            if spec.stop_on_denial and denied is None:
                denied = next((r["text"] for r in last_results if _is_denial(r)), None)
    except (anthropic.APIConnectionError, anthropic.AuthenticationError) as exc:
        reason = api_error_reason(exc, str(client.base_url))
        return finish(AgentOutcome.MODEL_UNAVAILABLE, reason, None)
    except anthropic.APIError as exc:
        return finish(AgentOutcome.FAILED, api_error_reason(exc, str(client.base_url)), None)
    except httpx2.TransportError as exc:
        # A reset in the middle of a streamed reply reaches here unwrapped by the SDK.
        return finish(
            AgentOutcome.MODEL_UNAVAILABLE,
            f"the connection to the model API at {client.base_url} broke ({type(exc).__name__}: "
            f"{exc}); retry the task",
            None,
        )
    finally:
        runner.close()
    denials = [r for r in last_results if _is_denial(r)]
    if denials and last_results:
        return finish(
            AgentOutcome.DENIED,
            f"stopped after a denial: {denials[-1]['text']}",
            last_text or None,
        )
    return finish(AgentOutcome.SUCCEEDED, None, last_text)


def agent_client(
    *,
    api_key: str,
    base_url: str | None,
    on_retry: Callable[[str], None],
    max_retries: int = 4,
    timeout_s: float = 120.0,
) -> anthropic.Anthropic:
    """The official client, with every retried attempt reported to `on_retry`."""
    return anthropic.Anthropic(
        api_key=api_key,
        base_url=base_url,
        max_retries=max_retries,
        timeout=timeout_s,
        middleware=[RetryNotices(on_retry, max_retries)],
    )
