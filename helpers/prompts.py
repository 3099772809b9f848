"""The guide's prompts, and their counterparts for the `shapes` model: the one place that maps them per model.

The notebooks spell the guide's prompts out and pass each through ``for_model``: the real model (and the presets)
get the guide's text unchanged, the `shapes` model gets a prompt from its own small world that teaches the same
lesson (a detailed prompt names the background; the tweaked word is the colour instead of the age).
"""

from __future__ import annotations

from .choice import family

GUIDE_PROMPT = "portrait photo of a old warrior chief"
GUIDE_DETAILS = ", tribal panther make up, blue on red, side profile, looking away, serious eyes"
GUIDE_STYLE = " 50mm portrait photography, hard rim lighting photography--beta --ar 2:3 --beta --upbeta"
GUIDE_AGES = ("the oldest warrior chief", "a old warrior chief", "a warrior chief", "a young warrior chief")

SHAPES = {
    GUIDE_PROMPT: "a red circle",
    GUIDE_DETAILS: " on a black background",
    GUIDE_STYLE: "",
    # The tweak varies one word and keeps the seed: the age for the guide, the colour for shapes.
    GUIDE_AGES[0]: "a red circle",
    GUIDE_AGES[1]: "a yellow circle",
    GUIDE_AGES[2]: "a green circle",
    GUIDE_AGES[3]: "a blue circle",
}


def for_model(text: str, model_id: str) -> str:
    """The guide's ``text`` as it suits ``model_id``: unchanged, or its `shapes` counterpart."""
    if family(model_id) != "shapes":
        return text
    if text not in SHAPES:
        raise KeyError(f"No shapes counterpart for {text!r}: add one to helpers/prompts.py.")
    return SHAPES[text]
