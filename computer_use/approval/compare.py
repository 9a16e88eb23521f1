"""Did the screen change, between approval and action, in a way that voids the approval?

A person approved an action while looking at one screenshot. Just before the action runs the
screen is captured again and `compare(approved, now, targets)` decides whether the approval still
holds. The rule, in the order it is applied:

1. **Pixels.** A pixel changed when any colour channel differs by at least `tolerance` (16 of
   255): anti-aliasing jitter does not count, a real repaint does.
2. **Regions.** Changed pixels are grouped on a grid of `cell_px` (8 px) cells, touching cells
   (diagonals included) forming one region: changes a few pixels apart - the letters of one
   label, the parts of one dialog - are one region. Each region keeps its exact pixel bounding box.
3. **The target matters.** Any region with a changed pixel within `target_radius_px` (48) of a
   point the action acts on (a click, both ends of a drag, a scroll position) voids the
   approval: what is under the pointer is what the person approved. A checkbox ticked, a button
   replaced or greyed out, a window moved over it: all void. Only a caret is excused here (a
   text field's caret blinks where the click lands):
   - an I-beam no wider than `caret_width_px` (3) and no taller than `caret_height_px` (48), or
     a terminal's block cursor: a solid cell (at least 90 % of its box changed) no larger than
     `block_caret_px` (16x32) and at least 1.5 times as tall as it is wide.
   The pointer is never excused at a target: the captures are taken without the cursor image
   (XGetImage), so a change at the pointer is the screen itself - a small button under it
   replaced is exactly what must be seen.
4. **The pointer and carets elsewhere are ignored.** Away from every target, a caret (as
   above) or a region no larger than `pointer_px` square (32) touching a pointer position the
   caller knows (before or after; for captures that do include a cursor image) is ignored.
5. **Small things in the panels are ignored.** A region whose box fits in `small_region_px`
   (160x48) and lies wholly inside a panel - a strip the window manager reserves for docks and
   panels, outside its work area (`_NET_WORKAREA`), where clocks, tray icons and status text
   live - is ignored, as long as there are at most `max_small_regions` (3). The caller passes
   the panels (`panels_outside`); with none known (Xvfb, the desktop sandbox: no panels)
   nothing is ignored for being near an edge, so a window's own content at the top of the
   screen (a terminal's first line, a browser's address bar) always counts. Left open: a
   fullscreen window drawn over a panel's strip is not told apart from the panel there.
6. **Everything else matters.** A small change in the body of the screen (a label, an amount,
   a price, a URL: what the person may have based the decision on), any region larger than a
   small one (a dialog, a moved window, a page that scrolled), more than `max_small_regions`
   small ones (the screen re-rendered), or more than `max_changed_fraction` (1 %) of all pixels
   changed, voids the approval.

Actions with no point on the screen (typing, keys) are judged by rules 4, 5 and 6. Screens of
different sizes always differ. The rule errs towards asking again: a void approval costs the
person one more tap (an animation in the body of the screen costs re-asks until the gate gives
up), a wrong click costs more.

The comparison runs on the path from a decision to the action: unchanged screens (the common
case) are recognised in Pillow's C code alone; only changed ones reach numpy/scipy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageChops
from scipy import ndimage

Point = tuple[int, int]


@dataclass(frozen=True)
class Box:
    """A rectangle in screen pixels; `right` and `bottom` are exclusive."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    def contains(self, point: Point, margin_px: int = 0) -> bool:
        x, y = point
        return (
            self.left - margin_px <= x < self.right + margin_px
            and self.top - margin_px <= y < self.bottom + margin_px
        )

    def __str__(self) -> str:
        return f"{self.size} at ({self.left}, {self.top})"


@dataclass(frozen=True)
class Change:
    """The verdict: whether the change voids the approval, why in plain words, and where.

    `boxes` are the regions that matter (empty when nothing does); `ignored` those set aside
    as the pointer, a caret or small changes away from the target.
    """

    matters: bool
    reason: str
    boxes: tuple[Box, ...] = ()
    ignored: tuple[Box, ...] = ()


@dataclass(frozen=True)
class CompareRules:
    """The thresholds of the rule in the module docstring; the defaults suit a 96 dpi screen."""

    tolerance: int = 16
    cell_px: int = 8
    target_radius_px: int = 48
    pointer_px: int = 32
    caret_width_px: int = 3
    caret_height_px: int = 48
    block_caret_px: tuple[int, int] = (16, 32)
    block_caret_fill: float = 0.9
    small_region_px: tuple[int, int] = (160, 48)
    max_small_regions: int = 3
    max_changed_fraction: float = 0.01
    # A region this large that covers a target is described as covering it.
    covering_px: int = 64


DEFAULT_RULES = CompareRules()


@dataclass(frozen=True, eq=False)
class _Region:
    box: Box
    changed_px: int
    # The changed pixels of this region only, cropped to `box`.
    mask: np.ndarray[Any, np.dtype[np.bool_]]


