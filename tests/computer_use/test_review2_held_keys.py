"""Review 2: keys held during a click, drag or scroll are neither judged by the policy nor shown.

`left_click`, `left_click_drag` and `scroll` take a `text` field: keys held during the action
(`keys.combo`, any keysym, not only modifiers). X11Screen presses them with `keydown`/`keyup`,
so every one of them is typed. A region `allow` rule for clicks then lets the model press any
key combination (Return, ctrl+w, super+...) without an approval, and the approval card for a
drag or scroll never mentions the keys at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from computer_use.approval.annotate import describe
from computer_use.approval.gate import (
    ApprovalOutcome,
    ApprovalRequest,
    Confirmer,
    OutcomeKind,
)
from computer_use.approval.policy import Call, Decision, Policy
from computer_use.screen.computer import X11ComputerToolset
from computer_use.screen.x11 import X11Screen
from controller.agent.runner import FolderPolicy
from tests.computer_use.xdisplay import ProbeApp, tool_use, xvfb

REGION_ALLOW = Policy.parse(
    {
        "default": "ask",
        "rules": [
            {"tool": "computer", "member": "screenshot", "decision": "allow"},
            {
                "tool": "computer",
                "member": "left_click",
                "match": {"region": [0, 0, 1024, 768]},
                "decision": "allow",
            },
        ],
    }
)


def test_review2_a_region_allow_rule_does_not_allow_keys_held_during_the_click() -> None:
    call = Call("computer", "left_click", {"coordinate": [100, 100], "text": "ctrl+alt+t"})
    # Fails today: the region rule allows it; the held keys are pressed unjudged.
    assert REGION_ALLOW.decide(call).decision is not Decision.ALLOW


@pytest.mark.parametrize(
    ("member", "input"),
    [
        ("left_click_drag", {"start_coordinate": [10, 10], "coordinate": [50, 50]}),
        ("scroll", {"coordinate": [10, 10], "scroll_direction": "down", "scroll_amount": 3}),
    ],
)
def test_review2_the_approval_card_names_keys_held_during_a_drag_or_scroll(
    member: str, input: dict[str, Any]
) -> None:
    # Fails today: "Drag from (10, 10) to (50, 50)" / "Scroll down 3 at (10, 10)", no keys.
    text = describe("computer", member, {**input, "text": "Return"})
    assert "Return" in text, text


class NeverAsked:
    def __init__(self) -> None:
        self.requests: list[ApprovalRequest] = []

    def request(self, req: ApprovalRequest) -> ApprovalOutcome:
        self.requests.append(req)
        return ApprovalOutcome(OutcomeKind.DENIED, request_id=len(self.requests), reason="no")


@pytest.mark.display
def test_review2_an_allowed_click_types_return_on_the_real_display(tmp_path: Path) -> None:
    with xvfb(1024, 768) as server:
        app = ProbeApp(server, tmp_path / "events.jsonl")
        gate = NeverAsked()
        toolset: X11ComputerToolset
        hook = Confirmer(
            task_id=1,
            tool="computer",
            policy=FolderPolicy(REGION_ALLOW, ()),
            gate=gate,
            capture=lambda: toolset.capture().full_image(),
            to_screen=lambda m, i: toolset.to_screen(m, i),
        )
        toolset = X11ComputerToolset(X11Screen(server.name), confirm=hook)
        try:
            toolset.tool_result(tool_use("screenshot"))
            result = toolset.tool_result(tool_use("left_click", coordinate=[5, 5], text="Return"))
            # Before the fix the click ran with no request and Return was pressed. Now the held
            # key makes the region rule unable to allow it: a person is asked (and here says no).
            asked = [r.member for r in gate.requests]
            assert "left_click" in asked, result
            assert result.get("is_error") and not app.of("key_down")
        finally:
            app.close()
            toolset.close()


def test_review2_the_approval_card_names_the_modifiers_of_a_browser_click() -> None:
    # The browser sends held keys as `modifiers`; describe() reads `text` for every click.
    text = describe(
        "browser", "left_click", {"target": {"type": "ref", "ref": "ref_3"}, "modifiers": "ctrl"}
    )
    # Fails today: "Click on element ref_3".
    assert "ctrl" in text.lower(), text
