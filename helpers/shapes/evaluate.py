"""How well a `shapes` pipeline follows its prompts, by the judge; and how well its VAEs reconstruct."""

from __future__ import annotations

import itertools
import random
import time

import numpy as np
import pandas as pd
import torch

from .judge import _largest_blob, analyse, off_background
from .world import BACKGROUNDS, COLOURS, SHAPES, Scene, pictures, shape_mask

STRAY_MARGIN = 2  # pixels this close to the shape (its true outline, or a generated picture's blob) never count


def prompt_grid(name_background: bool = False) -> list[dict]:
    """Every colour x shape prompt (x background when named), each with what it asks for."""
    backgrounds = list(BACKGROUNDS) if name_background else [None]
    rows = []
    for colour, shape, background in itertools.product(COLOURS, SHAPES, backgrounds):
        prompt = f"a {colour} {shape}" + (f" on a {background} background" if background else "")
        rows.append({"prompt": prompt, "colour": colour, "shape": shape, "background": background})
    return rows


def judge_pictures(images, asks: list[dict], **columns) -> pd.DataFrame:
    """Judge each picture against what its ask asks for (04): one row per picture, as ``judge_prompts`` gives."""
    rows = []
    for ask, image in zip(asks, images, strict=True):
        verdict = analyse(image)
        colour, shape, background = verdict.colour, verdict.shape, verdict.background
        rows.append(dict(ask, got_colour=colour, got_shape=shape, got_background=background, **columns))
    table = pd.DataFrame(rows)
    table["ok_colour"] = table.got_colour == table.colour
    table["ok_shape"] = table["got_shape"] == table["shape"]
    table["ok_both"] = table.ok_colour & table.ok_shape
    table["ok_background"] = table.background.isna() | (table.got_background == table.background)
    return table


def judge_prompts(pipeline, asks: list[dict], seeds, steps: int = 20, batch_size: int = 24, keep: list | None = None,
                  **kwargs) -> pd.DataFrame:
    """Generate every prompt in ``asks`` once per seed (CPU generators) and judge each picture: one row per picture.

    Columns: what was asked (prompt, colour, shape, background), seed, what the judge saw (got_*), whether it matched
    (ok_colour, ok_shape, ok_background, ok_both) and seconds per picture (the batch's time shared out). The pictures
    are appended to ``keep`` when it is given.
    """
    jobs = [dict(ask, seed=seed) for ask in asks for seed in seeds]
    tables = []
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        generators = [torch.Generator("cpu").manual_seed(job["seed"]) for job in batch]
        tic = time.perf_counter()
        images = pipeline([job["prompt"] for job in batch], generator=generators, num_inference_steps=steps,
                          output_type="np", **kwargs).images
        seconds = (time.perf_counter() - tic) / len(batch)
        tables.append(judge_pictures(images, batch, seconds=seconds))
        if keep is not None:
            keep.extend(images)
    return pd.concat(tables, ignore_index=True)


def adherence(table: pd.DataFrame, by: str | None = None) -> pd.DataFrame | pd.Series:
    """Share of pictures (in %) whose colour, shape, both (and background, where named) match the prompt."""
    columns = {"ok_colour": "colour %", "ok_shape": "shape %", "ok_both": "both %"}
    if table.background.notna().any():
        columns["ok_background"] = "background %"
    if by:
        return (table.groupby(by)[list(columns)].mean() * 100).round(1).rename(columns=columns)
    return (table[list(columns)].mean() * 100).round(1).rename(columns)


def held_out_pictures(n: int = 256, seed: int = 20_000) -> torch.Tensor:
    """``n`` rendered pictures never seen in training, as a (n, 3, 64, 64) tensor in [-1, 1]."""
    return pictures(random.Random(seed), n)[0]


def _dilate(mask: np.ndarray, by: int) -> np.ndarray:
    """``mask`` grown by ``by`` pixels in every direction, diagonals included (a square max filter)."""
    padded = np.pad(mask, by)
    size = 2 * by + 1
    h, w = mask.shape
    return np.stack([padded[dy : dy + h, dx : dx + w] for dy in range(size) for dx in range(size)]).any(0)


