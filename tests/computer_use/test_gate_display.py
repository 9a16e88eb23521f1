"""The gate on a real X server: a window opening between approval and action voids the approval."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops

from computer_use.approval.gate import ApprovalOutcome, ApprovalRequest, Confirmer, OutcomeKind
from tests.computer_use import gate_xvfb
from tests.computer_use.gate_xvfb import XDisplay
from tests.computer_use.test_gate import FakePolicy, RecordingComputer, Verdict, click_use

pytestmark = pytest.mark.display

xvfb = gate_xvfb.xvfb
desktop = gate_xvfb.desktop

BUTTON_WINDOW = """
root.title("target")
root.geometry("300x200+100+100")
tk.Button(root, text="Delete", width=12).place(x=90, y=80)
"""
BUTTON = (250, 195)


def decode(data: bytes | None) -> Image.Image:
    assert data is not None
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_a_dialog_opening_after_approval_forces_a_new_request(desktop: XDisplay) -> None:
    desktop.tk(BUTTON_WINDOW)
    desktop.window("target")
    desktop.settled()
    requests: list[ApprovalRequest] = []

    class DialogAfterApproval:
        """Approves every request; right after the first, a dialog opens over the button."""

        def request(self, req: ApprovalRequest) -> ApprovalOutcome:
            requests.append(req)
            if len(requests) == 1:
                # xmessage -center opens around the pointer: over the button.
                desktop.xdotool("mousemove", str(BUTTON[0]), str(BUTTON[1]))
                desktop.spawn("xmessage", "-center", "-title", "dialog", "Replace all files?")
                desktop.window("dialog")
                desktop.settled()
            return ApprovalOutcome(OutcomeKind.APPROVED, request_id=len(requests))

    hook = Confirmer(
        task_id=1,
        tool="computer",
        policy=FakePolicy(Verdict("ask")),
        gate=DialogAfterApproval(),
        capture=desktop.capture,
    )
    toolset = RecordingComputer(confirm=hook)
    result = toolset.tool_result(click_use(at=BUTTON))

    assert not result.get("is_error"), result
    assert len(toolset.clicks) == 1  # ran once, after the second approval
    first, second = requests
    assert second.replaces == 1
    assert second.replaced_because is not None
    assert "(250, 195)" in second.replaced_because
    # The second request shows the dialog: the person judges the screen as it now is.
    before, after = decode(first.screenshot_png), decode(second.screenshot_png)
    changed = ImageChops.difference(before, after).getbbox()
    assert changed is not None
    left, top, right, bottom = changed
    assert left <= BUTTON[0] <= right and top <= BUTTON[1] <= bottom
    assert ImageChops.difference(after, desktop.capture()).getbbox() is None
