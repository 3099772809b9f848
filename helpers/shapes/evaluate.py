"""How well a `shapes` pipeline follows its prompts, by the judge; and how well its VAEs reconstruct."""

from __future__ import annotations

import itertools
import random
import time

import pandas as pd
import torch

from .judge import judge
from .world import BACKGROUNDS, COLOURS, SHAPES


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
        colour, shape, background = judge(image)
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
    from .train import pictures

    return pictures(random.Random(seed), n)[0]


def vae_psnr(vae, pictures: torch.Tensor) -> float:
    """PSNR (dB) of a VAE's reconstructions of ``pictures``; higher is better."""
    from .train import psnr

    return psnr(vae.float().cpu(), pictures)


def evaluate(model: str, vae_ft: str, seeds: int = 8, device: str | None = None) -> pd.DataFrame:
    """The eval command: adherence per colour and shape under DPM-Solver++ 20 and PNDM 50, background, VAE PSNR."""
    from diffusers import AutoencoderKL, DiffusionPipeline, DPMSolverMultistepScheduler

    from ..device import pick_device

    device = torch.device(device) if device else pick_device()
    pipeline = DiffusionPipeline.from_pretrained(model, use_safetensors=True).to(device)
    pipeline.set_progress_bar_config(disable=True)
    pndm = pipeline.scheduler
    dpm = DPMSolverMultistepScheduler.from_config(pndm.config)
    print(f"model {model} on {device.type}; {seeds} seeds per prompt, guidance 7.5 (the pipeline's default)")

    results, tables = {}, {}
    for label, scheduler, steps in (("DPM-Solver++ 20", dpm, 20), ("PNDM 50", pndm, 50)):
        pipeline.scheduler = scheduler
        tables[label] = judge_prompts(pipeline, prompt_grid(), range(seeds), steps=steps)
        results[label] = adherence(tables[label])
        print(f"{label}: {tables[label].seconds.mean():.3f} s per picture")
    for by in ("colour", "shape"):
        print(f"\nby {by}:")
        print(pd.concat({label: adherence(t, by) for label, t in tables.items()}, axis=1).to_string())

    pipeline.scheduler = dpm
    named = judge_prompts(pipeline, prompt_grid(name_background=True), range(2), steps=20)
    print("\nprompts naming the background (DPM-Solver++ 20, 2 seeds each):")
    print(adherence(named, "background").to_string())

    pictures = held_out_pictures()
    tuned = AutoencoderKL.from_pretrained(vae_ft, use_safetensors=True)
    print(f"\nVAE PSNR on {len(pictures)} held-out pictures: {model}/vae {vae_psnr(pipeline.vae, pictures):.2f} dB,"
          f" {vae_ft} {vae_psnr(tuned, pictures):.2f} dB")
    summary = pd.DataFrame(results).T
    print("\n" + summary.to_string())
    best = results["DPM-Solver++ 20"]
    print(f"adherence: colour {best['colour %']:.0f}%, shape {best['shape %']:.0f}%, both {best['both %']:.0f}%")
    return summary
