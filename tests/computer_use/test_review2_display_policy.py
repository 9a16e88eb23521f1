"""Review 2: the config's `[policy]` also ruled the owner's own screen.

An `allow` rule written for the sandbox's virtual desktop (say, clicks anywhere on its 1280x800
screen) auto-approved the same actions on the host display (`display: "host"`), where approval is
the only fence. Now rules can match `display`, and on the host an `allow` applies only when it
names `display: "host"`; `ask` and `deny` rules apply on both.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from computer_use.approval.gate import ApprovalOutcome, ApprovalRequest, Confirmer, OutcomeKind
from computer_use.approval.policy import (
    Call,
    CombinedPolicy,
    Decision,
    Policy,
    combine,
    headless,
    on_display,
)
from computer_use.errors import PolicyError
from computer_use.screen.computer import X11ComputerToolset
from computer_use.screen.x11 import X11Screen
from controller.agent.runner import FolderPolicy
from controller.agent.tasks import task_policy
from controller.settings import Settings
from tests.computer_use.xdisplay import ProbeApp, tool_use, xvfb

# Written for the sandbox's desktop: let the agent click and look there without asking.
SANDBOX_CLICKS = {
    "default": "ask",
    "rules": [
        {"tool": "computer", "member": "screenshot", "decision": "allow"},
        {"tool": "computer", "member": "left_click", "decision": "allow"},
    ],
}
CLICK = Call("computer", "left_click", {"coordinate": [250, 180]})


def test_an_allow_rule_without_a_display_asks_on_the_host() -> None:
    policy = Policy.parse(SANDBOX_CLICKS)
    assert on_display(policy, "sandbox").decide(CLICK).decision is Decision.ALLOW
    verdict = on_display(policy, "host").decide(CLICK)
    assert verdict.decision is Decision.ASK, verdict
    assert "no rule matched" in verdict.explanation


def test_an_allow_rule_naming_the_host_applies_there_only() -> None:
    policy = Policy.parse(
        {
            "rules": [
                {
                    "tool": "computer",
                    "member": "screenshot",
                    "match": {"display": "host"},
                    "decision": "allow",
                }
            ]
        }
    )
    shot = Call("computer", "screenshot", {})
    assert on_display(policy, "host").decide(shot).decision is Decision.ALLOW
    assert on_display(policy, "sandbox").decide(shot).decision is Decision.ASK
    # A display not known (no on_display) never lets a display rule allow.
    assert policy.decide(shot).decision is Decision.ASK


def test_ask_and_deny_rules_apply_on_both_displays() -> None:
    policy = Policy.parse(
        {
            "default": "allow",
            "rules": [{"tool": "computer", "member": "left_click", "decision": "deny"}],
        }
    )
    for display in ("sandbox", "host"):
        assert on_display(policy, display).decide(CLICK).decision is Decision.DENY
    # The default is not a rule: on the host it still decides (the owner wrote it).
    move = Call("computer", "mouse_move", {"coordinate": [1, 1]})
    assert on_display(policy, "host").decide(move).decision is Decision.ALLOW


def test_a_deny_rule_for_the_host_leaves_the_sandbox_alone() -> None:
    policy = Policy.parse(
        {
            "default": "allow",
            "rules": [{"tool": "*", "match": {"display": "host"}, "decision": "deny"}],
        }
    )
    assert on_display(policy, "host").decide(CLICK).decision is Decision.DENY
    assert on_display(policy, "sandbox").decide(CLICK).decision is Decision.ALLOW
    # Other tools have no display; the browser's is always the sandbox's.
    bash = Call("bash", "run", {"command": "ls"})
    assert on_display(policy, "host").decide(bash).decision is Decision.ALLOW
    browse = Call("browser", "navigate", {"url": "https://example.com/"})
    assert on_display(policy, "host").decide(browse).decision is Decision.ALLOW


def test_the_display_survives_combining_and_headless_runs() -> None:
    config = on_display(Policy.parse(SANDBOX_CLICKS), "host")
    task = Policy.parse({"default": "allow"})
    combined = combine(config, task)
    assert isinstance(combined, CombinedPolicy) and combined.display == "host"
    assert combined.decide(CLICK).decision is Decision.ASK
    assert headless(combined).decide(CLICK).decision is Decision.DENY


def test_a_display_that_is_not_sandbox_or_host_is_refused_naming_the_field() -> None:
    with pytest.raises(PolicyError) as raised:
        Policy.parse(
            {"rules": [{"tool": "computer", "match": {"display": "phone"}, "decision": "allow"}]}
        )
    assert "rules[0].match.display" in str(raised.value)
    assert "sandbox, host" in str(raised.value)
    round_trip = {"tool": "computer", "match": {"display": "host"}, "decision": "deny"}
    assert Policy.parse({"rules": [round_trip]}).to_dict()["rules"] == [round_trip]


def test_the_controllers_task_policy_asks_on_the_host_for_a_sandbox_allow_rule() -> None:
    settings = Settings(policy=SANDBOX_CLICKS)
    policy = FolderPolicy(task_policy(settings, {"display": "host"}), ())
    from computer_use.approval.gate import ToolCall

    verdict = policy.decide(ToolCall("computer", "left_click", {"coordinate": [250, 180]}))
    assert str(verdict.decision) == "ask", verdict


class Refuses:
    def __init__(self) -> None:
        self.requests: list[ApprovalRequest] = []

    def request(self, req: ApprovalRequest) -> ApprovalOutcome:
        self.requests.append(req)
        return ApprovalOutcome(OutcomeKind.DENIED, request_id=len(self.requests), reason="no")


@pytest.mark.display
def test_a_sandbox_allow_rule_does_not_click_on_the_host_screen(tmp_path: Path) -> None:
    # The probe window's button at (200..360, 150..210) stands for the owner's own desktop.
    with xvfb(1024, 768) as server:
        app = ProbeApp(server, tmp_path / "events.jsonl")
        gate = Refuses()
        toolset: X11ComputerToolset
        hook = Confirmer(
            task_id=1,
            tool="computer",
            policy=FolderPolicy(on_display(Policy.parse(SANDBOX_CLICKS), "host"), ()),
            gate=gate,
            capture=lambda: toolset.capture().full_image(),
            to_screen=lambda m, i: toolset.to_screen(m, i),
        )
        toolset = X11ComputerToolset(X11Screen(server.name), confirm=hook)
        try:
            toolset.tool_result(tool_use("screenshot"))
            result = toolset.tool_result(tool_use("left_click", coordinate=[280, 180]))
            # Before the fix both ran unasked and the button was pressed on the owner's screen.
            assert [r.member for r in gate.requests] == ["screenshot", "left_click"]
            assert result.get("is_error") and not app.of("button")
        finally:
            app.close()
            toolset.close()
