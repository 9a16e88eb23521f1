"""A screen the computer toolset drives: the `Screen` protocol, captured `Frame`s, and encoding.

Everything here is in screen pixels; mapping from what the model sees is `scaling`'s job. A
`Frame` is a value: the full-resolution pixels (for the approval screenshot and the audit copy,
encoded later, off the fast path) and the model-sized image, already encoded.
"""

from __future__ import annotations

import base64
import enum
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from PIL import Image

from computer_use.screen.scaling import ImageLimits, Point, Region, Scaler, Size, fit_size

MediaType = Literal["image/png", "image/jpeg", "image/webp"]


class Button(enum.IntEnum):
    """X pointer buttons."""

    LEFT = 1
    MIDDLE = 2
    RIGHT = 3


class ScrollDirection(enum.IntEnum):
    """Scroll directions as the X wheel buttons that perform them."""

    UP = 4
    DOWN = 5
    LEFT = 6
    RIGHT = 7


@dataclass(frozen=True)
class Encoding:
    """How model-sized images are encoded.

    JPEG is the default because it is several times cheaper to encode than PNG for a screen full of
    text (docs/benchmarks.md) and the model reads it as well; PNG stays available for exact pixels.
    """

    format: Literal["jpeg", "png", "webp"] = "jpeg"
    quality: int = 85

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise ValueError(f"encoding quality must be within 1..100, got {self.quality}")

    @property
    def media_type(self) -> MediaType:
        media: dict[str, MediaType] = {
            "jpeg": "image/jpeg",
            "png": "image/png",
            "webp": "image/webp",
        }
        return media[self.format]

    def encode(self, image: Image.Image) -> bytes:
        out = io.BytesIO()
        if self.format == "jpeg":
            image.save(out, format="JPEG", quality=self.quality)
        elif self.format == "png":
            # Level 1: most of the size win of PNG at a fraction of the default level's time.
            image.save(out, format="PNG", compress_level=1)
        else:
            image.save(out, format="WEBP", quality=self.quality, method=0)
        return out.getvalue()


@dataclass(frozen=True)
class Frame:
    """One capture of the screen: full-resolution pixels and the encoded model-sized image."""

    screen_size: Size
    bgrx: bytes = field(repr=False)
    """Full-resolution pixels, 4 bytes each (blue, green, red, unused), rows top to bottom."""
    shot_size: Size
    data: bytes = field(repr=False)
    """The model-sized image, encoded as `media_type`."""
    media_type: MediaType
    captured_at_s: float
    """`time.monotonic()` when the pixels were read."""

    @property
    def scaler(self) -> Scaler:
        """Maps the model's coordinates on this frame to screen pixels."""
        return Scaler(screen=self.screen_size, shot=self.shot_size)

    def full_image(self) -> Image.Image:
        """The full-resolution screen as a new RGB image."""
        return Image.frombuffer("RGB", self.screen_size, self.bgrx, "raw", "BGRX", 0, 1).copy()

    def shot_image(self) -> Image.Image:
        """The model-sized image, decoded."""
        with Image.open(io.BytesIO(self.data)) as image:
            return image.convert("RGB")

    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


def make_frame(
    bgrx: bytes,
    screen_size: Size,
    *,
    limits: ImageLimits,
    encoding: Encoding,
    captured_at_s: float | None = None,
) -> Frame:
    """A `Frame` from raw screen pixels: scaled to fit `limits`, aspect kept, then encoded."""
    shot_size = fit_size(screen_size, limits)
    image = Image.frombuffer("RGB", screen_size, bgrx, "raw", "BGRX", 0, 1)
    if shot_size != screen_size:
        # BOX averages the screen pixels under each screenshot pixel: thin text strokes survive
        # (NEAREST drops them) at about half the cost of BILINEAR for these small factors.
        image = image.resize(shot_size, Image.Resampling.BOX)
    return Frame(
        screen_size=screen_size,
        bgrx=bgrx,
        shot_size=shot_size,
        data=encoding.encode(image),
        media_type=encoding.media_type,
        captured_at_s=time.monotonic() if captured_at_s is None else captured_at_s,
    )


def zoom_image(crop: Image.Image, limits: ImageLimits, encoding: Encoding) -> tuple[bytes, Size]:
    """A screen region scaled (up or down, aspect kept) to fill the model's image budget."""
    target = fit_size(Size(*crop.size), limits, upscale=True)
    if target != crop.size:
        crop = crop.resize(target, Image.Resampling.LANCZOS)
    return encoding.encode(crop), Size(*crop.size)


class Screen(Protocol):
    """A display to capture and drive, in screen pixels. Backends: `computer_use.screen.x11`."""

    def capture(self) -> Frame:
        """The whole screen now, scaled and encoded for the model."""
        ...

    def scaler(self) -> Scaler:
        """The mapping a capture taken now would have (before any screenshot was sent)."""
        ...

    def zoom(self, region: Region) -> tuple[bytes, MediaType]:
        """`region` of the screen scaled to fill the model's image budget, encoded."""
        ...

    def pointer(self) -> Point:
        """Where the pointer is."""
        ...

    def move(self, to: Point) -> None: ...

    def click(
        self, button: Button, *, count: int = 1, at: Point | None = None, hold: Sequence[str] = ()
    ) -> None:
        """Click `count` times at `at` (or where the pointer is), holding the keysyms `hold`."""
        ...

    def button(self, button: Button, *, down: bool) -> None: ...

    def drag(self, start: Point, end: Point, *, hold: Sequence[str] = ()) -> None: ...

    def scroll(
        self,
        direction: ScrollDirection,
        clicks: int,
        *,
        at: Point | None = None,
        hold: Sequence[str] = (),
    ) -> None: ...

    def key(self, keysyms: Sequence[str], *, repeat: int = 1) -> None:
        """Press and release the combination `keysyms` (X keysym names), `repeat` times."""
        ...

    def hold_key(self, keysyms: Sequence[str], duration_s: float) -> None: ...

    def type_text(self, text: str) -> None: ...

    def close(self) -> None: ...
