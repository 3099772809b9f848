import numpy as np
import pytest
from PIL import Image

from helpers import checks, judged_check, names_detail, same_layout, same_pictures, shows_prompt
from helpers.checks import Check, asks, avoids, judge_of, judge_table
from helpers.compare import pixel_difference
from helpers.models import choose_model, shapes_folder
from helpers.shapes import Scene, render

SHAPES_ID = str(shapes_folder())
REAL_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # any hub id: a trained model other than shapes


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


def test_each_model_has_its_judge():
    assert judge_of(SHAPES_ID) == "shapes" and judge_of(REAL_ID) == "real" and judge_of("some/fine-tune") == "real"
    assert judge_of(choose_model("cpu", "tiny", quiet=True)) is None  # random weights: nothing to judge


def noise(seed: int, n: int = 4) -> list:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]


def test_no_check_passes_noise_or_a_model_it_cannot_judge(monkeypatch):
    """Noise pictures: the shapes judge fails them, a random-weights model is not judged, and a real model's
    checks either measure (CLIP, here faked as unavailable) or say not judged; none of them passes."""
    monkeypatch.setattr(checks, "_clip", lambda: "the CLIP judge could not be loaded: offline")
    tiny = choose_model("cpu", "tiny", quiet=True)
    pictures, others = noise(0), noise(1)
    prompt, detailed = "a red circle", "a red circle on a white background"
    for model_id in (SHAPES_ID, tiny, REAL_ID):
        verdicts = [
            shows_prompt(pictures, prompt, model_id),
            same_layout(pictures, model_id, tolerance=9, others=others),
            names_detail(others, pictures, detailed, model_id),
            avoids(others, pictures, "a gray background", model_id),
            judged_check(True, "a reading of the shapes judge", model_id),
        ]
        for verdict in verdicts[:4] if model_id == SHAPES_ID else verdicts:
            assert verdict.passed is not True, (model_id, verdict)
        if model_id == tiny:
            assert all(v.verdict == "not judged" and str(v).startswith("not judged: ") for v in verdicts)
        if model_id == REAL_ID:  # SSIM needs no CLIP: it measures, and noise keeps no layout
            assert verdicts[1].verdict is False
            assert all(v.verdict == "not judged" for i, v in enumerate(verdicts) if i != 1)
    assert judged_check(True, "a PSNR", tiny, judges=("shapes", "real")).verdict == "not judged"
    assert judged_check(False, "a PSNR", REAL_ID, judges=("shapes", "real")).verdict is False
    with pytest.raises(ValueError, match="unusable"):
        shows_prompt([Image.new("RGB", (64, 64))], "anything", REAL_ID)


class FakeClip:
    """A CLIP judge whose scores are given: the checks' arithmetic, without a model."""

    def __init__(self, picks=None, scores=None):
        self._picks, self._scores = picks, scores or {}

    def picks(self, images, prompts):
        return self._picks[: len(images)]

    def scores(self, images, text):
        return np.array([self._scores[id(image)] for image in images], dtype=float)


def test_a_real_models_checks_read_clip_and_ssim(monkeypatch):
    pictures, others = noise(2), noise(3)
    monkeypatch.setattr(checks, "_clip", lambda: FakeClip(picks=[True, True, False, True]))
    shown = shows_prompt(pictures, "portrait photo of a old warrior chief", REAL_ID)
    assert shown.verdict is False and "picture 2" in shown.detail
    monkeypatch.setattr(checks, "_clip", lambda: FakeClip(picks=[True] * 4))
    assert shows_prompt(pictures, "portrait photo", REAL_ID).verdict is True
    high = {id(p): 30.0 for p in pictures} | {id(p): 20.0 for p in others}
    monkeypatch.setattr(checks, "_clip", lambda: FakeClip(scores=high))
    assert names_detail(others, pictures, "a detailed prompt", REAL_ID).verdict is True
    assert names_detail(pictures, others, "a detailed prompt", REAL_ID).verdict is False
    assert avoids(pictures, others, "blurry", REAL_ID).verdict is True  # lower scores with the negative prompt
    assert avoids(others, pictures, "blurry", REAL_ID).verdict is False
    # layout: copies of one picture resemble each other more than other seeds' pictures do; noise does not
    one = picture(cx=30)
    kept = same_layout([one, one.copy(), picture(colour="blue", cx=30)], REAL_ID, others=[picture(cx=50, cy=12)])
    assert kept.verdict is True and "SSIM" in kept.detail
    moved = same_layout([one, picture(cx=50, cy=12)], REAL_ID, others=[one.copy()])
    assert moved.verdict is False
    assert same_layout([one, one], REAL_ID).verdict == "not judged"  # no other seeds to measure against


