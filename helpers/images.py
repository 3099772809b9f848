"""Image grids (diffusers' make_image_grid, plus a captioned one) and a blank/NaN check."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

import numpy as np
from diffusers.utils import make_image_grid
from PIL import Image, ImageDraw, ImageFont

__all__ = ["make_image_grid", "captioned_grid", "image_problems", "check_images"]


GUTTER = 4  # white pixels between columns, so that two pictures with the same background stay two


def wrap_caption(caption: str, chars: int) -> list[str]:
    """A caption's lines of at most ``chars`` characters; a longer word breaks after a dot or before a capital."""
    lines = [""]
    for word in caption.split():
        parts = re.split(r"(?<=\.)(?=\w)|(?<=[a-z])(?=[A-Z])", word) if len(word) > chars else [word]
        for i, part in enumerate(parts):
            joined = lines[-1] + ("" if i or not lines[-1] else " ") + part
            if len(joined) <= chars or not lines[-1]:
                lines[-1] = joined
            else:
                lines.append(part)
    return [piece for line in lines for piece in textwrap.wrap(line, chars) or [""]]


def captioned_grid(images: Sequence[Image.Image], captions: Sequence[str], rows: int, cols: int) -> Image.Image:
    """A rows x cols grid with each image's caption written under it, wrapped to the image's width."""
    if len(images) != len(captions) or len(images) != rows * cols:
        raise ValueError(f"Need rows*cols = {rows * cols} images and as many captions; "
                         f"got {len(images)} images and {len(captions)} captions.")
    font = ImageFont.load_default()
    chars = max(8, images[0].width // 6)  # Pillow's default bitmap font is about 6 pixels per character
    lines = [wrap_caption(c, chars) for c in captions]
    line_h = 12
    pad = line_h * max(len(x) for x in lines) + 6
    cells = []
    for img, text in zip(images, lines, strict=True):
        cell = Image.new("RGB", (img.width + GUTTER, img.height + pad), "white")
        cell.paste(img, (0, 0))
        draw = ImageDraw.Draw(cell)
        for i, line in enumerate(text):
            draw.text((3, img.height + 3 + i * line_h), line, fill="black", font=font)
        cells.append(cell)
    return make_image_grid(cells, rows, cols)


def image_problems(image) -> list[str]:
    """What is wrong with one image (a PIL image or an array): NaN values, or blank (a single colour)."""
    arr = np.asarray(image, dtype=np.float32)
    problems = []
    if np.isnan(arr).any():
        problems.append("NaN values")
    elif float(np.nanmax(arr) - np.nanmin(arr)) == 0.0:
        problems.append("blank (one colour; in float16 a VAE overflow or the safety checker does this)")
    return problems


SAFETY_NOTE = ("blacked out by the safety checker (nsfw_content_detected; with a harmless prompt this is a false "
               "positive: change the seed, or load the pipeline with safety_checker=None)")
MPS_NOTE = ("on Apple MPS, sliced and classic attention can give NaN/black images (diffusers issue #14438): "
            "use the default SDPA attention there")


def check_images(images, expected: int | None = None, nsfw=None, device=None) -> str:
    """Check a batch: the expected count, and no blank or NaN image; returns a one-line verdict, raises if bad.

    ``images`` may be a pipeline's output: its ``nsfw_content_detected`` flags (or ``nsfw=``) mark images the
    safety checker blacked out, which are reported in the verdict, not raised. On Apple MPS, where a known bug
    in attention gives black images, bad images are flagged in the verdict instead of raised.
    """
    import torch

    from .device import pick_device

    if hasattr(images, "images"):
        nsfw = getattr(images, "nsfw_content_detected", None) if nsfw is None else nsfw
        images = images.images
    images = list(images)
    if expected is not None and len(images) != expected:
        raise ValueError(f"Expected {expected} images, got {len(images)}.")
    flags = list(nsfw) if nsfw is not None else [False] * len(images)
    if len(flags) != len(images):
        raise ValueError(f"Got {len(flags)} safety-checker flags for {len(images)} images.")
    censored = [i for i, flagged in enumerate(flags) if flagged]
    bad = {i: p for i, img in enumerate(images) if i not in censored and (p := image_problems(img))}
    plural = "s" if len(images) != 1 else ""
    verdict = f"{len(images)} image{plural}, none blank or NaN"
    if censored:
        verdict = (f"{len(images)} image{plural}, {len(censored)} {SAFETY_NOTE}: "
                   f"{', '.join(map(str, censored))}; the others fine")
    if bad:
        detail = "; ".join(f"image {i}: {', '.join(p)}" for i, p in bad.items())
        message = f"{len(bad)} of {len(images)} images are unusable: {detail}"
        device = torch.device(device) if device is not None else pick_device()
        if device.type != "mps":
            raise ValueError(message)
        return f"FLAGGED: {message} ({MPS_NOTE})"
    return verdict
