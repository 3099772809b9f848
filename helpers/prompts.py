"""The guide's prompts and their counterparts for the `shapes` model: the one place that maps prompts per model.

The notebooks spell the guide's prompts out and pass each through ``for_model``. The real model (and the presets)
get the text unchanged; the `shapes` model gets each of the guide's phrases swapped for one from its own small world
that teaches the same lesson: the detailed prompt names the background, the tweaked word is the colour instead of
the age, and the negative prompt names a background to avoid.
"""

from __future__ import annotations

import re

from .models import model_kind
from .shapes.world import WORDS

GUIDE_PROMPT = "portrait photo of a old warrior chief"
GUIDE_DETAILS = ", tribal panther make up, blue on red, side profile, looking away, serious eyes"
GUIDE_STYLE = " 50mm portrait photography, hard rim lighting photography--beta --ar 2:3 --beta --upbeta"
GUIDE_AGES = ("the oldest warrior chief", "a old warrior chief", "a warrior chief", "a young warrior chief")
NEGATIVE = "blurry, low quality, deformed, extra fingers, watermark, text"

# Each guide phrase and its shapes counterpart. The guide's tweak varies the chief's age, shapes varies the circle's
# colour ("a old warrior chief" stays red, so the tweak's second prompt is the detailed prompt, as in the guide).
# Measured with the shipped model at seeds 0-7, DPM-Solver++ 20 steps (scripts/check_shapes_seeds.py checks these in
# float32, bfloat16 and float16): "a red circle" is a red circle at all eight seeds, on a gray or a black background
# (how many of each depends on the precision: 4 and 4 in the stored bfloat16 run); naming a white background gives
# white at all eight; a negative prompt naming the gray background leaves fewer gray (3 of 4 seeds gray without it,
# 1 with it, in float32 on an Intel Xeon).
AGE_COLOURS = dict(zip(GUIDE_AGES, ("orange", "red", "yellow", "green"), strict=True))
SHAPES_PHRASES = {
    **{f"portrait photo of {age}": f"a {colour} circle" for age, colour in AGE_COLOURS.items()},
    GUIDE_DETAILS: " on a white background",
    GUIDE_STYLE: "",
    NEGATIVE: "a gray background",
}
_LEFTOVER = re.compile(r"[^\s,]+")


def for_model(text: str, model_id: str) -> str:
    """The prompt ``text`` as it suits ``model_id``: unchanged, or with the guide's phrases in shapes' words.

    For `shapes` and `shapes-flux`, text already in their words ('a blue square on a gray background') passes
    through; any other leftover word raises a KeyError that names it.
    """
    if not model_kind(model_id).startswith("shapes"):  # shapes and shapes-flux draw the same world
        return text
    mapped = text
    for phrase in sorted(SHAPES_PHRASES, key=len, reverse=True):  # longest first: no phrase eats part of another
        mapped = mapped.replace(phrase, SHAPES_PHRASES[phrase])
    unknown = [word for word in _LEFTOVER.findall(mapped) if word.lower() not in WORDS]
    if unknown:
        raise KeyError(f"No shapes counterpart for {text!r} (unknown words: {', '.join(unknown)}): write it in the "
                       f"shapes world's words ({', '.join(WORDS)}) or add a counterpart to helpers/prompts.py.")
    return " ".join(mapped.split())