def test_same_layout_holds_within_the_tolerance_and_fails_beyond_it():
    near = same_layout([picture(), picture(cx=33)], SHAPES_ID, tolerance=3)
    assert near.passed and near.detail.startswith("all 2 pictures show a circle in the same place")
    moved = same_layout([picture(), picture(cx=40)], SHAPES_ID, tolerance=3)
    assert not moved.passed and moved.detail.startswith("the layouts differ")
    assert same_layout([picture(), picture(colour="green")], SHAPES_ID).passed  # the layout, whatever the colour
    assert not same_layout([picture(), picture(shape="square")], SHAPES_ID).passed
    assert not same_layout([picture(box=20), picture(box=30)], SHAPES_ID, area_ratio=1.25).passed


def test_a_judged_check_holds_as_given_on_shapes_and_is_not_judged_elsewhere():
    assert not judged_check(False, "saw a blue square", SHAPES_ID).passed
    assert judged_check(True, "ok", SHAPES_ID) == Check(True, "ok")
    elsewhere = judged_check(True, "saw a red circle", "some/model")
    assert elsewhere.passed is None and not elsewhere.judged and elsewhere.verdict == "not judged"


def test_the_shapes_readings_of_the_detail_and_the_negative_prompt():
    white, gray = picture(background="white"), picture(background="gray")
    detailed = names_detail([gray] * 8, [white] * 6 + [gray] * 2, "a red circle on a white background", SHAPES_ID)
    assert detailed.passed and detailed.detail == "white: 6 of 8 with the detailed prompt, 0 of 8 without"
    assert not names_detail([gray] * 8, [white] * 5 + [gray] * 3, "a red circle on a white background", SHAPES_ID)\
        .passed  # fewer than 75 %
    assert avoids([gray, gray], [gray, white], "a gray background", SHAPES_ID).passed
    assert not avoids([gray, white], [gray, white], "a gray background", SHAPES_ID).passed
    with pytest.raises(ValueError, match="names no background"):
        avoids([gray], [gray], "blurry", SHAPES_ID)


def test_judge_table_has_a_row_per_picture_with_the_centroid():
    table = judge_table({"left": picture(cx=20), "right": picture(cx=44)}, "a red circle")
    assert list(table.index) == ["left", "right"] and table.ok.all()
    assert abs(table.loc["left", "cx"] - 20) < 1 and abs(table.loc["right", "cx"] - 44) < 1


def test_pixel_difference_in_levels_for_pil_and_float_pictures():
    a = np.zeros((4, 4, 3), dtype=np.uint8)
    b = a.copy()
    b[0, 0, 0] = 48
    diff = pixel_difference(Image.fromarray(a), Image.fromarray(b))
    assert (diff.max, diff.mean) == (48.0, 1.0)
    diff = pixel_difference(a.astype(np.float32), b.astype(np.float32) / 255)
    assert (diff.max, diff.mean) == pytest.approx((48.0, 1.0))
    with pytest.raises(ValueError):
        pixel_difference([a], [a, a])


def test_same_pictures_states_the_tolerance_and_fails_beyond_it():
    a = [picture(), picture(colour="blue")]
    same = same_pictures(a, [p.copy() for p in a])
    assert same.passed and same.detail == (
        "the same 2 pictures: mean pixel difference below 1 of 255 levels for each (the largest mean 0.00)")
    differ = same_pictures(a, [a[0], picture(colour="green")])
    assert not differ.passed and differ.detail.startswith("1 of 2 pictures differ")