def stray_pixels(image, scene: Scene) -> int:
    """How many pixels off the background lie beyond the scene's true outline dilated by 2 px: 0 for its render."""
    return int((off_background(image, scene.background) & ~_dilate(shape_mask(scene), STRAY_MARGIN)).sum())


def stray_pixels_generated(image) -> int:
    """How many pixels off the (judged) background lie more than 2 px from the largest blob of such pixels."""
    off = off_background(image, analyse(image).background)
    if not off.any():
        return 0
    return int((off & ~_dilate(_largest_blob(off), STRAY_MARGIN)).sum())


def has_stray_colour(image, scene: Scene | None = None) -> bool:
    """Whether a picture shows stray colour: any stray pixel given its scene, more than 3 for a generated one."""
    return stray_pixels(image, scene) > 0 if scene is not None else stray_pixels_generated(image) > 3


def reconstruct(vae, pictures: torch.Tensor) -> np.ndarray:
    """A VAE's reconstructions (latent mean, decoded) of pictures in [-1, 1], as uint8 (n, 64, 64, 3)."""
    with torch.no_grad():
        out = torch.cat([vae.decode(vae.encode(x).latent_dist.mode()).sample for x in pictures.split(32)])
    return ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def vae_stray_rate(vae, n: int = 400, seed: int = 20_000) -> float:
    """Share (%) of ``n`` held-out pictures whose reconstruction shows stray colour beyond the true outline."""
    images, scenes = pictures(random.Random(seed), n)
    recons = reconstruct(vae.float().cpu(), images)
    return 100 * float(np.mean([has_stray_colour(r, s) for r, s in zip(recons, scenes, strict=True)]))


def psnr(vae, images: torch.Tensor) -> float:
    """Peak signal-to-noise ratio (dB) of the VAE's reconstructions (latent mean, decoded) of ``images``."""
    with torch.no_grad():
        out = torch.cat([vae.decode(vae.encode(x).latent_dist.mode()).sample for x in images.split(32)])
    mse = torch.nn.functional.mse_loss(out.clamp(-1, 1), images).item() / 4  # images span 2: a range of 1
    return 10 * np.log10(1 / mse)


def vae_psnr(vae, images: torch.Tensor) -> float:
    """PSNR (dB) of a VAE's reconstructions of ``images`` in float32 on the CPU; higher is better."""
    return psnr(vae.float().cpu(), images)


