import numpy as np
import pytest
from PIL import Image

from helpers.checks import asks, judge_table, pixel_difference, same_layout, same_pictures, shows_prompt
from helpers.choice import shapes_folder
from helpers.shapes import Scene, render

SHAPES_ID = str(shapes_folder())


def picture(colour="red", shape="circle", background="white", cx=32.0, cy=32.0, box=30.0):
    return render(Scene(colour, shape, background, cx, cy, box, 0.0))


def test_asks_reads_a_shapes_prompt():
    assert asks("a red circle") == {"colour": "red", "shape": "circle", "background": None}
    assert asks("a blue square on a black background")["background"] == "black"
    with pytest.raises(ValueError, match="not a shapes prompt"):
        asks("portrait photo of a old warrior chief")


def test_shows_prompt_passes_only_when_colour_shape_and_background_match():
    pictures = [picture(), picture(cx=20)]
    verdict = shows_prompt(pictures, "a red circle", SHAPES_ID)
    assert verdict == "2 of 2 pictures show what their prompt asks (a red circle)"
    assert shows_prompt(picture(), "a red circle", SHAPES_ID).startswith("1 of 1 picture shows what its prompt")
    wrong = shows_prompt([picture(), picture(colour="blue")], "a red circle", SHAPES_ID)
    assert wrong.startswith("1 of 2") and "saw blue circle" in wrong
    assert shows_prompt(picture(), "a red circle on a black background", SHAPES_ID).startswith("0 of 1")
    assert shows_prompt(picture(shape="square"), "a red circle", SHAPES_ID).startswith("0 of 1")


def test_other_models_get_the_blank_check_and_no_judge():
    verdict = shows_prompt([picture()], "portrait photo of a old warrior chief", "stable-diffusion-v1-5/x")
    assert verdict.startswith("1 image, none blank or NaN") and "not judged" in verdict
    with pytest.raises(ValueError, match="unusable"):
        shows_prompt([Image.new("RGB", (64, 64))], "anything", "stable-diffusion-v1-5/x")


def test_same_layout_holds_within_the_tolerance_and_fails_beyond_it():
    assert same_layout([picture(), picture(cx=33)], SHAPES_ID, tolerance=3).startswith("all 2 pictures show the same")
    moved = same_layout([picture(), picture(cx=40)], SHAPES_ID, tolerance=3)
    assert moved.startswith("the pictures differ")
    assert same_layout([picture(), picture(colour="green")], SHAPES_ID).startswith("the pictures differ")
    assert "not judged" in same_layout({"a": picture(), "b": picture()}, "some/model")


def test_judge_table_has_a_row_per_picture_with_the_centroid():
    table = judge_table({"left": picture(cx=20), "right": picture(cx=44)}, "a red circle")
    assert list(table.index) == ["left", "right"] and table.ok.all()
    assert abs(table.loc["left", "cx"] - 20) < 1 and abs(table.loc["right", "cx"] - 44) < 1


def test_pixel_difference_in_levels_for_pil_and_float_pictures():
    a = np.zeros((4, 4, 3), dtype=np.uint8)
    b = a.copy()
    b[0, 0, 0] = 48
    assert pixel_difference(Image.fromarray(a), Image.fromarray(b)) == (48.0, 1.0)
    assert pixel_difference(a.astype(np.float32), b.astype(np.float32) / 255) == pytest.approx((48.0, 1.0))
    with pytest.raises(ValueError):
        pixel_difference([a], [a, a])


def test_same_pictures_states_the_tolerance_and_fails_beyond_it():
    a = [picture(), picture(colour="blue")]
    assert same_pictures(a, [p.copy() for p in a]) == (
        "the same 2 pictures: mean pixel difference below 1 of 255 levels for each")
    assert same_pictures(a, [a[0], picture(colour="green")]).startswith("1 of 2 pictures differ")
