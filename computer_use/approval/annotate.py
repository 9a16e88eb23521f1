"""What a person judges on the phone: an action in plain words and drawn on the screenshot.

`describe(tool, member, input)` says what will happen ("Click at (812, 430)", "Type 'hello'",
"Run `make test`"); `annotate(image, tool, member, input)` draws it on a copy of the full
screenshot: a ring and crosshair where a click lands, a drag's path with an arrow, scroll arrows,
a zoom's rectangle, and a caption box with the words and what will be typed, pressed, opened or
run. Inputs are in screen pixels, the coordinates the action will really use.

Everything the model wrote is shown escaped: control and formatting characters (newlines, escape
sequences, right-to-left overrides, zero-width spaces) appear as `\\n`, `\\x1b`, `\\u202e`, so a
command cannot hide its tail or disguise itself. Long text is cut in the middle with the count of
characters left out, so both its start and its end stay visible.

Marks are magenta over black over white, visible on light and dark screens alike. The font is
Debian's DejaVu when installed (found by path, none is bundled), else Pillow's default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from computer_use.approval.compare import Point, action_targets

MARK = (255, 0, 200)
HALO_DARK = (0, 0, 0)
HALO_LIGHT = (255, 255, 255)
CAPTION_BACKGROUND = (20, 20, 28, 215)
CAPTION_TEXT = (255, 255, 255)
CAPTION_DETAIL = (255, 230, 120)

# The caption takes at most this share of the screenshot's height.
CAPTION_MAX_SHARE = 0.4
DESCRIBE_TEXT_CHARS = 120
DETAIL_TEXT_CHARS = 2000

FONT_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/TTF"),
    Path("/usr/share/fonts/dejavu"),
    Path("/usr/local/share/fonts"),
)

FontType = ImageFont.FreeTypeFont | ImageFont.ImageFont

# Members that drag while the left button is held: their input then has a `start_coordinate`.
_WHILE_HELD = ("mouse_move", "left_mouse_up")
_CLICKS = {
    "left_click": "Click",
    "right_click": "Right-click",
    "middle_click": "Middle-click",
    "double_click": "Double-click",
    "triple_click": "Triple-click",
}


def escape(text: str) -> str:
    """`text` with every non-printable character shown as an escape (`\\n`, `\\x1b`, `\\u202e`)."""
    out = []
    for char in text:
        if char.isprintable() or char == " ":
            out.append("\\\\" if char == "\\" else char)
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def shorten(text: str, limit: int) -> str:
    """Escaped `text`, cut in the middle to about `limit` characters, naming how many are cut."""
    shown = escape(text)
    if len(shown) <= limit:
        return shown
    head = limit * 2 // 3
    tail = limit - head
    return f"{shown[:head]} … [{len(shown) - head - tail} more characters] … {shown[-tail:]}"


def _quoted(text: str, limit: int = DESCRIBE_TEXT_CHARS) -> str:
    return "'" + shorten(text, limit).replace("'", "\\'") + "'"


def _at(point: Point) -> str:
    return f"({point[0]}, {point[1]})"


def _ref(input: Mapping[str, Any], key: str = "target") -> str | None:
    target = input.get(key)
    if isinstance(target, Mapping) and target.get("type") == "ref":
        return f"element {shorten(str(target.get('ref')), 40)}"
    return None


def describe(tool: str, member: str, input: Mapping[str, Any]) -> str:
    """The action in plain words, one line, model text escaped and shortened."""
    points = action_targets(member, input)
    # Keys held during a pointer action: `text` for the computer tool, `modifiers` for the browser.
    held_by = {"left_click_drag", "scroll", *_CLICKS}
    modifiers = None
    if member in held_by:
        modifiers = input.get("modifiers") if tool == "browser" else input.get("text")
    holding = f" holding {shorten(str(modifiers), 40)}" if modifiers else ""

    if tool == "bash":
        if member == "restart":
            return "Restart the shell"
        return f"Run `{shorten(str(input.get('command', '')), DESCRIBE_TEXT_CHARS)}`"
    if tool == "memory":
        return _describe_memory(member, input)
    if tool == "edit":
        path = shorten(str(input.get("path", "?")), 120)
        edits = {
            "view": f"View {path}",
            "create": f"Create {path}",
            "str_replace": f"Replace text in {path}",
            "insert": f"Insert text at line {input.get('insert_line', '?')} of {path}",
        }
        return edits.get(member, f"Edit {path} ({shorten(member, 40)})")

    if member in _CLICKS:
        where = f"at {_at(points[0])}" if points else f"on {_ref(input) or 'the pointer'}"
        return f"{_CLICKS[member]} {where}{holding}"
    if member == "left_click_drag" and len(points) == 2:
        return f"Drag from {_at(points[0])} to {_at(points[1])}{holding}"
    if member in _WHILE_HELD and len(points) == 2:
        # The left button is held (the toolset adds where it was pressed): this is a drag.
        start, end = _at(points[0]), _at(points[1])
        if member == "mouse_move":
            return f"Drag (left button held) from {start} to {end}"
        return f"Release the left mouse button at {end}, ending a drag from {start}"
    if member in ("mouse_move", "hover"):
        verb = "Move the pointer to" if member == "mouse_move" else "Hover at"
        return f"{verb} {_at(points[0])}" if points else f"{verb} {_ref(input) or '?'}"
    if member in ("left_mouse_down", "left_mouse_up"):
        verb = "Press" if member == "left_mouse_down" else "Release"
        where = f" at {_at(points[0])}" if points else ""
        return f"{verb} the left mouse button{where}"
    if member == "type":
        return f"Type {_quoted(str(input.get('text', '')))}"
    if member == "key":
        repeat = input.get("repeat")
        times = f" {repeat} times" if isinstance(repeat, int) and repeat > 1 else ""
        return f"Press {shorten(str(input.get('text', '')), 60)}{times}"
    if member == "hold_key":
        return f"Hold {shorten(str(input.get('text', '')), 60)} for {input.get('duration')} s"
    if member == "scroll":
        amount = input.get("scroll_amount") or ""
        where = f" at {_at(points[0])}" if points else ""
        scrolled = f"Scroll {input.get('scroll_direction', '?')} {amount}".rstrip()
        return scrolled + where + holding
    if member == "wait":
        return f"Wait {input.get('duration')} s"
    if member == "zoom":
        return f"Zoom into {shorten(str(input.get('region')), 60)}"
    if member == "screenshot":
        return "Take a screenshot"
    if member == "cursor_position":
        return "Read the pointer position"
    if member == "navigate":
        url = str(input.get("url", ""))
        if url.lower() in ("back", "forward", "reload"):
            return {"back": "Go back", "forward": "Go forward", "reload": "Reload the page"}[
                url.lower()
            ]
        return f"Open {shorten(url, DESCRIBE_TEXT_CHARS)}"
    if member == "form_input":
        return f"Set {_ref(input) or 'a field'} to {_quoted(str(input.get('value', '')))}"
    if member == "file_upload":
        files = input.get("paths") or input.get("document_ids") or []
        listed = shorten(", ".join(map(str, files)), DESCRIBE_TEXT_CHARS)
        return f"Upload {listed} to {_ref(input) or 'a file field'}"
    if member == "javascript_exec":
        return f"Run JavaScript `{shorten(str(input.get('text', '')), DESCRIBE_TEXT_CHARS)}`"
    if member == "scroll_to":
        return f"Scroll {_ref(input) or 'an element'} into view"
    if member == "find":
        return f"Find {_quoted(str(input.get('query', '')))} on the page"
    simple = {
        "new_tab": "Open a new tab",
        "list_tabs": "List the tabs",
        "switch_tab": f"Switch to tab {shorten(str(input.get('tab_id')), 40)}",
        "close_tab": f"Close tab {shorten(str(input.get('tab_id')), 40)}",
        "read_page": "Read the page",
        "get_page_text": "Read the page's text",
        "read_console": "Read the browser console",
        "read_network": "Read the network log",
    }
    if member in simple:
        return simple[member]
    raw = json.dumps(dict(input), default=str, ensure_ascii=False)
    return f"{shorten(tool, 40)}.{shorten(member, 40)} {shorten(raw, DESCRIBE_TEXT_CHARS)}"


def _describe_memory(member: str, input: Mapping[str, Any]) -> str:
    """A memory command, with the whole text it would store (up to DETAIL_TEXT_CHARS): what the
    agent keeps is read by every later task, so the person sees all of it before it is kept."""

    def path(key: str = "path") -> str:
        return shorten(str(input.get(key, "?")), 120)

    def text(key: str) -> str:
        return _quoted(str(input.get(key, "")), DETAIL_TEXT_CHARS)

    if member == "view":
        return f"Read the memory {path()}"
    if member == "create":
        return f"Write the memory file {path()} (replacing it if it exists): {text('file_text')}"
    if member == "str_replace":
        return f"Change the memory file {path()}: replace {text('old_str')} with {text('new_str')}"
    if member == "insert":
        line = shorten(str(input.get("insert_line", "?")), 20)
        return f"Insert into the memory file {path()} at line {line}: {text('insert_text')}"
    if member == "delete":
        return f"Delete the memory {path()} (with everything in it, if a folder)"
    if member == "rename":
        return f"Rename the memory {path('old_path')} to {path('new_path')}"
    raw = json.dumps(dict(input), default=str, ensure_ascii=False)
    return f"memory.{shorten(member, 40)} {shorten(raw, DETAIL_TEXT_CHARS)}"


def _detail(tool: str, member: str, input: Mapping[str, Any]) -> tuple[str, str] | None:
    """The full text worth showing under the caption, labelled, or None."""
    if tool == "bash" and member != "restart":
        return "command", str(input.get("command", ""))
    if tool in ("edit", "memory"):
        for key in ("file_text", "new_str", "insert_text"):
            if isinstance(input.get(key), str):
                return key.replace("_", " "), input[key]
        return None
    if member in ("type", "javascript_exec"):
        return ("text" if member == "type" else "script"), str(input.get("text", ""))
    if member in ("key", "hold_key"):
        return "keys", str(input.get("text", ""))
    if member == "navigate":
        return "URL", str(input.get("url", ""))
    if member == "form_input":
        return "value", str(input.get("value", ""))
    return None


# --- drawing -----------------------------------------------------------------------------


@cache
def _font_path(name: str) -> str | None:
    for folder in FONT_DIRS:
        path = folder / name
        if path.is_file():
            return str(path)
    return None


def font(size_px: int, *, mono: bool = False) -> FontType:
    """DejaVu (Sans or Sans Mono) at `size_px` when installed, else Pillow's default font."""
    path = _font_path("DejaVuSansMono.ttf" if mono else "DejaVuSans.ttf")
    if path is not None:
        return ImageFont.truetype(path, size_px)
    return ImageFont.load_default(size_px)


