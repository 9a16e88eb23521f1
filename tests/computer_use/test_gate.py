"""The approval gate with fakes: every branch of policy, decision and screen re-check."""

from __future__ import annotations

import enum
import io
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from anthropic.tools import BetaAbstractComputerToolset20260801, ToolError
from anthropic.types.beta import BetaToolUseBlock
from PIL import Image, ImageChops, ImageDraw

from computer_use.approval.gate import (
    ApprovalOutcome,
    ApprovalRequest,
    Confirmer,
    OutcomeKind,
    ToolCall,
    png,
    reason_before,
    thaw,
)

SIZE = (800, 600)
CLICK = {"coordinate": [400, 300]}


def screen(*, dialog: bool = False, caret: bool = False) -> Image.Image:
    image = Image.new("RGB", SIZE, (50, 60, 70))
    draw = ImageDraw.Draw(image)
    draw.rectangle((300, 250, 500, 350), fill="white", outline="black")
    draw.text((380, 292), "Delete", fill="black")
    if dialog:
        draw.rectangle((250, 200, 550, 400), fill=(230, 200, 200), outline="red")
    if caret:
        draw.line((100, 100, 100, 116), fill="white", width=2)
    return image


@dataclass(frozen=True)
class Verdict:
    decision: Any
    rule_index: int | None = None
    explanation: str = ""


@dataclass
class FakePolicy:
    verdict: Verdict
    calls: list[ToolCall] = field(default_factory=list)

    def decide(self, call: ToolCall) -> Verdict:
        self.calls.append(call)
        return self.verdict


@dataclass
class FakeGate:
    """Answers requests from a script; can run a side effect (the screen changing) first."""

    outcomes: list[ApprovalOutcome]
    requests: list[ApprovalRequest] = field(default_factory=list)

    def request(self, req: ApprovalRequest) -> ApprovalOutcome:
        self.requests.append(req)
        return self.outcomes.pop(0)


class Screens:
    """A capture callable returning the given frames in turn, then the last one forever."""

    def __init__(self, *frames: Image.Image) -> None:
        self.frames = list(frames)
        self.taken = 0

    def __call__(self) -> Image.Image:
        self.taken += 1
        return self.frames.pop(0) if len(self.frames) > 1 else self.frames[0]


def approved(request_id: int = 1) -> ApprovalOutcome:
    return ApprovalOutcome(OutcomeKind.APPROVED, request_id=request_id)


def decode(data: bytes | None) -> Image.Image:
    assert data is not None
    return Image.open(io.BytesIO(data)).convert("RGB")


def same(a: Image.Image, b: Image.Image) -> bool:
    return ImageChops.difference(a, b).getbbox() is None


def confirmer(policy: FakePolicy, gate: FakeGate, capture: Any = None, **kw: Any) -> Confirmer:
    return Confirmer(task_id=7, tool="computer", policy=policy, gate=gate, capture=capture, **kw)


def test_allow_runs_without_asking_or_capturing() -> None:
    gate, screens = FakeGate([]), Screens(screen())
    confirmer(FakePolicy(Verdict("allow")), gate, screens).check("computer", "left_click", CLICK)
    assert gate.requests == [] and screens.taken == 0


def test_deny_names_the_rule_and_asks_nobody() -> None:
    gate = FakeGate([])
    policy = FakePolicy(Verdict("deny", 2, "browser to *.example.com is denied"))
    with pytest.raises(ToolError) as refused:
        confirmer(policy, gate, Screens(screen())).check("computer", "left_click", CLICK)
    assert str(refused.value) == (
        "This action was denied by the policy (rule 2: browser to *.example.com is denied); "
        "it was not performed."
    )
    assert gate.requests == []


@pytest.mark.parametrize("answer", ["maybe", "ALLOW", "allow ", ""])
def test_an_unknown_policy_answer_fails_closed(answer: str) -> None:
    gate = FakeGate([])
    with pytest.raises(ToolError, match="treated as denied"):
        confirmer(FakePolicy(Verdict(answer)), gate).check("bash", "command", {})
    assert gate.requests == []


def test_a_policy_answering_with_an_enum_is_understood() -> None:
    class Decision(enum.StrEnum):
        ALLOW = "allow"

    confirmer(FakePolicy(Verdict(Decision.ALLOW)), FakeGate([])).check("bash", "command", {})


