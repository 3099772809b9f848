"""`shapes`: a tiny synthetic world, a judge for its pictures, and a Stable Diffusion checkpoint trained on it.

``python -m helpers.shapes train`` retrains the model; ``python -m helpers.shapes eval`` measures it. The shipped
checkpoints live in ``weights/`` (``shapes``, ``shapes-vae-ft`` and the run's ``training.json``), inside the package,
so that an installed wheel has them too.
"""

from .judge import Verdict, analyse, judge
from .world import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    WORDS,
    Scene,
    caption,
    parse_prompt,
    render,
    sample_batch,
    sample_scene,
)

__all__ = [
    "BACKGROUNDS", "COLOURS", "SHAPES", "WORDS", "Scene", "Verdict", "analyse", "caption", "judge", "parse_prompt",
    "render", "sample_batch", "sample_scene",
]
