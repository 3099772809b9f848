"""How far pictures are from a baseline's, in levels of 255."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def _levels(images) -> np.ndarray:
    """Pictures (PIL, uint8 arrays, or float arrays in [0, 1] as ``output_type="np"`` gives) in levels of 255."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    if isinstance(images, np.ndarray):  # floats are in [0, 1], integers already in levels
        scale = 255.0 if np.issubdtype(images.dtype, np.floating) else 1.0
        return images.astype(np.float64) * scale
    if isinstance(images, list | tuple):
        return np.stack([_levels(image) for image in images])
    return np.asarray(images, dtype=np.float64)


@dataclass
class PixelDifference:
    """Largest and mean absolute difference between two sets of pictures, in levels of 255."""

    max: float
    mean: float

    def within(self, mean: float, max: float | None = None) -> bool:  # noqa: A002 - the field's own name
        """Whether the mean (and, if given, the largest) difference stays within the tolerance."""
        return self.mean <= mean and (max is None or self.max <= max)

    def __str__(self) -> str:
        return f"max {self.max:.1f}, mean {self.mean:.2f} levels of 255"

    __repr__ = __str__


def pixel_difference(images, baseline) -> PixelDifference:
    """Largest and mean absolute pixel difference between ``images`` and ``baseline`` (same count and size)."""
    a, b = _levels(images), _levels(baseline)
    if a.shape != b.shape:
        raise ValueError(f"Cannot compare pictures of shape {a.shape} with {b.shape}: use the same batch and size.")
    diff = np.abs(a - b)
    return PixelDifference(float(diff.max()), float(diff.mean()))
