"""The model's key names ("ctrl+s", "Return", "page_down") as X keysym names for xdotool.

The SDK tells the model that key names are case-insensitive and xdotool-style; xdotool itself is
case-sensitive and silently ignores a name it does not know (exit status 0), so every name is
resolved here against the X keysym table and an unknown one is refused before anything is pressed.
"""

from __future__ import annotations

from functools import cache

from anthropic.tools import ToolError
from Xlib import XK

# Names models use that are not keysyms, or not with this spelling.
ALIASES: dict[str, str] = {
    "ctrl": "Control_L",
    "control": "Control_L",
    "alt": "Alt_L",
    "option": "Alt_L",
    "shift": "Shift_L",
    "super": "Super_L",
    "win": "Super_L",
    "windows": "Super_L",
    "cmd": "Super_L",
    "command": "Super_L",
    "meta": "Meta_L",
    "enter": "Return",
    "return": "Return",
    "esc": "Escape",
    "del": "Delete",
    "ins": "Insert",
    "backspace": "BackSpace",
    "pageup": "Prior",
    "page_up": "Prior",
    "pgup": "Prior",
    "pagedown": "Next",
    "page_down": "Next",
    "pgdn": "Next",
    "space": "space",
    " ": "space",
    "+": "plus",
    "-": "minus",
    "arrowup": "Up",
    "arrowdown": "Down",
    "arrowleft": "Left",
    "arrowright": "Right",
    "capslock": "Caps_Lock",
    "printscreen": "Print",
}

MAX_COMBO_KEYS = 6


@cache
def _keysym_names() -> dict[str, str]:
    """Every keysym name python-xlib knows, by its lower-case spelling."""
    XK.load_keysym_group("xf86")
    table: dict[str, str] = {}
    for attribute in dir(XK):
        if attribute.startswith("XK_XF86_"):
            # python-xlib spells them XF86_AudioMute; X (and xdotool) spell them XF86AudioMute.
            name = "XF86" + attribute[len("XK_XF86_") :]
        elif attribute.startswith("XK_"):
            name = attribute[3:]
        else:
            continue
        table.setdefault(name.lower(), name)
    return table


@cache
def _latin1_names() -> dict[int, str]:
    """Keysym names of the Latin-1 characters, whose keysym value is the code point."""
    table: dict[int, str] = {}
    for attribute in sorted(dir(XK)):
        value = getattr(XK, attribute)
        if attribute.startswith("XK_") and isinstance(value, int) and 0x20 <= value < 0x100:
            table.setdefault(value, attribute[3:])
    return table


def keysym(name: str) -> str:
    """The X keysym name for one key name the model sent.

    Raises:
        ToolError: the name is not a key (the model reads the message).
    """
    if name in ALIASES:
        return ALIASES[name]
    lowered = name.lower()
    if lowered in ALIASES:
        return ALIASES[lowered]
    if len(name) == 1 and name.isprintable():
        # One character: its Latin-1 keysym name ("/" is "slash"), case kept; beyond Latin-1,
        # xdotool maps the character itself.
        return _latin1_names().get(ord(name), name)
    if XK.string_to_keysym(name):
        return name
    found = _keysym_names().get(lowered)
    if found is not None:
        return found
    raise ToolError(
        f"unknown key name {name!r}: use X key names such as Return, Tab, Escape, BackSpace, "
        "Page_Down, F5, or a combination such as ctrl+shift+t"
    )


def combo(text: str) -> tuple[str, ...]:
    """The keysym names of a key combination such as "ctrl+shift+Escape" or "ctrl++".

    Raises:
        ToolError: the combination is empty, too long, or names an unknown key.
    """
    if not text or not text.strip():
        raise ToolError("key text is empty: send a key name such as Return or ctrl+s")
    stripped = text.strip()
    if stripped == "+":
        parts = ["+"]
    else:
        # "ctrl++" means ctrl and the plus key.
        plus_key = stripped.endswith("++")
        parts = (stripped[:-2] if plus_key else stripped).split("+")
        if plus_key:
            parts.append("+")
    parts = [part.strip() for part in parts]
    if any(not part for part in parts):
        raise ToolError(f"key combination {text!r} has an empty part: send e.g. ctrl+s")
    if len(parts) > MAX_COMBO_KEYS:
        raise ToolError(
            f"key combination {text!r} has {len(parts)} keys: send at most {MAX_COMBO_KEYS}"
        )
    return tuple(keysym(part) for part in parts)
