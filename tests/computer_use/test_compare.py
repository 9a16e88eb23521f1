"""The screen-change rule of `approval.compare`, one test per clause, on synthetic screens."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from computer_use.approval.compare import Box, CompareRules, action_targets, compare

SIZE = (1024, 768)


def screen() -> Image.Image:
    """A desktop-like screen: a grey background, a white window with a title bar and text."""
    image = Image.new("RGB", SIZE, (60, 64, 72))
    draw = ImageDraw.Draw(image)
    draw.rectangle((100, 80, 700, 500), fill="white", outline="black")
    draw.rectangle((100, 80, 700, 104), fill=(40, 90, 160))
    for row in range(8):
        draw.text((120, 130 + row * 20), f"line {row} of some text in the window", fill="black")
    draw.rectangle((560, 440, 680, 480), fill=(220, 220, 220), outline="black")
    draw.text((600, 452), "OK", fill="black")
    return image


def changed(paint: object) -> Image.Image:
    image = screen()
    paint(ImageDraw.Draw(image))  # type: ignore[operator]
    return image


OK_BUTTON = (620, 460)
# Panels a window manager would report outside its work area: a top bar and a bottom bar.
TOP_PANEL = Box(0, 0, 1024, 48)
BOTTOM_PANEL = Box(0, 736, 1024, 768)
PANELS = (TOP_PANEL, BOTTOM_PANEL)


def test_an_identical_screen_does_not_matter() -> None:
    result = compare(screen(), screen(), [OK_BUTTON])
    assert not result.matters
    assert result.reason == "the screen did not change"
    assert result.boxes == () and result.ignored == ()


def test_a_screen_of_another_size_matters() -> None:
    result = compare(screen(), screen().resize((800, 600)), [OK_BUTTON])
    assert result.matters
    assert "1024x768 to 800x600" in result.reason


def test_differences_below_the_tolerance_do_not_matter() -> None:
    # A uniform shift of 8 levels everywhere (a colour-profile or dithering jitter).
    after = screen().point(lambda v: min(255, v + 8))
    assert not compare(screen(), after, [OK_BUTTON]).matters
    # The same shift beyond the tolerance is a repaint of the whole screen.
    after = screen().point(lambda v: min(255, v + 40) if v < 200 else v - 40)
    assert compare(screen(), after, [OK_BUTTON]).matters


def test_a_window_moved_over_the_target_matters() -> None:
    after = changed(
        lambda d: d.rectangle((500, 380, 900, 680), fill=(250, 250, 200), outline="red")
    )
    result = compare(screen(), after, [OK_BUTTON])
    assert result.matters
    assert result.reason.startswith("something new covers the target at (620, 460)")
    assert result.boxes == (Box(500, 380, 901, 681),)


def test_a_small_change_near_the_target_matters() -> None:
    # A checkbox ticked 30 px left of the OK button: small, but where the person is clicking.
    def tick(draw: ImageDraw.ImageDraw) -> None:
        draw.line((580, 455, 584, 462, 592, 448), fill="black", width=2)

    result = compare(screen(), changed(tick), [(620, 460)])
    assert result.matters
    assert "px from the target (620, 460)" in result.reason
    assert len(result.boxes) == 1


def test_a_small_change_in_the_body_of_the_screen_matters() -> None:
    # "$10" becoming "$10,000" beside the button the person approved: what they judged changed.
    def amount(text: str) -> Image.Image:
        image = screen()
        ImageDraw.Draw(image).text((150, 440), text, fill="black")
        return image

    result = compare(amount("Transfer $10"), amount("Transfer $10,000"), [OK_BUTTON])
    assert result.matters
    assert result.reason.startswith("the screen changed in 1 place (largest ")


def test_a_small_change_in_a_panel_is_ignored_and_elsewhere_at_the_edge_it_is_not() -> None:
    def tray(draw: ImageDraw.ImageDraw) -> None:
        draw.rectangle((980, 8, 1000, 28), fill="green")  # a tray icon lighting up

    result = compare(screen(), changed(tray), [OK_BUTTON], panels=PANELS)
    assert not result.matters
    assert result.reason == "only a small area in a panel changed; ignored"
    assert len(result.ignored) == 1
    # With no panel there, the same pixels are a window's content at the top: they matter.
    assert compare(screen(), changed(tray), [OK_BUTTON]).matters
    assert compare(screen(), changed(tray), [OK_BUTTON], panels=[BOTTOM_PANEL]).matters


def test_a_blinking_i_beam_caret_at_the_target_is_ignored() -> None:
    after = changed(lambda d: d.line((620, 452, 620, 468), fill="black", width=2))
    result = compare(screen(), after, [(621, 460)])
    assert not result.matters
    assert result.reason == "only a caret changed; ignored"


def test_a_blinking_block_caret_near_the_target_is_ignored_but_a_square_dot_is_not() -> None:
    block = changed(lambda d: d.rectangle((600, 450, 606, 463), fill="black"))
    assert not compare(screen(), block, [OK_BUTTON]).matters
    # A radio button's 8x8 dot is square, not a caret: it matters at the target.
    dot = changed(lambda d: d.ellipse((600, 450, 607, 457), fill="black"))
    assert compare(screen(), dot, [OK_BUTTON]).matters


def pointer_at(draw: ImageDraw.ImageDraw, x: int, y: int) -> None:
    draw.polygon([(x, y), (x, y + 18), (x + 5, y + 14), (x + 12, y + 14)], fill="black")


def test_a_change_at_the_target_matters_even_where_the_pointer_is() -> None:
    # Captures carry no cursor image: a small change under the pointer is the screen itself.
    after = changed(lambda d: pointer_at(d, *OK_BUTTON))
    result = compare(screen(), after, [OK_BUTTON], pointers=[OK_BUTTON])
    assert result.matters
    assert result.reason.startswith("the screen changed at the target (620, 460)")


def test_a_pointer_that_moved_far_from_the_target_is_ignored_when_known() -> None:
    before = changed(lambda d: pointer_at(d, 300, 300))
    after = changed(lambda d: pointer_at(d, 800, 600))
    result = compare(before, after, [(150, 150)], pointers=[(300, 300), (800, 600)])
    assert not result.matters
    assert len(result.ignored) == 2
    # Unexplained, two small shapes changing in the body of the screen matter.
    assert compare(before, after, [(150, 150)]).matters


def test_a_clock_updating_in_a_corner_is_ignored() -> None:
    def clock(text: str) -> Image.Image:
        image = screen()
        draw = ImageDraw.Draw(image)
        draw.rectangle((900, 740, 1024, 768), fill=(30, 30, 30))
        draw.text((910, 748), text, fill="white")
        return image

    result = compare(clock("12:41:07"), clock("12:41:08"), [OK_BUTTON], panels=PANELS)
    assert not result.matters
    assert len(result.ignored) == 1 and result.ignored[0].left >= 900


def test_a_dialog_away_from_the_target_matters() -> None:
    after = changed(
        lambda d: d.rectangle((150, 150, 450, 350), fill=(200, 200, 230), outline="black")
    )
    result = compare(screen(), after, [OK_BUTTON])
    assert result.matters
    assert result.reason == "the screen changed in 1 place (largest 301x201, 7.7% of the screen)"


def test_many_small_changes_matter_as_a_re_rendered_screen() -> None:
    def spots(count: int) -> Image.Image:
        image = screen()
        draw = ImageDraw.Draw(image)
        for i in range(count):
            draw.text((60 + i * 200, 20), f"new {i}", fill="yellow")  # the top panel
        return image

    assert not compare(screen(), spots(3), [(150, 600)], panels=PANELS).matters
    result = compare(screen(), spots(4), [(150, 600)], panels=PANELS)
    assert result.matters
    assert result.reason.startswith("the screen changed in 4 places")
    assert len(result.boxes) == 4


def test_more_than_one_percent_of_the_screen_changed_matters() -> None:
    # Three solid strips in the top panel, each small enough to be ignored on its own.
    def strips(draw: ImageDraw.ImageDraw) -> None:
        for i in range(3):
            draw.rectangle((100 + i * 300, 0, 259 + i * 300, 47), fill="orange")  # the top panel

    result = compare(screen(), changed(strips), [(150, 600)], panels=PANELS)
    assert result.matters
    assert "3 places" in result.reason and "2.9% of the screen" in result.reason


def test_both_ends_of_a_drag_are_targets() -> None:
    after = changed(lambda d: d.rectangle((880, 600, 890, 610), fill="red"))
    assert "target" not in compare(screen(), after, [(200, 200)]).reason
    result = compare(screen(), after, [(200, 200), (900, 620)])
    assert result.matters and "from the target (900, 620)" in result.reason


def test_changes_a_few_pixels_apart_form_one_region() -> None:
    after = changed(lambda d: d.text((300, 600), "Saving... done", fill="white"))
    result = compare(screen(), after, [(300, 610)])
    assert len(result.boxes) == 1


def test_the_thresholds_are_settings() -> None:
    near = changed(lambda d: d.rectangle((650, 490, 660, 500), fill="red"))
    assert "from the target" in compare(screen(), near, [OK_BUTTON]).reason
    narrow = CompareRules(target_radius_px=20)
    assert "from the target" not in compare(screen(), near, [OK_BUTTON], rules=narrow).reason
    tray = changed(lambda d: d.rectangle((980, 8, 1000, 28), fill="green"))
    assert not compare(screen(), tray, [OK_BUTTON], panels=PANELS).matters
    tiny = CompareRules(small_region_px=(10, 10))
    assert compare(screen(), tray, [OK_BUTTON], panels=PANELS, rules=tiny).matters


def test_images_in_other_modes_are_compared_as_rgb() -> None:
    before = screen().convert("RGBA")
    after = changed(lambda d: d.rectangle((500, 380, 900, 680), fill="white")).convert("RGBA")
    assert compare(before, after, [OK_BUTTON]).matters
    assert not compare(before, screen().convert("RGBA"), [OK_BUTTON]).matters


@pytest.mark.parametrize(
    ("member", "input", "expected"),
    [
        ("left_click", {"coordinate": [10, 20]}, [(10, 20)]),
        ("left_click", {}, []),
        ("left_click_drag", {"start_coordinate": [1, 2], "coordinate": [3, 4]}, [(1, 2), (3, 4)]),
        ("scroll", {"coordinate": [5.6, 7.2], "scroll_direction": "up"}, [(6, 7)]),
        ("left_click", {"target": {"type": "coordinate", "x": 9, "y": 8}}, [(9, 8)]),
        ("left_click", {"target": {"type": "ref", "ref": "e12"}}, []),
        (
            "left_click_drag",
            {"from": {"type": "coordinate", "x": 1, "y": 1}, "target": {"x": 2, "y": 2}},
            [(1, 1), (2, 2)],
        ),
        ("left_click", {"coordinate": [True, 3]}, []),
        ("left_click", {"coordinate": "10,20"}, []),
        ("left_click", {"coordinate": [1, 2, 3]}, []),
        ("type", {"text": "hello"}, []),
    ],
)
def test_action_targets(
    member: str, input: dict[str, object], expected: list[tuple[int, int]]
) -> None:
    assert action_targets(member, input) == expected