def test_a_screen_resized_after_approval_is_refused_not_re_asked() -> None:
    gate = FakeGate([approved()])
    screens = Screens(screen(), screen().resize((1024, 768)))
    with pytest.raises(ToolError, match="screen size changed from 800x600 to 1024x768"):
        confirmer(FakePolicy(Verdict("ask")), gate, screens).check("computer", "left_click", CLICK)
    assert len(gate.requests) == 1


def test_the_models_reason_reaches_the_person_escaped() -> None:
    gate = FakeGate([approved()])
    Confirmer(
        7,
        "bash",
        FakePolicy(Verdict("ask")),
        gate,
        stated_reason=lambda _id: "Cleaning up.\nharmless \u202eexe.txt\x1b[8m",
    ).guard("bash", "command", {"command": "ls"})
    assert gate.requests[0].model_reason == "Cleaning up.\nharmless \\u202eexe.txt\\x1b[8m"


def test_ask_sends_what_the_person_needs_and_runs_once_approved() -> None:
    frame = screen()
    screens = Screens(frame, screen())
    gate = FakeGate([approved()])
    policy = FakePolicy(Verdict("ask", None, "computer actions ask"))
    clock = iter([1000.0, 2000.0])
    gate_confirmer = confirmer(
        policy,
        gate,
        screens,
        # The model saw a half-size screenshot: coordinates double on the screen.
        to_screen=lambda member, input: {"coordinate": [c * 2 for c in input["coordinate"]]},
        stated_reason=lambda tool_use_id: f"I will click Delete ({tool_use_id})",
        timeout_s=120,
        clock=lambda: next(clock),
    )
    gate_confirmer.check("computer", "left_click", {"coordinate": [200, 150]}, tool_use_id="tu_1")

    assert [c.input for c in policy.calls] == [{"coordinate": [400, 300]}]
    (request,) = gate.requests
    assert request.task_id == 7 and request.tool == "computer" and request.member == "left_click"
    assert thaw(request.input) == {"coordinate": [200, 150]}
    assert thaw(request.screen_input) == {"coordinate": [400, 300]}
    assert request.description == "Click at (400, 300)"
    assert request.model_reason == "I will click Delete (tu_1)"
    assert request.policy_rule == "the default: computer actions ask"
    assert (request.created_at, request.expires_at) == (1000.0, 1120.0)
    assert request.replaces is None
    assert same(decode(request.screenshot_png), frame)
    annotated = decode(request.annotated_png)
    assert not same(annotated, frame)
    assert annotated.getpixel((400, 300)) == (255, 0, 200)  # the marker, at screen pixels
    assert screens.taken == 2  # once to ask, once to check before running


def test_a_screen_change_that_matters_asks_again_with_the_new_screenshot() -> None:
    changed = screen(dialog=True)
    screens = Screens(screen(), changed, changed)
    gate = FakeGate([approved(11), approved(12)])
    confirmer(FakePolicy(Verdict("ask")), gate, screens).check("computer", "left_click", CLICK)

    first, second = gate.requests
    assert same(decode(second.screenshot_png), changed)
    assert not same(decode(first.screenshot_png), decode(second.screenshot_png))
    assert second.replaces == 11
    assert second.replaced_because is not None
    assert second.replaced_because.startswith("something new covers the target at (400, 300)")


def test_a_screen_that_keeps_changing_is_refused_after_the_re_asks() -> None:
    frames = [screen(dialog=i % 2 == 1) for i in range(10)]
    gate = FakeGate([approved(i) for i in range(1, 10)])
    with pytest.raises(ToolError, match=r"kept changing after each approval \(3 times; last: "):
        confirmer(FakePolicy(Verdict("ask")), gate, Screens(*frames), max_reasks=2).check(
            "computer", "left_click", CLICK
        )
    assert len(gate.requests) == 3
    assert [r.replaces for r in gate.requests] == [None, 1, 2]


def test_a_change_that_does_not_matter_keeps_the_approval() -> None:
    gate = FakeGate([approved()])
    screens = Screens(screen(), screen(caret=True))
    confirmer(FakePolicy(Verdict("ask")), gate, screens).check("computer", "left_click", CLICK)
    assert len(gate.requests) == 1


def test_a_change_under_the_pointer_at_the_target_asks_again() -> None:
    # The captures carry no cursor image: what changed at the target is the screen itself.
    moved = screen()
    ImageDraw.Draw(moved).polygon([(400, 300), (400, 318), (412, 312)], fill="black")
    gate = FakeGate([approved(1), approved(2)])
    confirmer(
        FakePolicy(Verdict("ask")), gate, Screens(screen(), moved), pointer=lambda: (400, 300)
    ).check("computer", "left_click", CLICK)
    assert len(gate.requests) == 2 and gate.requests[1].replaces == 1


