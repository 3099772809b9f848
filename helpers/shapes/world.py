"""The `shapes` world: 64x64 pictures of one filled shape on a plain background, and their captions."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
COLOURS = {  # saturated, well apart in hue
    "red": (230, 25, 25),
    "orange": (250, 135, 0),
    "yellow": (240, 225, 0),
    "green": (20, 175, 40),
    "blue": (30, 70, 235),
    "purple": (145, 35, 210),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {"white": (255, 255, 255), "gray": (128, 128, 128), "black": (0, 0, 0)}
MIN_BOX, MAX_BOX = 20, 44  # the shape's bounding box, in pixels
SUPERSAMPLE = 4  # drawn at 4x and scaled down, for smooth edges
# Every word a caption can hold: the tokenizer keeps these whole.
WORDS = ("a", "on", "background", *COLOURS, *SHAPES, *BACKGROUNDS)


@dataclass(frozen=True)
class Scene:
    """What one picture shows: colour, shape and background names, the shape's centre, box size and rotation."""

    colour: str
    shape: str
    background: str
    cx: float
    cy: float
    box: float
    angle: float


def caption(scene: Scene, name_background: bool = True) -> str:
    """The scene's caption: 'a red circle', or 'a red circle on a white background'."""
    text = f"a {scene.colour} {scene.shape}"
    return f"{text} on a {scene.background} background" if name_background else text


_PROMPT = re.compile(rf"^a ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})(?: on a ({'|'.join(BACKGROUNDS)}) background)?$")


def parse_prompt(prompt: str) -> dict | None:
    """What a caption of this world asks for (colour, shape, background or None); None for any other text."""
    match = _PROMPT.match(" ".join(prompt.lower().split()))
    if not match:
        return None
    colour, shape, background = match.groups()
    return {"colour": colour, "shape": shape, "background": background}


def _outline(shape: str, angle: float) -> np.ndarray:
    """The shape's corners around (0, 0), rotated by ``angle`` and scaled so its bounding box is 1 wide at most."""
    if shape == "circle":
        corners = 64
    else:
        corners = {"square": 4, "triangle": 3}[shape]
    turns = np.arange(corners) * 2 * math.pi / corners + angle
    points = np.stack([np.cos(turns), np.sin(turns)], axis=1)
    return points / (points.max(0) - points.min(0)).max()


def sample_scene(rng: random.Random, colour=None, shape=None, background=None) -> Scene:
    """A random scene (any of colour, shape or background may be fixed); the box lies wholly inside the picture."""
    shape = shape or rng.choice(SHAPES)
    angle = 0.0 if shape == "circle" else rng.uniform(0, 2 * math.pi)
    box = rng.uniform(MIN_BOX, MAX_BOX)
    extent = box * (_outline(shape, angle).max(0) - _outline(shape, angle).min(0))
    lo_x, lo_y = extent / 2 + 1
    return Scene(
        colour=colour or rng.choice(list(COLOURS)),
        shape=shape,
        background=background or rng.choice(list(BACKGROUNDS)),
        cx=rng.uniform(lo_x, SIZE - lo_x),
        cy=rng.uniform(lo_y, SIZE - lo_y),
        box=box,
        angle=angle,
    )


def _draw(scene: Scene, mode: str, background, fill) -> Image.Image:
    """The scene's shape drawn at 4x in ``fill`` on ``background`` and scaled down to 64x64."""
    big = SIZE * SUPERSAMPLE
    picture = Image.new(mode, (big, big), background)
    outline = _outline(scene.shape, scene.angle) * scene.box
    centre = outline.min(0) + (outline.max(0) - outline.min(0)) / 2  # centre the bounding box, not the centroid
    points = (outline - centre + (scene.cx, scene.cy)) * SUPERSAMPLE
    ImageDraw.Draw(picture).polygon([tuple(p) for p in points], fill=fill)
    return picture.resize((SIZE, SIZE), Image.Resampling.BOX)


def render(scene: Scene) -> Image.Image:
    """Draw a scene as a 64x64 RGB picture."""
    return _draw(scene, "RGB", BACKGROUNDS[scene.background], COLOURS[scene.colour])


def shape_mask(scene: Scene) -> np.ndarray:
    """A (64, 64) boolean mask of the pixels that the scene's shape covers at all, as ``render`` draws it."""
    return np.asarray(_draw(scene, "L", 0, 255)) > 0


def sample_batch(rng: random.Random, n: int) -> tuple[np.ndarray, list[Scene]]:
    """``n`` random scenes and their pictures as a uint8 array of shape (n, 64, 64, 3)."""
    scenes = [sample_scene(rng) for _ in range(n)]
    return np.stack([np.asarray(render(s)) for s in scenes]), scenes


def as_tensor(scenes: list[Scene]):
    """The scenes rendered as a (n, 3, 64, 64) float tensor in [-1, 1], as a VAE takes pictures."""
    import torch

    array = np.stack([np.asarray(render(s)) for s in scenes])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 127.5 - 1


def pictures(rng: random.Random, n: int):
    """``n`` random scenes, rendered as a (n, 3, 64, 64) float tensor in [-1, 1], with the scenes."""
    scenes = [sample_scene(rng) for _ in range(n)]
    return as_tensor(scenes), scenes
