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


def layout_similarity(a, b, size: int = 64) -> float:
    """SSIM (Wang et al. 2004) of two pictures' grey levels at ``size`` x ``size``: 1 for the same layout (03).

    The structural similarity index compares local means, contrasts and correlations in an 11-pixel Gaussian
    window (sigma 1.5), the standard settings; shrinking both pictures first makes it read composition, not detail.
    """
    from PIL import Image

    def grey(picture) -> torch.Tensor:
        if not isinstance(picture, Image.Image):
            picture = Image.fromarray(np.clip(_levels(picture), 0, 255).astype(np.uint8))
        small = picture.convert("L").resize((size, size), Image.Resampling.BILINEAR)
        return torch.tensor(np.asarray(small, dtype=np.float64))[None, None]

    x, y = grey(a), grey(b)
    ticks = torch.arange(11, dtype=torch.float64) - 5
    bell = torch.exp(-(ticks**2) / (2 * 1.5**2))
    window = (bell[:, None] * bell[None, :] / bell.sum() ** 2)[None, None]

    def blur(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(t, window)

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ssim = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(ssim.mean())
