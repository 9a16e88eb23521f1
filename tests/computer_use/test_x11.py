"""The X11 screen on a real Xvfb: frames, pixels, threads, and a display that is not there."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from computer_use.screen.base import Encoding
from computer_use.screen.scaling import Region, Size
from computer_use.screen.x11 import X11Error, X11Screen
from tests.computer_use import probe_app
from tests.computer_use.xdisplay import ProbeApp, xvfb

pytestmark = pytest.mark.display


def is_red(pixel: object) -> bool:
    assert isinstance(pixel, tuple)
    return pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60


@pytest.mark.parametrize("encoding", ["jpeg", "png", "webp"])
def test_a_frame_holds_the_full_screen_and_the_model_image(tmp_path: Path, encoding: str) -> None:
    with xvfb(1920, 1080) as server:
        app = ProbeApp(server, tmp_path / "events.jsonl")
        screen = X11Screen(server.name, encoding=Encoding(format=encoding))  # type: ignore[arg-type]
        try:
            frame = screen.capture()
        finally:
            screen.close()
            app.close()

    assert frame.screen_size == Size(1920, 1080) and frame.shot_size == Size(1429, 804)
    assert frame.media_type == f"image/{encoding}"
    full, shot = frame.full_image(), frame.shot_image()
    assert full.size == (1920, 1080) and shot.size == (1429, 804)
    x, y, w, h = probe_app.RED_SQUARE
    assert is_red(full.getpixel((x + w // 2, y + h // 2)))
    assert not is_red(full.getpixel((x + w + 5, y + h // 2)))
    assert is_red(shot.getpixel(((x + w // 2) * 1429 // 1920, (y + h // 2) * 804 // 1080)))


def test_captures_from_several_threads_each_get_their_own_connection() -> None:
    with xvfb(1280, 800) as server:
        screen = X11Screen(server.name)
        sizes: list[Size] = []
        errors: list[BaseException] = []

        def capture() -> None:
            try:
                for _ in range(5):
                    sizes.append(screen.capture().shot_size)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=capture) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        screen.close()

    assert not errors and sizes == [Size(1280, 800)] * 15


def test_grab_returns_the_region_at_full_resolution(tmp_path: Path) -> None:
    with xvfb(1024, 768) as server:
        app = ProbeApp(server, tmp_path / "events.jsonl")
        screen = X11Screen(server.name)
        try:
            x, y, w, h = probe_app.RED_SQUARE
            image = screen.grab(Region(x, y, x + w, y + h))
        finally:
            screen.close()
            app.close()
    assert image.size == (w, h)
    assert all(is_red(image.getpixel((i, j))) for i in (0, w - 1) for j in (0, h - 1))


def test_a_display_that_is_not_there_is_named_with_the_fix() -> None:
    screen = X11Screen(":987")
    with pytest.raises(X11Error, match=r"cannot open X display ':987'.*X server running"):
        screen.capture()
    with pytest.raises(X11Error, match="no X display given"):
        X11Screen("")
