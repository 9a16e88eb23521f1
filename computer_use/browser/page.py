"""What the browser toolset reads off a page, as text: the outline, `find`, and key names.

The outline is Playwright's ARIA snapshot in its "ai" mode (the accessibility tree as YAML-ish
lines, each interesting node tagged `[ref=e7]` and, on request, `[box=x,y,w,h]` in viewport
pixels). Playwright resolves those refs back to elements (`aria-ref=e7`) against the page's most
recent snapshot, so the toolset always snapshots the whole page and cuts it here: the refs the
model holds stay valid until the page changes, whichever subtree it asked for. The model sees
them as `ref_7` (`ref_f1e2` inside an iframe).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

OUTLINE_MAX_CHARS = 50_000
DEFAULT_DEPTH = 15
FIND_MAX_MATCHES = 20

_LINE = re.compile(r"^(?P<indent> *)- (?P<body>.*)$")
_REF = re.compile(r" ?\[ref=(?P<ref>(?:f\d+)?e\d+)\]")
_BOX = re.compile(r" ?\[box=(?P<x>-?\d+),(?P<y>-?\d+),(?P<w>\d+),(?P<h>\d+)\]")
_MODEL_REF = re.compile(r"^ref_(?P<ref>\d+|f\d+e\d+)$")

INTERACTIVE_ROLES = frozenset(
    {
        "button", "link", "textbox", "searchbox", "combobox", "listbox", "option", "checkbox",
        "radio", "switch", "slider", "spinbutton", "menuitem", "menuitemcheckbox",
        "menuitemradio", "tab", "treeitem",
    }
)  # fmt: skip

# Words a person uses for a role ("the search bar", "the sign-in link").
_ROLE_WORDS = {
    "button": {"button"},
    "link": {"link"},
    "textbox": {"field", "input", "box", "bar", "textbox", "text"},
    "searchbox": {"search", "field", "input", "box", "bar"},
    "combobox": {"dropdown", "select", "combo", "menu", "list"},
    "checkbox": {"checkbox", "check", "tick"},
    "radio": {"radio", "option"},
    "heading": {"heading", "title", "header"},
    "img": {"image", "picture", "logo", "icon"},
}
_STOP_WORDS = frozenset({"the", "a", "an", "to", "of", "for", "on", "in", "with", "and", "or"})


@dataclass(frozen=True)
class Node:
    """One line of the snapshot."""

    indent: int
    text: str
    ref: str | None
    box: tuple[int, int, int, int] | None
    shown: str
    """The line as the model reads it: `[ref_7]` tags, no boxes."""

    @property
    def role(self) -> str:
        return self.text.split(" ", 1)[0].rstrip(":")


def parse_snapshot(snapshot: str) -> list[Node]:
    nodes: list[Node] = []
    for line in snapshot.splitlines():
        match = _LINE.match(line)
        if match is None:
            # A continuation of a multi-line value: kept with its node.
            if nodes:
                last = nodes[-1]
                extra = line.strip()
                nodes[-1] = Node(
                    last.indent, f"{last.text} {extra}", last.ref, last.box, f"{last.shown} {extra}"
                )
            continue
        body = match["body"]
        ref_match = _REF.search(body)
        box_match = _BOX.search(body)
        box = (
            (int(box_match["x"]), int(box_match["y"]), int(box_match["w"]), int(box_match["h"]))
            if box_match
            else None
        )
        text = _BOX.sub("", _REF.sub("", body))
        shown = _REF.sub(lambda m: f" [{model_ref(m['ref'])}]", _BOX.sub("", body))
        ref = ref_match["ref"] if ref_match else None
        nodes.append(Node(len(match["indent"]) // 2, text, ref, box, shown))
    return nodes


def model_ref(playwright_ref: str) -> str:
    """`e7` → `ref_7`; `f1e2` → `ref_f1e2`."""
    return (
        f"ref_{playwright_ref[1:]}" if playwright_ref.startswith("e") else f"ref_{playwright_ref}"
    )


def playwright_ref(ref: str) -> str | None:
    """`ref_7` → `e7`, or None when it is not a reference this toolset hands out."""
    match = _MODEL_REF.match(ref.strip())
    if match is None:
        return None
    inner = match["ref"]
    return inner if inner.startswith("f") else f"e{inner}"


def _visible(box: tuple[int, int, int, int] | None, width: int, height: int) -> bool:
    if box is None:
        return True
    x, y, w, h = box
    return x < width and y < height and x + w > 0 and y + h > 0


def outline(
    snapshot: str,
    *,
    viewport: tuple[int, int],
    depth: int | None = None,
    interactive_only: bool = False,
    include_offscreen: bool = False,
    root_ref: str | None = None,
) -> str:
    """The page outline the model reads, cut to a subtree, a depth and a filter.

    Raises:
        LookupError: `root_ref` is not in the snapshot.
    """
    nodes = parse_snapshot(snapshot)
    if root_ref is not None:
        start = next((i for i, n in enumerate(nodes) if n.ref == root_ref), None)
        if start is None:
            raise LookupError(root_ref)
        base = nodes[start].indent
        end = start + 1
        while end < len(nodes) and nodes[end].indent > base:
            end += 1
        nodes = [Node(n.indent - base, n.text, n.ref, n.box, n.shown) for n in nodes[start:end]]
    limit = DEFAULT_DEPTH if depth is None else max(1, depth)
    width, height = viewport
    lines: list[str] = []
    hidden_below: int | None = None
    for node in nodes:
        if hidden_below is not None:
            if node.indent > hidden_below:
                continue
            hidden_below = None
        if not include_offscreen and not _visible(node.box, width, height):
            hidden_below = node.indent
            continue
        if node.indent >= limit:
            continue
        if interactive_only:
            if node.ref is None or node.role not in INTERACTIVE_ROLES:
                continue
            lines.append(f"- {node.shown.rstrip(':')}")
            continue
        lines.append(f"{'  ' * node.indent}- {node.shown}")
    if not lines:
        return "(nothing matched: the page is empty here; try filter 'all' or scroll)"
    return cap("\n".join(lines), "narrow it with `ref` or a smaller `depth`")


def find(snapshot: str, query: str) -> list[str]:
    """Up to 20 outline lines whose role, name or text best match `query`, best first.

    A heuristic, not understanding: the query's words are matched against each node's words
    (its name and text count twice, a word naming its role once) and the nodes with the most
    matches win, in page order on ties. Nodes without a reference are skipped.
    """
    words = [w for w in re.findall(r"[\w'-]+", query.lower()) if w not in _STOP_WORDS]
    if not words:
        return []
    scored: list[tuple[int, int, str]] = []
    for index, node in enumerate(parse_snapshot(snapshot)):
        if node.ref is None:
            continue
        role = node.role
        own = set(re.findall(r"[\w'-]+", node.text[len(role) :].lower()))
        role_words = _ROLE_WORDS.get(role, set()) | {role}
        score = 0
        for word in words:
            if word in own or any(w.startswith(word) for w in own if len(word) >= 3):
                score += 2
            elif word in role_words:
                score += 1
        if score:
            line = f"- {node.shown.rstrip(':')}"
            scored.append((-score, index, line))
    scored.sort()
    return [line for _, _, line in scored[:FIND_MAX_MATCHES]]


def cap(text: str, how_to_narrow: str, limit: int = OUTLINE_MAX_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[cut at {limit} characters; {how_to_narrow}]"


# xdotool's and the SDK's key names → Playwright's.
_KEY_NAMES = {
    "return": "Enter", "enter": "Enter", "kp_enter": "Enter", "backspace": "Backspace",
    "escape": "Escape", "esc": "Escape", "tab": "Tab", "delete": "Delete", "del": "Delete",
    "space": "Space", "up": "ArrowUp", "down": "ArrowDown", "left": "ArrowLeft",
    "right": "ArrowRight", "page_up": "PageUp", "prior": "PageUp", "pageup": "PageUp",
    "page_down": "PageDown", "next": "PageDown", "pagedown": "PageDown", "home": "Home",
    "end": "End", "insert": "Insert", "ctrl": "Control", "control": "Control",
    "control_l": "Control", "control_r": "Control", "shift": "Shift", "shift_l": "Shift",
    "shift_r": "Shift", "alt": "Alt", "alt_l": "Alt", "alt_r": "Alt", "option": "Alt",
    "cmd": "Meta", "command": "Meta", "meta": "Meta", "super": "Meta", "super_l": "Meta",
    "win": "Meta", "minus": "-", "plus": "+", "period": ".", "comma": ",", "slash": "/",
}  # fmt: skip
_MODIFIERS = frozenset({"Control", "Shift", "Alt", "Meta"})


def key_name(name: str) -> str:
    """One key in Playwright's spelling (`BackSpace` → `Backspace`, `F5` stays)."""
    mapped = _KEY_NAMES.get(name.lower())
    if mapped is not None:
        return mapped
    if re.fullmatch(r"[fF]([1-9]|1[0-9]|2[0-4])", name):
        return name.upper()
    return name


def chord(text: str) -> str:
    """`ctrl+shift+t` → `Control+Shift+t` (Playwright's `press` syntax)."""
    parts = [p for p in text.split("+") if p] if text != "+" else ["+"]
    return "+".join(key_name(p) for p in parts)


Modifier = Literal["Alt", "Control", "Meta", "Shift"]


def modifiers(text: str | None) -> list[Modifier]:
    """`ctrl+shift` → `["Control", "Shift"]`.

    Raises:
        ValueError: a part is not a modifier key.
    """
    if not text:
        return []
    names = [key_name(p.strip()) for p in text.split("+") if p.strip()]
    wrong = [n for n in names if n not in _MODIFIERS]
    if wrong:
        raise ValueError(
            f"{', '.join(wrong)} is not a modifier; use ctrl, shift, alt or cmd joined by '+'"
        )
    return [cast(Modifier, n) for n in names]