def _unit(image: Image.Image) -> int:
    # Marks grow with the screen so they stay visible once the phone shrinks the picture.
    return max(1, round(min(image.size) / 384))


def _line(draw: ImageDraw.ImageDraw, points: list[Point], width: int) -> None:
    draw.line(points, fill=HALO_LIGHT, width=width + 4)
    draw.line(points, fill=HALO_DARK, width=width + 2)
    draw.line(points, fill=MARK, width=width)


def _ring(draw: ImageDraw.ImageDraw, point: Point, radius: int, width: int) -> None:
    x, y = point
    box = (x - radius, y - radius, x + radius, y + radius)
    draw.ellipse(box, outline=HALO_LIGHT, width=width + 4)
    inner = (x - radius + 1, y - radius + 1, x + radius - 1, y + radius - 1)
    draw.ellipse(inner, outline=HALO_DARK, width=width + 2)
    draw.ellipse(
        (x - radius + 2, y - radius + 2, x + radius - 2, y + radius - 2), outline=MARK, width=width
    )


def _marker(draw: ImageDraw.ImageDraw, point: Point, unit: int) -> None:
    """A ring with four ticks pointing at `point`, and the point itself marked."""
    x, y = point
    radius, width = 14 * unit, max(3, 2 * unit)
    _ring(draw, point, radius, width)
    inner, outer = radius - 6 * unit, radius + 10 * unit
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        _line(draw, [(x + dx * inner, y + dy * inner), (x + dx * outer, y + dy * outer)], width)
    dot = unit
    draw.rectangle((x - dot - 1, y - dot - 1, x + dot + 1, y + dot + 1), fill=HALO_DARK)
    draw.rectangle((x - dot + 1, y - dot + 1, x + dot - 1, y + dot - 1), fill=MARK)
    draw.point((x, y), fill=MARK)


