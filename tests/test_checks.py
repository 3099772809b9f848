import numpy as np
import pytest
from PIL import Image

from helpers.checks import (
    Check,
    asks,
    judge_table,
    judged_check,
    pixel_difference,
    same_layout,
    same_pictures,
    shows_prompt,
)
from helpers.models import shapes_folder
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
    assert verdict.passed and verdict.judged
    assert verdict.detail == "2 of 2 pictures show what their prompt asks (a red circle)"
    assert str(verdict) == "passed: " + verdict.detail
    one = shows_prompt(picture(), "a red circle", SHAPES_ID)
    assert one.passed and one.detail.startswith("1 of 1 picture shows what its prompt")
    wrong = shows_prompt([picture(), picture(colour="blue")], "a red circle", SHAPES_ID)
    assert not wrong.passed and wrong.detail.startswith("1 of 2") and "saw blue circle" in wrong.detail
    assert str(wrong).startswith("FAILED: ")
    for miss in (shows_prompt(picture(), "a red circle on a black background", SHAPES_ID),
                 shows_prompt(picture(shape="square"), "a red circle", SHAPES_ID)):
        assert not miss.passed and miss.detail.startswith("0 of 1")


def test_other_models_get_the_blank_check_and_no_judge():
    verdict = shows_prompt([picture()], "portrait photo of a old warrior chief", "stable-diffusion-v1-5/x")
    assert verdict.passed and not verdict.judged  # a checked cell prints the same True as on shapes
    assert verdict.detail.startswith("1 image, none blank or NaN") and "not judged" in verdict.detail
    with pytest.raises(ValueError, match="unusable"):
        shows_prompt([Image.new("RGB", (64, 64))], "anything", "stable-diffusion-v1-5/x")


def test_same_layout_holds_within_the_tolerance_and_fails_beyond_it():
    near = same_layout([picture(), picture(cx=33)], SHAPES_ID, tolerance=3)
    assert near.passed and near.detail.startswith("all 2 pictures show the same")
    moved = same_layout([picture(), picture(cx=40)], SHAPES_ID, tolerance=3)
    assert not moved.passed and moved.detail.startswith("the pictures differ")
    assert not same_layout([picture(), picture(colour="green")], SHAPES_ID).passed
    other = same_layout({"a": picture(), "b": picture()}, "some/model")
    assert other.passed and not other.judged and "not judged" in other.detail


def test_a_judged_check_holds_as_given_on_shapes_and_is_not_judged_elsewhere():
    assert not judged_check(False, "saw a blue square", SHAPES_ID).passed
    assert judged_check(True, "ok", SHAPES_ID) == Check(True, "ok")
    elsewhere = judged_check(False, "saw a blue square", "some/model")
    assert elsewhere.passed and not elsewhere.judged


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
    same = same_pictures(a, [p.copy() for p in a])
    assert same.passed and same.detail == (
        "the same 2 pictures: mean pixel difference below 1 of 255 levels for each (the largest mean 0.00)")
    differ = same_pictures(a, [a[0], picture(colour="green")])
    assert not differ.passed and differ.detail.startswith("1 of 2 pictures differ")
