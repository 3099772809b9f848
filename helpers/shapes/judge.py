"""The judge: which colour, shape and background a 64x64 picture shows, and where its shape lies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.colors import rgb_to_hsv
from PIL import Image

from .world import BACKGROUNDS, COLOURS, MAX_BOX

_HUES = {name: float(rgb_to_hsv(np.array(rgb) / 255)[0]) for name, rgb in COLOURS.items()}
OFF_BACKGROUND = 40  # a pixel is off the background if any channel differs from it by more than this (of 255)
# Shape by how far its farthest pixel lies from its centroid, relative to its area (rotation-free): a disc gives
# 1/pi = 0.32, a square 0.5, an equilateral triangle 0.77. The mask holds the shape's soft edge too, which makes a
# rendered disc read 0.31-0.33 and a square 0.43-0.50 (issue #25, 2,000 renders): hence these thresholds.
_SQUARE_FROM, _TRIANGLE_FROM = 0.38, 0.56
_MIN_AREA, _MAX_AREA = 20, (MAX_BOX + 2) ** 2  # pixels: fewer is no shape, more is no plain background


@dataclass(frozen=True)
class Verdict:
    """What the judge saw. ``shape`` and ``colour`` are None when no shape is visible."""

    colour: str | None
    shape: str | None
    background: str
    cx: float  # centroid, pixels
    cy: float
    area: int  # pixels covered by the shape


def _as_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    image = np.asarray(image)
    if image.dtype != np.uint8:  # floats in 0..1, as pipelines return with output_type="np"
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return image


def _hue_distance(a, b):
    """How far apart two hues are around the colour circle (0..0.5)."""
    d = np.abs(np.asarray(a) - b) % 1
    return np.minimum(d, 1 - d)


def _background(rgb: np.ndarray) -> str:
    """The named background nearest the median level of the picture's border (rgb as floats in 0..1)."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    level = float(np.median(border))
    return min(BACKGROUNDS, key=lambda name: abs(BACKGROUNDS[name][0] / 255 - level))


def off_background(image, background: str) -> np.ndarray:
    """Pixels that differ from the named background colour by more than ``OFF_BACKGROUND`` in any channel."""
    rgb = _as_array(image).astype(np.int16)
    return (np.abs(rgb - np.array(BACKGROUNDS[background])) > OFF_BACKGROUND).any(-1)


def _shape_of(mask: np.ndarray) -> tuple[str, float, float]:
    """(shape, cx, cy) of a mask: how far its farthest pixel lies from its centroid, relative to its area."""
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    spread = ((ys - cy) ** 2 + (xs - cx) ** 2).max() / mask.sum()
    shape = "circle" if spread < _SQUARE_FROM else "square" if spread < _TRIANGLE_FROM else "triangle"
    return shape, float(cx), float(cy)


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean mask (drops specks of noise)."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    best, best_size, label = None, 0, 0
    for start in zip(*np.nonzero(mask), strict=True):
        if labels[start]:
            continue
        label += 1
        stack, size = [start], 0
        labels[start] = label
        while stack:
            y, x = stack.pop()
            size += 1
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = label
                    stack.append((ny, nx))
        if size > best_size:
            best, best_size = label, size
    return labels == best if best else mask


def analyse(image) -> Verdict:
    """Judge a picture (PIL image, uint8 array, or floats in 0..1) from every pixel that differs from its background.

    Strict on purpose: no largest blob, no filtering by hue, so a speck or fringe of stray colour anywhere changes
    the shape's outline (and may change its colour) as a viewer would see it; a model is not forgiven its artefacts.

    The colour is the hue of those pixels, each weighted by its chroma (so the soft edge, half background, counts
    little); no shape when fewer than 20 pixels, or more than a shape's largest box could cover, differ.
    """
    rgb8 = _as_array(image)
    rgb = rgb8.astype(np.float32) / 255
    background = _background(rgb)
    mask = off_background(rgb8, background)
    area = int(mask.sum())
    chroma = rgb.max(-1) - rgb.min(-1)
    if not _MIN_AREA <= area <= _MAX_AREA or chroma[mask].sum() == 0:
        return Verdict(None, None, background, float("nan"), float("nan"), area)
    hue = rgb_to_hsv(rgb)[..., 0]
    turns = np.exp(2j * np.pi * hue[mask])
    angle = float(np.angle((turns * chroma[mask]).sum()) / (2 * np.pi) % 1)
    colour = min(_HUES, key=lambda name: _hue_distance(_HUES[name], angle))
    shape, cx, cy = _shape_of(mask)
    return Verdict(colour, shape, background, cx, cy, area)


def judge(image) -> tuple[str | None, str | None, str]:
    """(colour, shape, background) that a picture shows; colour and shape are None if no shape is visible."""
    verdict = analyse(image)
    return verdict.colour, verdict.shape, verdict.background
