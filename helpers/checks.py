"""Checks for the notebooks' pictures: each returns a ``Check``, whether it passed and what it saw, or *not judged*.

Each model has its judge (``judge_of``): `shapes` pictures are read by the `shapes` judge (colour, shape,
background, position); a trained model's other pictures (the real SD 1.5, a fine-tune) by measurements the field
uses: CLIP zero-shot and CLIP score (``helpers.clip``), SSIM for layout; the presets with random weights (``tiny``,
``sd15-random``) have none, since their pictures are noise. A check never passes what it did not measure: without
a judge it says *not judged*. A notebook's checked cell prints ``check.verdict`` (True, False or "not judged");
the detail goes in a cell beside it. Blank or NaN pictures raise, whatever the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from . import compare
from .images import check_images
from .models import model_kind
from .shapes import BACKGROUNDS, COLOURS, SHAPES, analyse, parse_prompt

RANDOM_WEIGHTS = "not judged: {kind} has random weights, so its pictures show nothing a judge could read"


def judge_of(model_id: str) -> str | None:
    """Which judge reads a model's pictures: 'shapes', 'real' (CLIP and SSIM) for any other trained model, or None."""
    kind = model_kind(model_id)
    return None if kind in ("tiny", "sd15-random") else "shapes" if kind.startswith("shapes") else "real"


@dataclass(frozen=True)
class Check:
    """A lesson's check: ``passed`` (None when not judged) and ``detail``, what it saw."""

    passed: bool | None
    detail: str

    @property
    def judged(self) -> bool:
        return self.passed is not None

    @property
    def verdict(self) -> bool | str:
        """What a checked cell prints: True or False where a judge looked, else 'not judged'."""
        return self.passed if self.judged else "not judged"

    def __str__(self) -> str:
        head = "not judged" if not self.judged else "passed" if self.passed else "FAILED"
        return f"{head}: {self.detail.removeprefix('not judged: ')}"

    __repr__ = __str__


def _unjudged(model_id: str, basics: str = "", reason: str = "") -> Check:
    reason = reason or RANDOM_WEIGHTS.format(kind=model_kind(model_id))
    return Check(None, f"{basics}; {reason}" if basics else reason)


def judged_check(passed: bool, detail: str, model_id: str, judges: Sequence[str] = ("shapes",)) -> Check:
    """A check whose measurement holds for the models that ``judges`` name: as given there, not judged elsewhere.

    The default is the `shapes` judge's readings (colours, backgrounds); a measurement valid for every trained model,
    such as a VAE's PSNR, passes ``judges=("shapes", "real")``.
    """
    judge = judge_of(model_id)
    if judge not in judges:
        reason = "" if judge is None else "not judged: this measurement reads the shapes model's pictures only"
        return _unjudged(model_id, reason=reason)
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


def _clip():
    """The CLIP judge on the notebooks' device, or why it cannot be had."""
    from .clip import clip_judge
    from .device import pick_device

    return clip_judge(pick_device())


def _reader(images: list, model_id: str):
    """Who reads these pictures: 'shapes', the CLIP judge, or a not-judged Check (random weights, no CLIP to be had).

    Raises if a picture is blank or NaN, for every model.
    """
    basics = check_images(images)
    judge = judge_of(model_id)
    if judge is None:
        return _unjudged(model_id, basics)
    if judge == "shapes":
        return "shapes"
    clip = _clip()
    return _unjudged(model_id, basics, f"not judged: {clip}") if isinstance(clip, str) else clip


def shows_prompt(images, prompts: str | Sequence[str], model_id: str, labels: Sequence[str] | None = None) -> Check:
    """Whether every picture shows what its prompt asks: by the `shapes` judge, or CLIP zero-shot for a real model.

    Zero-shot: each picture must score higher with its prompt than with every one of ``clip.DISTRACTORS`` (other
    subjects, noise, flat colour). Raises if a picture is blank or NaN, for every model.
    """
    images, labels = _labelled(images, labels)
    prompts = _prompts(prompts, len(images))
    reader = _reader(images, model_id)
    if isinstance(reader, Check):
        return reader
    if reader != "shapes":
        picks = reader.picks(images, prompts)
        n, misses = len(picks), [label for label, ok in zip(labels, picks, strict=True) if not ok]
        if not misses:
            return Check(True, f"{n} of {n}: CLIP matches each picture with its prompt over "
                               f"{len(_distractors())} other captions")
        return Check(False, f"{n - len(misses)} of {n}: CLIP prefers another caption for {', '.join(misses)}")
    table = judge_table(images, prompts, labels)
    n, bad = len(table), table[~table.ok]
    if bad.empty:
        asked = ", ".join(dict.fromkeys(table.prompt))
        return Check(True, f"{n} of {n} picture{'s show' if n != 1 else ' shows'} what "
                           f"{'their' if n != 1 else 'its'} prompt asks ({asked})")
    misses = "; ".join(f"{label}: asked {row['prompt']!r}, saw {_seen(row)} on {row['background']}"
                       for label, row in bad.iterrows())
    return Check(False, f"{n - len(bad)} of {n} pictures show what their prompt asks; {misses}")


def _distractors() -> tuple[str, ...]:
    from .clip import DISTRACTORS

    return DISTRACTORS


