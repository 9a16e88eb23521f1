"""Screenshot sizes and the mapping between screenshot and screen pixels (pure, no display)."""

from __future__ import annotations

import pytest
from anthropic.tools import ToolError

from computer_use.screen.scaling import (
    MAX_LONG_EDGE_PX,
    MAX_PIXELS,
    ImageLimits,
    Point,
    Region,
    Scaler,
    Size,
    fit_size,
)

SCREENS = [Size(1024, 768), Size(1280, 800), Size(1920, 1080), Size(2560, 1440)]


@pytest.mark.parametrize("screen", SCREENS, ids=str)
def test_screenshot_fits_the_model_limits_with_the_aspect_kept(screen: Size) -> None:
    shot = fit_size(screen)
    assert max(shot) <= MAX_LONG_EDGE_PX
    assert shot.width * shot.height <= MAX_PIXELS
    # Aspect kept to within the pixel that flooring costs.
    assert abs(shot.width / shot.height - screen.width / screen.height) < 2 / shot.height
    # As large as the limits allow: one more pixel on each side would not fit.
    if shot != screen:
        assert not ImageLimits().fits(Size(shot.width + 2, shot.height + 2))


def test_screens_within_the_limits_are_not_scaled() -> None:
    assert fit_size(Size(1024, 768)) == Size(1024, 768)
    assert fit_size(Size(1280, 800)) == Size(1280, 800)
    assert fit_size(Size(1920, 1080)) == Size(1429, 804)


def test_zoom_sizes_are_scaled_up_to_the_budget_only_when_asked() -> None:
    assert fit_size(Size(100, 50)) == Size(100, 50)
    big = fit_size(Size(100, 50), upscale=True)
    assert ImageLimits().fits(big) and big.width == 2 * big.height and big.width > 1400


@pytest.mark.parametrize("screen", SCREENS, ids=str)
def test_every_screenshot_pixel_lands_within_one_screen_pixel_of_the_exact_point(
    screen: Size,
) -> None:
    scaler = Scaler.for_screen(screen)
    for x in range(scaler.shot.width):
        landed = scaler.to_screen((x, 0)).x
        assert abs(landed - x * scaler.scale_x) <= 1, (x, landed)
        assert 0 <= landed < screen.width
    for y in range(scaler.shot.height):
        landed = scaler.to_screen((0, y)).y
        assert abs(landed - y * scaler.scale_y) <= 1, (y, landed)
        assert 0 <= landed < screen.height


@pytest.mark.parametrize("screen", SCREENS, ids=str)
def test_screen_to_screenshot_inverts_the_mapping(screen: Size) -> None:
    scaler = Scaler.for_screen(screen)
    for x in range(0, scaler.shot.width, 7):
        for y in range(0, scaler.shot.height, 53):
            assert scaler.to_shot(scaler.to_screen((x, y))) == Point(x, y)


def test_points_just_outside_are_pulled_onto_the_edge() -> None:
    scaler = Scaler.for_screen(Size(1920, 1080))
    assert scaler.to_screen((-3, -1)) == Point(0, 0)
    assert scaler.to_screen((1429, 804)) == Point(1919, 1079)
    assert scaler.to_screen((1440, 810)) == Point(1919, 1079)


@pytest.mark.parametrize("point", [(1920, 500), (500, 1080), (-200, 10), (10, -90), (10**9, 0)])
def test_points_far_outside_are_refused_with_the_screenshot_size(point: tuple[int, int]) -> None:
    scaler = Scaler.for_screen(Size(1920, 1080))
    with pytest.raises(ToolError) as refused:
        scaler.to_screen(point)
    message = str(refused.value)
    assert "1429x804 screenshot" in message and "not screen pixels" in message


def test_regions_map_to_the_screen_area_they_show() -> None:
    scaler = Scaler.for_screen(Size(1920, 1080))
    assert scaler.region_to_screen((0, 0, 1429, 804)) == Region(0, 0, 1920, 1080)
    region = scaler.region_to_screen((100, 100, 200, 150))
    assert abs(region.x0 - 100 * scaler.scale_x) <= 1 and abs(region.x1 - 200 * scaler.scale_x) <= 1
    assert abs(region.y0 - 100 * scaler.scale_y) <= 1 and abs(region.y1 - 150 * scaler.scale_y) <= 1
    # Just past the far edge is clamped.
    assert scaler.region_to_screen((1400, 800, 1435, 806)) == Region(
        scaler.region_to_screen((1400, 800, 1429, 804)).x0, 1074, 1920, 1080
    )


@pytest.mark.parametrize("region", [(10, 10, 10, 20), (50, 10, 20, 30), (0, 30, 40, 5)])
def test_empty_or_inverted_regions_are_refused(region: tuple[int, int, int, int]) -> None:
    with pytest.raises(ToolError, match="empty or inverted"):
        Scaler.for_screen(Size(1280, 800)).region_to_screen(region)


def test_nonsense_limits_and_screens_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        ImageLimits(max_long_edge_px=0)
    with pytest.raises(ValueError, match="at least 1x1"):
        fit_size(Size(0, 768))
