"""Checks for the notebooks' pictures: each returns a ``Check``, whether it passed and what it saw.

``shows_prompt`` asks the `shapes` judge whether each picture shows what its prompt asks; ``same_layout`` whether
several pictures show the same shape in the same place; ``same_pictures`` whether two sets of pictures are equal
within a stated pixel tolerance. The judge knows only the `shapes` world: for other models the first two check
what can be checked everywhere (no blank or NaN picture) and say that the rest was not judged. A notebook's
checked cell prints ``check.passed``, the same on every machine and model; the detail goes in a cell beside it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from . import compare
from .images import check_images
from .models import model_kind
from .shapes import COLOURS, SHAPES, analyse, parse_prompt

NOT_JUDGED = "not judged: the judge reads only the shapes model's pictures"


@dataclass(frozen=True)
class Check:
    """A lesson's check: ``passed`` (what a checked cell prints) and ``detail``, what it saw (model-specific)."""

    passed: bool
    detail: str
    judged: bool = True  # False where only the blank/NaN check applied: the judge reads shapes pictures only

    def __str__(self) -> str:
        return f"{'passed' if self.passed else 'FAILED'}: {self.detail}"

    __repr__ = __str__


def judged_check(passed: bool, detail: str, model_id: str) -> Check:
    """A check that only the judge can make: as given on `shapes`, passed and marked not judged elsewhere."""
    if model_kind(model_id) != "shapes":
        return Check(True, NOT_JUDGED, judged=False)
    return Check(bool(passed), detail)


def asks(prompt: str) -> dict:
    """What a `shapes` prompt asks for: colour, shape, and background (None when the prompt names none)."""
    wanted = parse_prompt(prompt)
    if wanted is None:
        raise ValueError(f"{prompt!r} is not a shapes prompt: write 'a red circle' or 'a red circle on a black "
                         f"background' with a colour from {', '.join(COLOURS)} and a shape from {', '.join(SHAPES)}.")
    return wanted


def _labelled(images, labels) -> tuple[list, list[str]]:
    if isinstance(images, Mapping):
        return list(images.values()), [str(k) for k in images]
    images = list(images) if isinstance(images, Iterable) and not hasattr(images, "size") else [images]
    labels = [str(x) for x in labels] if labels is not None else [f"picture {i}" for i in range(len(images))]
    if len(labels) != len(images):
        raise ValueError(f"Got {len(images)} pictures and {len(labels)} labels.")
    return images, labels


def _prompts(prompts: str | Sequence[str], n: int) -> list[str]:
    prompts = [prompts] * n if isinstance(prompts, str) else list(prompts)
    if len(prompts) != n:
        raise ValueError(f"Got {len(prompts)} prompts for {n} pictures.")
    return prompts


def judge_table(images, prompts: str | Sequence[str], labels: Sequence[str] | None = None) -> pd.DataFrame:
    """What the judge sees in each `shapes` picture beside what its prompt asks: one row per picture.

    ``images`` is a list of pictures or a {label: picture} dict. Columns: prompt, seen colour, shape and background,
    centroid (cx, cy, pixels), area (pixels), and ``ok``: colour, shape and any named background all match.
    """
    images, labels = _labelled(images, labels)
    rows = []
    for label, image, prompt in zip(labels, images, _prompts(prompts, len(images)), strict=True):
        want, seen = asks(prompt), analyse(image)
        ok = (seen.colour, seen.shape) == (want["colour"], want["shape"]) and want["background"] in (
            None, seen.background)
        rows.append({"picture": label, "prompt": prompt, "colour": seen.colour, "shape": seen.shape,
                     "background": seen.background, "cx": round(seen.cx, 1), "cy": round(seen.cy, 1),
                     "area": seen.area, "ok": ok})
    return pd.DataFrame(rows).set_index("picture")


def _seen(row) -> str:
    return f"{row['colour']} {row['shape']}" if row["shape"] else "no shape"


def shows_prompt(images, prompts: str | Sequence[str], model_id: str, labels: Sequence[str] | None = None) -> Check:
    """Whether every picture shows what its prompt asks (by the judge, for `shapes`).

    Raises if a picture is blank or NaN, for every model. For other models than `shapes` it says so and stops there.
    """
    images, labels = _labelled(images, labels)
    basics = check_images(images)
    if model_kind(model_id) != "shapes":
        return Check(True, f"{basics}; {NOT_JUDGED}", judged=False)
    table = judge_table(images, prompts, labels)
    n, bad = len(table), table[~table.ok]
    if bad.empty:
        asked = ", ".join(dict.fromkeys(table.prompt))
        return Check(True, f"{n} of {n} picture{'s show' if n != 1 else ' shows'} what "
                           f"{'their' if n != 1 else 'its'} prompt asks ({asked})")
    misses = "; ".join(f"{label}: asked {row['prompt']!r}, saw {_seen(row)} on {row['background']}"
                       for label, row in bad.iterrows())
    return Check(False, f"{n - len(bad)} of {n} pictures show what their prompt asks; {misses}")


def same_layout(images, model_id: str, tolerance: float = 3.0, labels: Sequence[str] | None = None) -> Check:
    """Whether the pictures show the same colour and shape with centroids within ``tolerance`` pixels of each other.

    For `shapes` only (by the judge); other models get the blank/NaN check and a note that the layout was not judged.
    """
    images, labels = _labelled(images, labels)
    basics = check_images(images)
    if model_kind(model_id) != "shapes":
        return Check(True, f"{basics}; {NOT_JUDGED}", judged=False)
    seen = [analyse(image) for image in images]
    first = seen[0]
    kinds = {(v.colour, v.shape) for v in seen}
    spread = max(math.dist((a.cx, a.cy), (b.cx, b.cy)) for a in seen for b in seen)
    if len(kinds) == 1 and first.shape and spread <= tolerance:
        return Check(True, f"all {len(seen)} pictures show the same {first.colour} {first.shape}, "
                           f"centroids within {tolerance:g} px of each other")
    where = "; ".join(f"{label}: {v.colour or 'no'} {v.shape or 'shape'} at ({v.cx:.1f}, {v.cy:.1f})"
                      for label, v in zip(labels, seen, strict=True))
    return Check(False, f"the pictures differ (tolerance {tolerance:g} px): {where}")


def pixel_difference(a, b) -> tuple[float, float]:
    """Largest and mean absolute difference between two pictures (or two lists of them), in 0-255 levels."""
    diff = compare.pixel_difference(a, b)
    return diff.max, diff.mean


def same_pictures(a, b, mean_below: float = 1.0) -> Check:
    """Whether two lists of pictures are the same: each pair's mean pixel difference below ``mean_below`` levels."""
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"Cannot compare {len(a)} pictures with {len(b)}.")
    means = [pixel_difference(x, y)[1] for x, y in zip(a, b, strict=True)]
    far = [i for i, m in enumerate(means) if m >= mean_below]
    largest = f"the largest mean {max(means):.2f}"
    if not far:
        return Check(True, f"the same {len(a)} picture{'s' if len(a) != 1 else ''}: mean pixel difference below "
                           f"{mean_below:g} of 255 levels for each ({largest})")
    detail = ", ".join(f"picture {i}: {means[i]:.2f}" for i in far)
    return Check(False, f"{len(far)} of {len(a)} pictures differ by a mean of {mean_below:g} of 255 levels or more "
                        f"({detail})")