def _arrow(draw: ImageDraw.ImageDraw, start: Point, end: Point, unit: int) -> None:
    _line(draw, [start, end], max(2, unit) * 2)
    angle = math.atan2(end[1] - start[1], end[0] - start[0])
    size = 16 * unit
    head = [
        end,
        (end[0] - size * math.cos(angle - 0.45), end[1] - size * math.sin(angle - 0.45)),
        (end[0] - size * math.cos(angle + 0.45), end[1] - size * math.sin(angle + 0.45)),
    ]
    draw.polygon(head, fill=MARK, outline=HALO_DARK, width=max(1, unit))


SCROLL_VECTORS = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}


def _inside(point: Point, image: Image.Image) -> Point:
    """The nearest pixel of the image."""
    return (min(max(point[0], 0), image.width - 1), min(max(point[1], 0), image.height - 1))


def _wrap(text: str, face: FontType, width_px: float) -> list[str]:
    """Greedy wrapping at spaces; a word wider than the line is broken between characters."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if face.getlength(candidate) <= width_px:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for char in word:
                if face.getlength(line + char) > width_px and line:
                    lines.append(line)
                    line = ""
                line += char
        lines.append(line)
    return lines


def _caption(
    image: Image.Image, title: str, detail: tuple[str, str] | None, points: list[Point]
) -> None:
    unit = _unit(image)
    margin = 6 * unit
    title_font = font(12 * unit)
    detail_font = font(11 * unit, mono=True)
    width = image.width - 4 * margin

    def height(face: FontType) -> int:
        box = face.getbbox("Ay|gjÉ")
        return int(box[3] - box[1]) + 3 * unit

    budget = int(image.height * CAPTION_MAX_SHARE) - 2 * margin
    title_lines = _wrap(title, title_font, width)
    # The title is short by construction; keep as much of it as fits.
    title_lines = title_lines[: max(1, budget // height(title_font))]
    kept: list[tuple[str, FontType, tuple[int, int, int]]] = [
        (line, title_font, CAPTION_TEXT) for line in title_lines
    ]
    used = height(title_font) * len(title_lines)
    if detail is not None:
        label, text = detail
        wrapped = _wrap(f"{label}: {shorten(text, DETAIL_TEXT_CHARS)}", detail_font, width)
        room = max(0, (budget - used) // height(detail_font))
        if len(wrapped) > room:
            # Cut in the middle, saying so: a command's end matters as much as its start.
            head = max(0, (room - 1) * 2 // 3)
            tail = max(0, room - 1 - head)
            cut = len(wrapped) - head - tail
            wrapped = [
                *wrapped[:head],
                f"… [{cut} more lines] …",
                *(wrapped[len(wrapped) - tail :] if tail else []),
            ][: max(room, 0)]
        kept += [(line, detail_font, CAPTION_DETAIL) for line in wrapped]
        used += height(detail_font) * len(wrapped)

    box_height = used + 2 * margin
    # The caption goes where it hides no point of the action: the bottom unless one is there.
    bottom = image.height - box_height - margin
    top = bottom if all(p[1] < bottom - 20 * unit for p in points) else margin
    # Only the caption's band is composited: a full-screen overlay costs tens of ms.
    band = Image.new("RGBA", (image.width, box_height + 1), (0, 0, 0, 0))
    layer = ImageDraw.Draw(band)
    layer.rounded_rectangle(
        (margin, 0, image.width - margin, box_height),
        radius=4 * unit,
        fill=CAPTION_BACKGROUND,
        outline=MARK,
        width=max(1, unit),
    )
    y = margin
    for text, face, colour in kept:
        layer.text((2 * margin, y), text, font=face, fill=colour)
        y += height(face)
    image.alpha_composite(band, dest=(0, top))


def _title(size: tuple[int, int], tool: str, member: str, input: Mapping[str, Any]) -> str:
    """`describe`, plus a warning for points the marks can only show at the screen's edge."""
    title = describe(tool, member, input)
    width, height = size
    outside = [
        p for p in action_targets(member, input) if not (0 <= p[0] < width and 0 <= p[1] < height)
    ]
    if outside:
        title += " — outside the screen: " + ", ".join(_at(p) for p in outside)
    return title


