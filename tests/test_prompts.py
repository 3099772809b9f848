"""for_model: the guide's prompts unchanged for real models, their counterparts in the shapes world for `shapes`."""

import pytest

from helpers.models import shapes_folder
from helpers.prompts import GUIDE_AGES, GUIDE_DETAILS, GUIDE_PROMPT, GUIDE_STYLE, NEGATIVE, for_model
from helpers.shapes import COLOURS, WORDS

SHAPES = str(shapes_folder())


def test_real_models_get_the_guide_text_unchanged():
    text = GUIDE_PROMPT + GUIDE_DETAILS + GUIDE_STYLE
    assert for_model(text, "stable-diffusion-v1-5/stable-diffusion-v1-5") == text
    assert for_model("anything at all", "some-user/some-model") == "anything at all"


def test_shapes_counterparts_use_only_its_words():
    assert for_model(GUIDE_PROMPT, SHAPES) == "a red circle"  # notebooks 01 and 02 use this one
    detailed = for_model(GUIDE_PROMPT + GUIDE_DETAILS + GUIDE_STYLE, SHAPES)
    assert detailed.startswith("a red circle on a ") and detailed.endswith(" background")
    for text in (detailed, for_model(NEGATIVE, SHAPES)):
        assert set(text.split()) <= set(WORDS)


def test_the_tweak_varies_only_the_colour():
    suffix = GUIDE_DETAILS + GUIDE_STYLE
    prompts = [for_model(f"portrait photo of {age}{suffix}", SHAPES) for age in GUIDE_AGES]
    colours = [word for text in prompts for word in text.split() if word in COLOURS]
    assert len(colours) == len(set(colours)) == len(prompts)
    assert {text.replace(colour, "X") for text, colour in zip(prompts, colours, strict=True)} == {
        prompts[1].replace(colours[1], "X")}
    assert prompts[1] == for_model(GUIDE_PROMPT + suffix, SHAPES)  # the picture you liked: the detailed prompt


def test_shapes_prompts_pass_through_and_unknown_words_are_named():
    assert for_model("a blue  square on a gray background", SHAPES) == "a blue square on a gray background"
    with pytest.raises(KeyError, match="dragon"):
        for_model("a red dragon", SHAPES)
