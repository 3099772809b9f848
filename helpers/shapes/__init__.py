"""`shapes`: a tiny synthetic world, a judge for its pictures, and a Stable Diffusion checkpoint trained on it.

``python -m helpers.shapes train`` retrains the model; ``python -m helpers.shapes eval`` measures it.
"""

from .judge import Verdict, analyse, judge
from .world import BACKGROUNDS, COLOURS, SHAPES, WORDS, Scene, caption, render, sample_batch, sample_scene

__all__ = [
    "BACKGROUNDS", "COLOURS", "SHAPES", "WORDS", "Scene", "Verdict", "analyse", "caption", "judge", "render",
    "sample_batch", "sample_scene",
]
