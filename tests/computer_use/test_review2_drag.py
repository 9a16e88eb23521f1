"""Review 2: a drag done by hand (left_mouse_down, mouse_move, left_mouse_up) was judged as a move.

While the model holds the left button, `mouse_move` drags whatever is under the press to the new
point. The card said "Move the pointer to (x, y)", the annotation showed one point, a region
rule saw only the end, and a rule allowing pointer moves allowed the drag with no one asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from computer_use.approval.annotate import annotate, describe
from computer_use.approval.compare import action_targets
from computer_use.approval.gate import ApprovalOutcome, ApprovalRequest, Confirmer, OutcomeKind
from computer_use.approval.policy import Call, Decision, Policy
from computer_use.screen.computer import X11ComputerToolset
from computer_use.screen.x11 import X11Screen
from controller.agent.runner import FolderPolicy
from tests.computer_use.xdisplay import ProbeApp, tool_use, wait_for, xvfb

# Moving the pointer is harmless, so the owner lets it happen; everything else asks.
MOVES_ALLOWED = Policy.parse(
    {
        "default": "ask",
        "rules": [
            {"tool": "computer", "member": "screenshot", "decision": "allow"},
            {"tool": "computer", "member": "mouse_move", "decision": "allow"},
        ],
    }
)
HELD_MOVE = {"start_coordinate": [520, 120], "coordinate": [880, 460]}


def test_a_pointer_move_allow_rule_does_not_allow_a_move_with_the_button_held() -> None:
    assert MOVES_ALLOWED.decide(
        Call("computer", "mouse_move", {"coordinate": [5, 5]})
    ).decision is (Decision.ALLOW)
    verdict = MOVES_ALLOWED.decide(Call("computer", "mouse_move", HELD_MOVE))
    assert verdict.decision is Decision.ASK, verdict


def test_a_region_rule_checks_both_ends_of_a_held_move() -> None:
    policy = Policy.parse(
        {
            "default": "ask",
            "rules": [
                {
                    "tool": "computer",
                    "match": {"region": [800, 400, 1000, 600]},
                    "decision": "allow",
                }
            ],
        }
    )
    # The end is inside the region, the press is not: the drag leaves it.
    assert policy.decide(Call("computer", "mouse_move", HELD_MOVE)).decision is Decision.ASK
    inside = {"start_coordinate": [820, 420], "coordinate": [880, 460]}
    assert policy.decide(Call("computer", "mouse_move", inside)).decision is Decision.ALLOW
    release = {"start_coordinate": [520, 120], "coordinate": [880, 460]}
    assert policy.decide(Call("computer", "left_mouse_up", release)).decision is Decision.ASK


def test_a_rule_about_drags_judges_a_drag_done_by_hand() -> None:
    policy = Policy.parse(
        {
            "default": "allow",
            "rules": [{"tool": "computer", "member": "left_click_drag", "decision": "deny"}],
        }
    )
    assert policy.decide(Call("computer", "mouse_move", HELD_MOVE)).decision is Decision.DENY
    assert policy.decide(Call("computer", "left_mouse_up", HELD_MOVE)).decision is Decision.DENY
    assert policy.decide(Call("computer", "mouse_move", {"coordinate": [1, 1]})).decision is (
        Decision.ALLOW
    )


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        ("mouse_move", "Drag (left button held) from (520, 120) to (880, 460)"),
        (
            "left_mouse_up",
            "Release the left mouse button at (880, 460), ending a drag from (520, 120)",
        ),
    ],
)
def test_the_card_names_a_held_move_a_drag(member: str, expected: str) -> None:
    assert describe("computer", member, HELD_MOVE) == expected
    # Both ends are targets of the screen comparison.
    assert action_targets(member, HELD_MOVE) == [(520, 120), (880, 460)]


def test_the_annotation_draws_the_held_move_from_the_press() -> None:
    blank = Image.new("RGB", (1024, 768), (240, 240, 240))
    plain = annotate(blank, "computer", "mouse_move", {"coordinate": [880, 460]})
    held = annotate(blank, "computer", "mouse_move", HELD_MOVE)
    # A mark at the press point and along the way, where a plain move draws nothing.
    for x, y in ((520, 120), (700, 290)):
        assert plain.getpixel((x, y)) == (240, 240, 240)
        assert held.getpixel((x, y)) != (240, 240, 240), (x, y)


class Recorder:
    """Approves every request but the drag's move, which it denies."""

    def __init__(self) -> None:
        self.requests: list[ApprovalRequest] = []

    def request(self, req: ApprovalRequest) -> ApprovalOutcome:
        self.requests.append(req)
        kind = OutcomeKind.DENIED if req.member == "mouse_move" else OutcomeKind.APPROVED
        return ApprovalOutcome(kind, request_id=len(self.requests), reason="not that drag")


def screen_input(req: ApprovalRequest) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in req.screen_input.items()}


@pytest.mark.display
def test_a_move_with_the_button_held_is_asked_as_a_drag_on_the_real_display(
    tmp_path: Path,
) -> None:
    with xvfb(1024, 768) as server:
        app = ProbeApp(server, tmp_path / "events.jsonl")
        gate = Recorder()
        toolset: X11ComputerToolset
        hook = Confirmer(
            task_id=1,
            tool="computer",
            policy=FolderPolicy(MOVES_ALLOWED, ()),
            gate=gate,
            capture=lambda: toolset.capture().full_image(),
            to_screen=lambda m, i: toolset.to_screen(m, i),
            pointer=lambda: toolset.screen.pointer(),
        )
        toolset = X11ComputerToolset(X11Screen(server.name), confirm=hook)
        try:
            toolset.tool_result(tool_use("screenshot"))
            # Onto the pad (probe_app.PAD): allowed, nobody asked.
            toolset.tool_result(tool_use("mouse_move", coordinate=[520, 120]))
            assert gate.requests == []
            pressed = toolset.tool_result(tool_use("left_mouse_down"))
            assert not pressed.get("is_error"), pressed
            wait_for(lambda: app.of("press1"), "the press on the pad")
            dragged = toolset.tool_result(tool_use("mouse_move", coordinate=[880, 460]))
            # Before the fix the move was allowed as a pointer move and dragged across the pad.
            asked = [(r.member, r.description) for r in gate.requests]
            assert asked[-1] == (
                "mouse_move",
                "Drag (left button held) from (520, 120) to (880, 460)",
            ), asked
            assert screen_input(gate.requests[-1])["start_coordinate"] == [520, 120]
            assert dragged.get("is_error"), dragged
            released = toolset.tool_result(tool_use("left_mouse_up"))
            assert not released.get("is_error"), released
            wait_for(lambda: app.of("release1"), "the release on the pad")
            assert "ending a drag from (520, 120)" in gate.requests[-1].description
            # The denied move never reached the window: the button went down and up at the press
            # point (re-placing the pointer there before the release is the only motion).
            assert {(e["x"], e["y"]) for e in app.of("drag_motion")} <= {(520, 120)}
            # The button is up: a later move is a plain move again, allowed.
            toolset.tool_result(tool_use("mouse_move", coordinate=[700, 300]))
            assert gate.requests[-1].member == "left_mouse_up"
        finally:
            app.close()
            toolset.close()
