"""Screenshot sizes and coordinate mapping between screen pixels and screenshot pixels.

The model sees a screenshot scaled down to fit its image limits and answers in that image's pixels;
the SDK neither scales nor maps (shared/notes/anthropic-sdk.md), so this module does both. Pure
functions and frozen values only: no display, no I/O.

Mapping rule: screenshot pixel `x` covers screen pixels `[x * sx, (x + 1) * sx)` with
`sx = screen_width / shot_width` (the same on y), and a point aimed at it lands on the screen pixel
nearest the centre of that span, `round((x + 0.5) * sx - 0.5)`. That is within `(sx - 1) / 2 + 0.5`
screen pixels of the plain product `x * sx`, under one pixel for any downscale below 2.5x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from anthropic.tools import ToolError

# The model's image limits, from Anthropic's vision and computer-use guides: a larger image is
# either rejected (tool results) or shrunk by the API, after which the model's coordinates no longer
# match ours. Keep both below the limits: the long edge and the total pixel count.
MAX_LONG_EDGE_PX = 1568
MAX_PIXELS = 1_150_000

# A point this far outside the screenshot (as a fraction of its side, at least a few pixels) is an
# off-by-a-little the model makes near the edges: it is pulled onto the edge. Farther out, the model
# is confused about the image (often it is answering in screen pixels), and clicking at the edge
# instead would be an action nobody asked for, so it is refused.
CLAMP_MARGIN_FRACTION = 0.05
CLAMP_MARGIN_MIN_PX = 4


class Size(NamedTuple):
    """A width and a height in pixels."""

    width: int
    height: int


class Point(NamedTuple):
    """An (x, y) position in pixels; which pixels (screen or screenshot) is said by the caller."""

    x: int
    y: int


class Region(NamedTuple):
    """A rectangle `[x0, x1) x [y0, y1)` in pixels."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def size(self) -> Size:
        return Size(self.x1 - self.x0, self.y1 - self.y0)


@dataclass(frozen=True)
class ImageLimits:
    """The largest image the model accepts as is."""

    max_long_edge_px: int = MAX_LONG_EDGE_PX
    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        if self.max_long_edge_px < 1 or self.max_pixels < 1:
            raise ValueError(f"image limits must be positive, got {self}")

    def fits(self, size: Size) -> bool:
        return max(size) <= self.max_long_edge_px and size.width * size.height <= self.max_pixels


def fit_size(source: Size, limits: ImageLimits | None = None, *, upscale: bool = False) -> Size:
    """The largest size with `source`'s aspect ratio that fits `limits` (upscaled only if asked).

    Raises:
        ValueError: `source` has a side below one pixel.
    """
    limits = limits or ImageLimits()
    if source.width < 1 or source.height < 1:
        raise ValueError(
            f"a screen must be at least 1x1 pixels, got {source.width}x{source.height}"
        )
    scale = min(
        math.inf if upscale else 1.0,
        limits.max_long_edge_px / max(source),
        math.sqrt(limits.max_pixels / (source.width * source.height)),
    )
    if scale == 1.0:
        return source
    # Floor, then step down while rounding error still leaves it a pixel over a limit.
    width = max(1, math.floor(source.width * scale))
    height = max(1, math.floor(source.height * scale))
    while not limits.fits(Size(width, height)):
        width, height = max(1, width - 1), max(1, height - 1)
    return Size(width, height)


@dataclass(frozen=True)
class Scaler:
    """Maps points and regions between a screen and the screenshot the model sees of it."""

    screen: Size
    shot: Size

    @classmethod
    def for_screen(cls, screen: Size, limits: ImageLimits | None = None) -> Scaler:
        return cls(screen=screen, shot=fit_size(screen, limits))

    @property
    def scale_x(self) -> float:
        """Screen pixels per screenshot pixel, horizontally."""
        return self.screen.width / self.shot.width

    @property
    def scale_y(self) -> float:
        return self.screen.height / self.shot.height

    def clamp_shot_point(self, point: tuple[int, int], *, field: str = "coordinate") -> Point:
        """`point` pulled onto the screenshot if it is just outside; refused if it is far outside.

        Raises:
            ToolError: the point is too far outside the screenshot (the model reads the message).
        """
        return Point(
            _clamp_axis(point[0], self.shot.width, field, point, self.shot),
            _clamp_axis(point[1], self.shot.height, field, point, self.shot),
        )

    def to_screen(self, point: tuple[int, int], *, field: str = "coordinate") -> Point:
        """The screen pixel a screenshot point aims at (clamped as `clamp_shot_point` says)."""
        x, y = self.clamp_shot_point(point, field=field)
        return Point(
            _centre(x, self.scale_x, self.screen.width),
            _centre(y, self.scale_y, self.screen.height),
        )

    def to_shot(self, point: tuple[int, int]) -> Point:
        """The screenshot pixel showing screen pixel `point` (clamped to the screenshot)."""
        x = math.floor((point[0] + 0.5) / self.scale_x)
        y = math.floor((point[1] + 0.5) / self.scale_y)
        return Point(min(max(x, 0), self.shot.width - 1), min(max(y, 0), self.shot.height - 1))

    def region_to_screen(
        self, region: tuple[int, int, int, int], *, field: str = "region"
    ) -> Region:
        """The screen rectangle a screenshot region `[x0, y0, x1, y1]` covers (edges clamped).

        Raises:
            ToolError: the region is empty or inverted, or too far outside the screenshot.
        """
        x0, y0, x1, y1 = region
        if x1 <= x0 or y1 <= y0:
            raise ToolError(
                f"{field} {list(region)} is empty or inverted: send [x0, y0, x1, y1] with x0 < x1 "
                f"and y0 < y1, in pixels of the {self.shot.width}x{self.shot.height} screenshot"
            )
        # Region edges may lie on the far border (x1 == width), so clamp against width + 1.
        limit = Size(self.shot.width + 1, self.shot.height + 1)
        cx0 = _clamp_axis(x0, limit.width, field, region, self.shot)
        cy0 = _clamp_axis(y0, limit.height, field, region, self.shot)
        cx1 = _clamp_axis(x1, limit.width, field, region, self.shot)
        cy1 = _clamp_axis(y1, limit.height, field, region, self.shot)
        if cx1 <= cx0 or cy1 <= cy0:
            raise ToolError(
                f"{field} {list(region)} lies outside the {self.shot.width}x{self.shot.height} "
                "screenshot: send a region inside it"
            )
        return Region(
            math.floor(cx0 * self.scale_x),
            math.floor(cy0 * self.scale_y),
            min(self.screen.width, math.ceil(cx1 * self.scale_x)),
            min(self.screen.height, math.ceil(cy1 * self.scale_y)),
        )


def _centre(index: int, scale: float, limit: int) -> int:
    return min(max(round((index + 0.5) * scale - 0.5), 0), limit - 1)


def _clamp_axis(value: int, length: int, field: str, given: tuple[int, ...], shot: Size) -> int:
    margin = max(CLAMP_MARGIN_MIN_PX, math.ceil(length * CLAMP_MARGIN_FRACTION))
    if value < -margin or value > length - 1 + margin:
        raise ToolError(
            f"{field} {list(given)} is outside the {shot.width}x{shot.height} screenshot: "
            f"send pixels of the latest screenshot (0 <= x < {shot.width}, "
            f"0 <= y < {shot.height}), not screen pixels"
        )
    return min(max(value, 0), length - 1)