def annotate(
    image: Image.Image, tool: str, member: str, input_in_screen_pixels: Mapping[str, Any]
) -> Image.Image:
    """A copy of `image` with the action drawn on it; the original is left untouched."""
    input = input_in_screen_pixels
    canvas = image.convert("RGBA")
    draw = ImageDraw.Draw(canvas)
    unit = _unit(canvas)
    points = action_targets(member, input)
    title = _title(canvas.size, tool, member, input)
    shown = [_inside(p, canvas) for p in points]

    if member in ("left_click_drag", *_WHILE_HELD) and len(shown) == 2:
        # The arrow stops at the end marker's ring so its head stays visible.
        (x0, y0), (x1, y1) = shown
        length = math.hypot(x1 - x0, y1 - y0)
        stop = min(1.0, 14 * unit / length) if length else 0.0
        _arrow(draw, shown[0], (round(x1 - (x1 - x0) * stop), round(y1 - (y1 - y0) * stop)), unit)
        _ring(draw, shown[0], 8 * unit, max(2, unit))
        _marker(draw, shown[1], unit)
    elif member == "scroll":
        centre = shown[0] if shown else (canvas.width // 2, canvas.height // 2)
        dx, dy = SCROLL_VECTORS.get(str(input.get("scroll_direction")), (0, 0))
        if shown:
            _marker(draw, centre, unit)
        # Two parallel arrows, either side of the point, in the direction the content moves.
        for offset in (-24 * unit, 24 * unit):
            base = (centre[0] + (offset if dx == 0 else 0), centre[1] + (offset if dy == 0 else 0))
            start = (base[0] - dx * 20 * unit, base[1] - dy * 20 * unit)
            end = (base[0] + dx * 30 * unit, base[1] + dy * 30 * unit)
            if (dx, dy) != (0, 0):
                _arrow(draw, _inside(start, canvas), _inside(end, canvas), unit)
    elif member == "zoom":
        region = input.get("region")
        if isinstance(region, list | tuple) and len(region) == 4:
            x0, y0, x1, y1 = (int(v) for v in region)
            for colour, grow in ((HALO_LIGHT, 2), (HALO_DARK, 1), (MARK, 0)):
                draw.rectangle(
                    (x0 - grow, y0 - grow, x1 + grow, y1 + grow), outline=colour, width=max(2, unit)
                )
    else:
        for point in shown:
            _marker(draw, point, unit)

    detail = _detail(tool, member, input)
    if detail is not None and len(escape(detail[1])) <= DESCRIBE_TEXT_CHARS // 2:
        detail = None  # the title already shows it whole
    _caption(canvas, title, detail, shown)
    return canvas.convert("RGB")
