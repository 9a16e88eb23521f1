"""The model's key names resolved to X keysyms before anything is pressed (no display)."""

from __future__ import annotations

import pytest
from anthropic.tools import ToolError

from computer_use.screen.keys import combo


@pytest.mark.parametrize(
    ("text", "keysyms"),
    [
        ("ctrl+s", ("Control_L", "s")),
        ("Return", ("Return",)),
        ("return", ("Return",)),
        ("enter", ("Return",)),
        ("alt+Tab", ("Alt_L", "Tab")),
        ("ctrl+shift+Escape", ("Control_L", "Shift_L", "Escape")),
        ("Page_Down", ("Next",)),
        ("page_up", ("Prior",)),
        ("backspace", ("BackSpace",)),
        ("f5", ("F5",)),
        ("kp_enter", ("KP_Enter",)),
        ("xf86audiomute", ("XF86AudioMute",)),
        ("super", ("Super_L",)),
        ("ctrl++", ("Control_L", "plus")),
        ("ctrl+-", ("Control_L", "minus")),
        ("ctrl+/", ("Control_L", "slash")),
        ("A", ("A",)),
        ("é", ("eacute",)),
    ],
)
def test_model_key_names_become_keysyms(text: str, keysyms: tuple[str, ...]) -> None:
    assert combo(text) == keysyms


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("ctrl+", "empty part"),
        ("ctrl+notakey", "unknown key name 'notakey'"),
        ("--help", "unknown key name"),
        # xdotool would read these as more commands if they reached it unchecked.
        ("ctrl+c type --window 1 rm", "unknown key name 'c type --window 1 rm'"),
        ("Return mousemove 0 0 click 1", "unknown key name"),
        ("a+b+c+d+e+f+g", "at most 6"),
    ],
)
def test_unknown_or_malformed_keys_are_refused_with_the_fix(text: str, problem: str) -> None:
    with pytest.raises(ToolError) as refused:
        combo(text)
    assert problem in str(refused.value)