def test_the_pointer_away_from_the_target_keeps_the_approval() -> None:
    moved = screen()
    ImageDraw.Draw(moved).polygon([(100, 500), (100, 518), (112, 512)], fill="black")
    positions = iter([(700, 500), (100, 500)])
    gate = FakeGate([approved()])
    confirmer(
        FakePolicy(Verdict("ask")), gate, Screens(screen(), moved), pointer=lambda: next(positions)
    ).check("computer", "left_click", CLICK)
    assert len(gate.requests) == 1


def test_a_denial_passes_the_persons_reason_to_the_model() -> None:
    gate = FakeGate([ApprovalOutcome(OutcomeKind.DENIED, 1, "  not the prod database \n")])
    with pytest.raises(ToolError) as refused:
        confirmer(FakePolicy(Verdict("ask")), gate, Screens(screen())).check(
            "computer", "left_click", CLICK
        )
    assert str(refused.value) == (
        "The person denied this action: not the prod database. It was not performed."
    )


def test_a_denial_without_a_reason_says_so_and_a_long_one_is_cut() -> None:
    ask = FakePolicy(Verdict("ask"))
    with pytest.raises(ToolError, match="denied this action: no reason given"):
        confirmer(ask, FakeGate([ApprovalOutcome(OutcomeKind.DENIED)])).check("bash", "c", {})
    long = ApprovalOutcome(OutcomeKind.DENIED, reason="x" * 5000)
    with pytest.raises(ToolError) as refused:
        confirmer(ask, FakeGate([long])).check("bash", "c", {})
    assert len(str(refused.value)) < 1200 and "[4000 more]" in str(refused.value)


def test_an_expired_request_counts_as_denied() -> None:
    gate = FakeGate([ApprovalOutcome(OutcomeKind.EXPIRED, 1)])
    with pytest.raises(ToolError) as refused:
        confirmer(FakePolicy(Verdict("ask")), gate, Screens(screen()), timeout_s=300).check(
            "computer", "left_click", CLICK
        )
    assert str(refused.value) == (
        "No decision within 300 s; the action was treated as denied and not performed."
    )


def test_a_cancelled_task_does_not_run_the_action() -> None:
    gate = FakeGate([ApprovalOutcome(OutcomeKind.CANCELLED, 1, "the task was cancelled")])
    with pytest.raises(ToolError, match="cancelled before this action was approved"):
        confirmer(FakePolicy(Verdict("ask")), gate).check("computer", "left_click", CLICK)


def test_a_failing_gate_is_not_swallowed() -> None:
    class Broken:
        def request(self, req: ApprovalRequest) -> ApprovalOutcome:
            raise RuntimeError("database is locked")

    gate_confirmer = Confirmer(7, "computer", FakePolicy(Verdict("ask")), Broken())
    with pytest.raises(RuntimeError, match="database is locked"):
        gate_confirmer.check("computer", "left_click", CLICK)


def test_a_tool_off_any_screen_is_asked_without_screenshots() -> None:
    gate = FakeGate([approved()])
    Confirmer(7, "bash", FakePolicy(Verdict("ask")), gate).guard(
        "bash", "command", {"command": "rm -rf build/"}
    )
    (request,) = gate.requests
    assert request.screenshot_png is None and request.annotated_png is None
    assert request.description == "Run `rm -rf build/`"


def test_a_request_cannot_change_after_it_was_made() -> None:
    gate = FakeGate([approved()])
    input: dict[str, Any] = {"command": "ls", "args": ["-l"]}
    Confirmer(7, "bash", FakePolicy(Verdict("ask")), gate).guard("bash", "command", input)
    input["command"] = "rm -rf /"
    input["args"].append("--no-preserve-root")
    (request,) = gate.requests
    assert thaw(request.input) == {"command": "ls", "args": ["-l"]}
    with pytest.raises(TypeError):
        request.input["command"] = "rm -rf /"  # type: ignore[index]
    with pytest.raises(AttributeError):
        request.tool = "other"  # type: ignore[misc]


def test_the_policy_cannot_alter_what_is_run() -> None:
    class Meddling:
        def decide(self, call: ToolCall) -> Verdict:
            call.input["coordinate"][0] = 0
            return Verdict("ask")

    gate = FakeGate([approved()])
    confirmer(Meddling(), gate, Screens(screen())).check(  # type: ignore[arg-type]
        "computer", "left_click", {"coordinate": [400, 300]}
    )
    assert thaw(gate.requests[0].screen_input) == {"coordinate": [400, 300]}