def reconstruction_grid(vae, vae_ft, n: int = 9, seed: int = 20_000, scale: int = 2):
    """Rendered pictures (top row) above ``vae``'s and ``vae_ft``'s reconstructions, each captioned with its PSNR
    and whether it shows stray colour: ``n`` scenes that cycle through backgrounds, shapes and colours.

    Each caption's PSNR is one picture's, of the 8-bit reconstruction: it varies more than, and is not the same
    measure as, ``vae_psnr`` over the 256 held-out pictures.
    """
    from PIL import Image

    from ..images import captioned_grid
    from .world import caption, render, sample_scene

    rng = random.Random(seed)
    colours, shapes, backgrounds = list(COLOURS), list(SHAPES), list(BACKGROUNDS)
    scenes = [sample_scene(rng, colours[i % len(colours)], shapes[i % len(shapes)],
                           backgrounds[i // len(shapes) % len(backgrounds)]) for i in range(n)]
    rendered = np.stack([np.asarray(render(scene)) for scene in scenes])
    rows, captions = [list(rendered)], [caption(scene) for scene in scenes]
    pictures = torch.from_numpy(rendered).permute(0, 3, 1, 2).float() / 127.5 - 1
    for label, model in (("vae", vae), ("vae-ft", vae_ft)):
        recons = reconstruct(model.float().cpu(), pictures)
        rows.append(list(recons))
        for recon, original, scene in zip(recons, rendered, scenes, strict=True):
            mse = max(float(np.mean((recon / 255.0 - original / 255.0) ** 2)), 1e-10)
            captions.append(f"{label} {10 * np.log10(1 / mse):.1f} dB" + (", stray" if has_stray_colour(
                recon, scene) else ""))
    size = rendered.shape[1] * scale
    cells = [Image.fromarray(image).resize((size, size), Image.NEAREST) for row in rows for image in row]
    return captioned_grid(cells, captions, rows=len(rows), cols=n)


def print_adherence(pipeline, tables: dict, generated: list, label: str, steps: int = 20, **kwargs) -> None:
    """Print ``tables``' adherence per colour and per shape; then draw every prompt naming a background (2 seeds,
    ``steps`` steps, ``kwargs`` to the pipeline: the sampler called ``label``), print its adherence per background,
    and the share of the pictures in ``generated``, these appended, that show stray colour."""
    for by in ("colour", "shape"):
        print(f"\nby {by}:")
        print(pd.concat({name: adherence(t, by) for name, t in tables.items()}, axis=1).to_string())

    named = judge_prompts(pipeline, prompt_grid(name_background=True), range(2), steps=steps, keep=generated,
                          **kwargs)
    print(f"\nprompts naming the background ({label}, 2 seeds each):")
    print(adherence(named, "background").to_string())
    stray = 100 * np.mean([has_stray_colour((image * 255).round().astype(np.uint8)) for image in generated])
    print(f"stray colour in generated pictures ({label}): {stray:.1f} % of {len(generated)}")


def evaluate(model: str, vae_ft: str, seeds: int = 8, device: str | None = None) -> pd.DataFrame:
    """The eval command: adherence per colour and shape under DPM-Solver++ 20 and PNDM 50, background, and stray
    colour in generated pictures; both VAEs' PSNR and stray colour on held-out pictures."""
    from diffusers import AutoencoderKL, DiffusionPipeline, DPMSolverMultistepScheduler

    from ..device import pick_device

    device = torch.device(device) if device else pick_device()
    pipeline = DiffusionPipeline.from_pretrained(model, use_safetensors=True).to(device)
    pipeline.set_progress_bar_config(disable=True)
    pndm = pipeline.scheduler
    dpm = DPMSolverMultistepScheduler.from_config(pndm.config)
    print(f"model {model} on {device.type}; {seeds} seeds per prompt, guidance 7.5 (the pipeline's default)")

    results, tables, generated = {}, {}, []
    for label, scheduler, steps in (("DPM-Solver++ 20", dpm, 20), ("PNDM 50", pndm, 50)):
        pipeline.scheduler = scheduler
        keep = generated if scheduler is dpm else None
        tables[label] = judge_prompts(pipeline, prompt_grid(), range(seeds), steps=steps, keep=keep)
        results[label] = adherence(tables[label])
        print(f"{label}: {tables[label].seconds.mean():.3f} s per picture")
    pipeline.scheduler = dpm
    print_adherence(pipeline, tables, generated, "DPM-Solver++ 20", steps=20)

    pictures = held_out_pictures()
    tuned = AutoencoderKL.from_pretrained(vae_ft, use_safetensors=True)
    print(f"\nVAE PSNR on {len(pictures)} held-out pictures: {model}/vae {vae_psnr(pipeline.vae, pictures):.2f} dB,"
          f" {vae_ft} {vae_psnr(tuned, pictures):.2f} dB")
    print(f"VAE reconstructions with stray colour (400 held-out pictures): {model}/vae "
          f"{vae_stray_rate(pipeline.vae):.1f} %, {vae_ft} {vae_stray_rate(tuned):.1f} %")
    summary = pd.DataFrame(results).T
    print("\n" + summary.to_string())
    best = results["DPM-Solver++ 20"]
    print(f"adherence: colour {best['colour %']:.0f}%, shape {best['shape %']:.0f}%, both {best['both %']:.0f}%")
    return summary
