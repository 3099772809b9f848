"""Where a `shapes-flux` model loses the shape: pictures of known scenes are noised to a level t and the model draws
them back from there; the judge then reads each one's shape. From t = 1 (pure noise) it is the eval's task; from
lower t the noisy picture already holds the layout, and only the rest is left to the model.

Usage: python scripts/flux_noise_levels.py [FOLDER] [--levels 1.0,0.8,0.6,0.4,0.2] [--per-shape 16]
Each picture is drawn with the eval's sampler (FlowMatch Euler at the eval's step size, 20 steps for the whole way;
true CFG 4; the scene's full caption), through FluxPipeline's own ``latents`` and ``sigmas`` arguments. Prints the
judge's shape % per level and shape: with 16 scenes per shape, one scene is 6.25 points. About 20 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers.models import WEIGHTS, quiet_logs
from helpers.shapes.evaluate import judge_pictures
from helpers.shapes.flux import CALL_KWARGS, CFG_SCALE, load
from helpers.shapes.train import encode_latents
from helpers.shapes.world import SHAPES, Scene, as_tensor, caption, sample_scene

STEPS = 20  # the eval's steps (judge_prompts' default) for the walk from t = 1; a walk from t takes round(20 t)


def redraw(pipeline, scenes: list[Scene], level: float, seed: int = 0) -> np.ndarray:
    """The scenes' pictures noised to ``level`` (noise from ``seed``) and drawn back by the pipeline from there."""
    from diffusers import FluxPipeline

    x0 = encode_latents(pipeline.vae, as_tensor(scenes))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    batch, channels, side, _ = x0.shape
    latents = FluxPipeline._pack_latents((1 - level) * x0 + level * noise, batch, channels, side, side)
    steps = max(1, round(STEPS * level))
    return pipeline([caption(s) for s in scenes], latents=latents, num_inference_steps=steps,
                    sigmas=list(np.linspace(level, level / steps, steps)), true_cfg_scale=CFG_SCALE,
                    negative_prompt="", output_type="np", **CALL_KWARGS).images


def shape_table(pipeline, scenes: list[Scene], levels: list[float]) -> pd.DataFrame:
    """Shape % the judge reads right, per level (rows, highest first) and shape (columns), and over all scenes."""
    asks = [{"prompt": caption(s), "colour": s.colour, "shape": s.shape, "background": s.background} for s in scenes]
    tables = [judge_pictures(redraw(pipeline, scenes, level), asks, **{"from t": level}) for level in levels]
    judged = pd.concat(tables, ignore_index=True)
    table = judged.pivot_table(index="from t", columns="shape", values="ok_shape", aggfunc="mean") * 100
    table["all"] = judged.groupby("from t").ok_shape.mean() * 100
    return table.sort_index(ascending=False).round(1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, default=WEIGHTS / "shapes-flux",
                        help="a FluxPipeline folder (default: the shipped helpers/shapes/weights/shapes-flux)")
    parser.add_argument("--levels", default="1.0,0.8,0.6,0.4,0.2", help="noise levels t in (0, 1], comma-separated")
    parser.add_argument("--per-shape", type=int, default=16, help="scenes per shape (16)")
    args = parser.parse_args(argv)
    try:
        levels = [float(v) for v in args.levels.split(",")]
    except ValueError:
        parser.error(f"--levels: numbers in (0, 1] separated by commas, got {args.levels!r}")
    if not all(0 < v <= 1 for v in levels):
        parser.error(f"--levels: each level must lie in (0, 1], got {args.levels!r}")
    if args.per_shape < 1:
        parser.error(f"--per-shape: 1 or more scenes, got {args.per_shape}")
    if not (args.folder / "model_index.json").is_file():
        parser.error(f"{args.folder}: no model_index.json there; give a shapes-flux pipeline folder")
    with quiet_logs():
        pipeline = load(args.folder)
    pipeline.set_progress_bar_config(disable=True)
    rng = random.Random(30_000)  # held-out scenes, not the training or eval seeds
    scenes = [sample_scene(rng, shape=shape) for _ in range(args.per_shape) for shape in SHAPES]
    print(f"{args.folder}: shape % when drawn back from noise level t ({args.per_shape} scenes per shape)")
    print(shape_table(pipeline, scenes, levels).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