# --- through the SDK's own toolset machinery ----------------------------------------------


class RecordingComputer(BetaAbstractComputerToolset20260801):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clicks: list[Mapping[str, Any]] = []

    def left_click(self, context: Any, input: Any) -> str | None:
        self.clicks.append(input.model_dump(exclude_none=True))
        return "clicked"


def click_use(tool_use_id: str = "toolu_1", at: tuple[int, int] = (400, 300)) -> BetaToolUseBlock:
    return BetaToolUseBlock(
        id=tool_use_id,
        type="tool_use",
        name="left_click",
        toolset_name="computer",
        input={"coordinate": list(at)},
    )


def result_text(result: Any) -> str:
    content = result["content"]
    if isinstance(content, str):
        return content
    return " ".join(block.get("text", "") for block in content)


@pytest.mark.parametrize(
    ("verdict", "outcome", "ran", "said"),
    [
        ("allow", None, True, "clicked"),
        ("ask", approved(), True, "clicked"),
        ("deny", None, False, "denied by the policy"),
        ("ask", ApprovalOutcome(OutcomeKind.DENIED, 1, "wrong window"), False, "wrong window"),
        ("ask", ApprovalOutcome(OutcomeKind.EXPIRED, 1), False, "No decision within 300 s"),
    ],
)
def test_the_sdk_runs_the_call_only_when_the_confirmer_says_so(
    verdict: str, outcome: ApprovalOutcome | None, ran: bool, said: str
) -> None:
    gate = FakeGate([outcome] if outcome else [])
    hook = Confirmer(7, "computer", FakePolicy(Verdict(verdict)), gate, capture=Screens(screen()))
    toolset = RecordingComputer(confirm=hook)
    result = toolset.tool_result(click_use())
    assert bool(toolset.clicks) is ran
    assert said in result_text(result)
    assert bool(result.get("is_error")) is not ran
    if gate.requests:
        assert thaw(gate.requests[0].input) == {"coordinate": [400, 300]}


def test_the_browser_tab_url_reaches_the_policy() -> None:
    from anthropic.tools import BetaConfirmContext

    policy = FakePolicy(Verdict("allow"))
    hook = Confirmer(7, "browser", policy, FakeGate([]))
    ctx = BetaConfirmContext.model_validate(
        {
            "member": "left_click",
            "input": {"target": {"type": "coordinate", "x": 5, "y": 6}},
            "tab_url": "https://bank.example/transfer",
        }
    )
    assert hook(ctx) is True
    (call,) = policy.calls
    assert call.tab_url == "https://bank.example/transfer"
    assert call.input == {"target": {"type": "coordinate", "x": 5, "y": 6}}


def test_reason_before_takes_the_text_since_the_previous_call() -> None:
    content: list[Any] = [
        {"type": "text", "text": "First I look."},
        {"type": "tool_use", "id": "a", "name": "screenshot"},
        {"type": "text", "text": "The Delete button is at the centre."},
        {"type": "text", "text": " I will click it. "},
        {"type": "tool_use", "id": "b", "name": "left_click"},
    ]
    assert reason_before(content, "b") == "The Delete button is at the centre.\nI will click it."
    assert reason_before(content, "a") == "First I look."
    assert reason_before(content, "missing") == ""
    sdk_blocks = [
        type("Text", (), {"type": "text", "text": "Saving the file."})(),
        click_use("c"),
    ]
    assert reason_before(sdk_blocks, "c") == "Saving the file."


@pytest.mark.parametrize("size", [(1280, 800), (1, 1), (333, 70)])
def test_the_request_png_holds_exactly_the_pixels_captured(size: tuple[int, int]) -> None:
    # The person judges the decoded PNG: it must be the frame, pixel for pixel, whatever its
    # content (noise defeats any shortcut a flat image would allow).
    frame = Image.frombytes("RGB", size, random.Random(size[0]).randbytes(size[0] * size[1] * 3))
    decoded = Image.open(io.BytesIO(png(frame)))
    decoded.load()
    assert decoded.format == "PNG" and decoded.mode == "RGB" and decoded.size == size
    assert decoded.tobytes() == frame.tobytes()
    # Other modes keep theirs.
    assert Image.open(io.BytesIO(png(frame.convert("RGBA")))).mode == "RGBA"