def same_layout(images, model_id: str, tolerance: float = 3.0, labels: Sequence[str] | None = None,
                area_ratio: float | None = None, others: Sequence | None = None) -> Check:
    """Whether the pictures keep one layout: the same composition, whatever their colours.

    `shapes`: the same shape, centroids within ``tolerance`` pixels of each other (and areas within a factor of
    ``area_ratio``, if given). A real model: every pair's SSIM (``compare.layout_similarity``) above the highest SSIM
    between the first picture and ``others``, pictures of the same prompt from other seeds (without them: not judged).
    """
    images, labels = _labelled(images, labels)
    basics = check_images(images)
    judge = judge_of(model_id)
    if judge is None:
        return _unjudged(model_id, basics)
    if judge == "real":
        if not others:
            return _unjudged(model_id, basics, "not judged: a layout is judged against other seeds' pictures")
        within = min(compare.layout_similarity(a, b) for i, a in enumerate(images) for b in images[i + 1 :])
        across = max(compare.layout_similarity(images[0], other) for other in others)
        detail = f"SSIM {within:.2f} at least between these pictures, {across:.2f} at most with other seeds'"
        return Check(within > across, detail)
    seen = [analyse(image) for image in images]
    first = seen[0]
    spread = max(math.dist((a.cx, a.cy), (b.cx, b.cy)) for a in seen for b in seen)
    areas = [v.area for v in seen]
    area_ok = area_ratio is None or (min(areas) > 0 and max(areas) / min(areas) <= area_ratio)
    if len({v.shape for v in seen}) == 1 and first.shape and spread <= tolerance and area_ok:
        sized = f", areas within a factor of {area_ratio:g}" if area_ratio else ""
        return Check(True, f"all {len(seen)} pictures show a {first.shape} in the same place: centroids within "
                           f"{tolerance:g} px of each other{sized}")
    where = "; ".join(f"{label}: {v.colour or 'no'} {v.shape or 'shape'} at ({v.cx:.1f}, {v.cy:.1f}), {v.area} px"
                      for label, v in zip(labels, seen, strict=True))
    return Check(False, f"the layouts differ (tolerance {tolerance:g} px): {where}")


def names_detail(short, detailed, prompt: str, model_id: str, share: float = 0.75) -> Check:
    """Whether the detailed prompt's pictures show its detail more than the short prompt's do (03).

    `shapes`: the background it names, in at least ``share`` of them and in more than with the short prompt. A
    real model: a higher mean CLIP score with the detailed prompt than the short prompt's pictures get.
    """
    reader = _reader(list(short) + list(detailed), model_id)
    if isinstance(reader, Check):
        return reader
    if reader != "shapes":  # a CLIP judge
        before, after = reader.scores(short, prompt).mean(), reader.scores(detailed, prompt).mean()
        return Check(bool(after > before), f"mean CLIP score with the detailed prompt {after:.1f} against {before:.1f}")
    named = next((name for name in BACKGROUNDS if f"on a {name} background" in prompt), None)
    if named is None:
        raise ValueError(f"{prompt!r} names no background: name one of {', '.join(BACKGROUNDS)}.")
    before, after = [analyse(image).background for image in short], [analyse(image).background for image in detailed]
    n, hits = len(after), after.count(named)
    return Check(hits >= share * n and hits > before.count(named),
                 f"{named}: {hits} of {n} with the detailed prompt, {before.count(named)} of {len(before)} without")


def avoids(without, with_negative, negative: str, model_id: str) -> Check:
    """Whether a negative prompt makes its content rarer (03): `shapes`, fewer pictures on the background it names;
    a real model, a lower mean CLIP score with the negative prompt's text."""
    reader = _reader(list(without) + list(with_negative), model_id)
    if isinstance(reader, Check):
        return reader
    if reader != "shapes":  # a CLIP judge
        before, after = reader.scores(without, negative).mean(), reader.scores(with_negative, negative).mean()
        return Check(bool(after < before),
                     f"mean CLIP score with {negative!r}: {after:.1f} with it, {before:.1f} without")
    unwanted = next((word for word in negative.split() if word in BACKGROUNDS), None)
    if unwanted is None:
        raise ValueError(f"{negative!r} names no background: name one of {', '.join(BACKGROUNDS)}.")
    before = sum(analyse(image).background == unwanted for image in without)
    after = sum(analyse(image).background == unwanted for image in with_negative)
    return Check(after < before,
                 f"{unwanted}: {after} of {len(with_negative)} with it, {before} of {len(without)} without")


def same_pictures(a, b, mean_below: float = 1.0) -> Check:
    """Whether two lists of pictures are the same: each pair's mean pixel difference below ``mean_below`` levels."""
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"Cannot compare {len(a)} pictures with {len(b)}.")
    means = [compare.pixel_difference(x, y).mean for x, y in zip(a, b, strict=True)]
    far = [i for i, m in enumerate(means) if m >= mean_below]
    largest = f"the largest mean {max(means):.2f}"
    if not far:
        return Check(True, f"the same {len(a)} picture{'s' if len(a) != 1 else ''}: mean pixel difference below "
                           f"{mean_below:g} of 255 levels for each ({largest})")
    detail = ", ".join(f"picture {i}: {means[i]:.2f}" for i in far)
    return Check(False, f"{len(far)} of {len(a)} pictures differ by a mean of {mean_below:g} of 255 levels or more "
                        f"({detail})")