def action_targets(member: str, input: Mapping[str, Any]) -> list[Point]:
    """The screen points an action acts on, in the order it visits them (a drag's start first).

    Reads the computer toolset's `coordinate`/`start_coordinate` and the browser toolset's
    `from`/`target` coordinate targets; anything else (a ref target, typing) has no point.
    """
    points: list[Point] = []
    for key in ("start_coordinate", "coordinate", "from", "target"):
        point = _point(input.get(key))
        if point is not None:
            points.append(point)
    return points


def _point(value: Any) -> Point | None:
    if isinstance(value, Mapping):
        if value.get("type", "coordinate") != "coordinate":
            return None
        value = (value.get("x"), value.get("y"))
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        return (round(value[0]), round(value[1]))
    return None


def compare(
    approved: Image.Image,
    now: Image.Image,
    targets: Iterable[Point] = (),
    *,
    pointers: Iterable[Point] = (),
    panels: Iterable[Box] = (),
    rules: CompareRules = DEFAULT_RULES,
) -> Change:
    """Judge the change from the approved screenshot to the screen as it is now.

    Args:
        approved: the screenshot the person saw, full resolution.
        now: a capture taken just before the action would run.
        targets: the points the action acts on, in screen pixels.
        pointers: where the pointer was and is, when known (its image may be in the captures).
        panels: the screen's panels, strips outside the window manager's work area.
        rules: the thresholds.
    """
    if approved.size != now.size:
        return Change(
            True,
            f"the screen size changed from {approved.width}x{approved.height} "
            f"to {now.width}x{now.height}",
        )
    diff = ImageChops.difference(_rgb(approved), _rgb(now))
    if diff.getbbox() is None:
        return Change(False, "the screen did not change")
    changed = _changed_mask(diff, rules.tolerance)
    bbox = changed.getbbox()
    if bbox is None:
        return Change(False, "the screen did not change (differences below the tolerance)")
    regions = _regions(changed, Box(*bbox), rules.cell_px)
    return _judge(regions, now.size, list(targets), list(pointers), list(panels), rules)


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _changed_mask(diff: Image.Image, tolerance: int) -> Image.Image:
    # Pillow's C code does the per-pixel work: the largest channel difference, thresholded.
    red, green, blue = diff.split()
    largest = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    return largest.point([0] * tolerance + [255] * (256 - tolerance))


def _regions(changed: Image.Image, bbox: Box, cell_px: int) -> list[_Region]:
    # Work on the changed bounding box only, padded to whole cells.
    left = bbox.left - bbox.left % cell_px
    top = bbox.top - bbox.top % cell_px
    right = min(changed.width, bbox.right + (-bbox.right) % cell_px)
    bottom = min(changed.height, bbox.bottom + (-bbox.bottom) % cell_px)
    pixels = np.asarray(changed.crop((left, top, right, bottom))) > 0
    rows = -(-pixels.shape[0] // cell_px)
    cols = -(-pixels.shape[1] // cell_px)
    padded = np.zeros((rows * cell_px, cols * cell_px), dtype=bool)
    padded[: pixels.shape[0], : pixels.shape[1]] = pixels
    cells = padded.reshape(rows, cell_px, cols, cell_px).any(axis=(1, 3))
    labels, count = ndimage.label(cells, structure=np.ones((3, 3), dtype=bool))
    regions: list[_Region] = []
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        rows_slice, cols_slice = found
        own_cells = labels[found] == index
        own = np.repeat(np.repeat(own_cells, cell_px, axis=0), cell_px, axis=1)
        y0, x0 = rows_slice.start * cell_px, cols_slice.start * cell_px
        block = padded[y0 : y0 + own.shape[0], x0 : x0 + own.shape[1]] & own
        ys, xs = np.nonzero(block)
        top_px, bottom_px = int(ys.min()), int(ys.max()) + 1
        left_px, right_px = int(xs.min()), int(xs.max()) + 1
        regions.append(
            _Region(
                box=Box(
                    left + x0 + left_px,
                    top + y0 + top_px,
                    left + x0 + right_px,
                    top + y0 + bottom_px,
                ),
                changed_px=int(block.sum()),
                mask=block[top_px:bottom_px, left_px:right_px],
            )
        )
    assert len(regions) == count
    return regions


def _is_pointer(region: _Region, pointers: list[Point], rules: CompareRules) -> bool:
    box = region.box
    return (
        box.width <= rules.pointer_px
        and box.height <= rules.pointer_px
        and any(box.contains(p, margin_px=2) for p in pointers)
    )


def _is_caret(region: _Region, rules: CompareRules) -> bool:
    box = region.box
    if box.width <= rules.caret_width_px and box.height <= rules.caret_height_px:
        return True
    block_w, block_h = rules.block_caret_px
    return (
        box.width <= block_w
        and box.height <= block_h
        and box.height >= 1.5 * box.width
        and region.changed_px >= rules.block_caret_fill * box.width * box.height
    )


def _distance(region: _Region, target: Point, radius_px: int) -> float | None:
    """The distance from `target` to the region's nearest changed pixel, if within the radius."""
    box = region.box
    tx, ty = target
    # Only the square around the target can hold a pixel within the radius.
    x0, x1 = max(box.left, tx - radius_px), min(box.right, tx + radius_px + 1)
    y0, y1 = max(box.top, ty - radius_px), min(box.bottom, ty + radius_px + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    window = region.mask[y0 - box.top : y1 - box.top, x0 - box.left : x1 - box.left]
    ys, xs = np.nonzero(window)
    if len(xs) == 0:
        return None
    dx = xs + (x0 - tx)
    dy = ys + (y0 - ty)
    distance = math.sqrt(float(np.min(dx * dx + dy * dy)))
    return distance if distance <= radius_px else None


def _judge(
    regions: list[_Region],
    screen: tuple[int, int],
    targets: list[Point],
    pointers: list[Point],
    panels: list[Box],
    rules: CompareRules,
) -> Change:
    small_w, small_h = rules.small_region_px
    at_target: list[str] = []
    large: list[_Region] = []
    small: list[_Region] = []
    body: list[_Region] = []
    ignored: list[_Region] = []
    mattering: list[_Region] = []
    for region in regions:
        if _is_caret(region, rules):
            ignored.append(region)
            continue
        near = [
            (d, t)
            for t in targets
            if (d := _distance(region, t, rules.target_radius_px)) is not None
        ]
        if near:
            # Before the pointer rule: a change at a target is never explained away as the pointer.
            distance, target = min(near)
            mattering.append(region)
            at_target.append(_at_target(region, target, distance, rules))
        elif _is_pointer(region, pointers, rules):
            ignored.append(region)
        elif region.box.width <= small_w and region.box.height <= small_h:
            if any(_within(region.box, panel) for panel in panels):
                small.append(region)
            else:
                body.append(region)
                mattering.append(region)
        else:
            large.append(region)
            mattering.append(region)

    changed_px = sum(r.changed_px for r in regions)
    fraction = changed_px / (screen[0] * screen[1])
    too_many_small = len(small) > rules.max_small_regions
    if too_many_small:
        mattering.extend(small)
    else:
        ignored.extend(small)
    mattering_boxes = tuple(r.box for r in mattering)
    ignored_boxes = tuple(r.box for r in ignored)

    reasons = list(dict.fromkeys(at_target))
    if large or body or too_many_small or (fraction > rules.max_changed_fraction and not at_target):
        changed = [r for r in regions if r not in ignored] or regions
        largest = max(changed, key=lambda r: r.box.width * r.box.height).box
        places = "1 place" if len(changed) == 1 else f"{len(changed)} places"
        reasons.append(
            f"the screen changed in {places} (largest {largest.size}, {fraction:.1%} of the screen)"
        )
        if not mattering_boxes:
            mattering_boxes = tuple(r.box for r in changed)
    if reasons:
        return Change(True, "; ".join(reasons), mattering_boxes, ignored_boxes)
    return Change(False, _ignored_summary(ignored, pointers, rules), (), ignored_boxes)


def _within(box: Box, outer: Box) -> bool:
    return (
        outer.left <= box.left
        and box.right <= outer.right
        and outer.top <= box.top
        and box.bottom <= outer.bottom
    )


def panels_outside(workarea: Box, screen: tuple[int, int]) -> tuple[Box, ...]:
    """The panels around a window manager's work area: the strips of the screen outside it
    (top and bottom full width, then left and right between them)."""
    width, height = screen
    top, bottom = max(0, workarea.top), min(height, workarea.bottom)
    left, right = max(0, workarea.left), min(width, workarea.right)
    strips = [
        Box(0, 0, width, top),
        Box(0, bottom, width, height),
        Box(0, top, left, bottom),
        Box(right, top, width, bottom),
    ]
    return tuple(s for s in strips if s.width > 0 and s.height > 0)


def _at_target(region: _Region, target: Point, distance: float, rules: CompareRules) -> str:
    box = region.box
    where = f"({target[0]}, {target[1]})"
    if box.contains(target) and min(box.width, box.height) >= rules.covering_px:
        return f"something new covers the target at {where} (a {box.size} area changed)"
    if distance < 1:
        return f"the screen changed at the target {where} (a {box.size} area)"
    return f"the screen changed {distance:.0f} px from the target {where} (a {box.size} area)"


def _ignored_summary(ignored: list[_Region], pointers: list[Point], rules: CompareRules) -> str:
    pointer = caret = small = 0
    for region in ignored:
        if _is_caret(region, rules):
            caret += 1
        elif _is_pointer(region, pointers, rules):
            pointer += 1
        else:
            small += 1
    kinds = []
    if pointer:
        kinds.append("the pointer")
    if caret:
        kinds.append("a caret" if caret == 1 else f"{caret} carets")
    if small:
        kinds.append("a small area in a panel" if small == 1 else f"{small} small areas in panels")
    listed = kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " and " + kinds[-1]
    return f"only {listed} changed; ignored"
