"""Where a `shapes-flux` model loses the shape: pictures of known scenes are noised to a level t and the model draws
them back from there; the judge then reads each one's shape. From t = 1 (pure noise) it is the eval's task; from
lower t the noisy picture already holds the layout, and only the rest is left to the model.

Usage: python scripts/flux_noise_levels.py [FOLDER] [--levels 1.0,0.8,0.6,0.4,0.2] [--per-shape 16]
(FOLDER: a FluxPipeline folder; default the shipped helpers/shapes/weights/shapes-flux)
Each picture is drawn with the eval's sampler: FlowMatch Euler at the eval's step size (20 steps for the whole way),
true CFG 4, the scene's full caption. Prints the judge's shape % per level and shape. About 10 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers.shapes.flux import CALL_KWARGS, CFG_SCALE, load
from helpers.shapes.judge import analyse
from helpers.shapes.train import encode_latents
from helpers.shapes.world import SHAPES, caption, render, sample_scene

SHIPPED = Path(__file__).resolve().parents[1] / "helpers" / "shapes" / "weights" / "shapes-flux"
STEPS = 20  # the eval's steps from t = 1; a walk from t takes round(20 t)


def redraw(pipeline, scenes, level: float, seed: int = 0) -> list:
    """The scenes' pictures noised to ``level`` and drawn back by the pipeline from there: one verdict each."""
    from diffusers import FluxPipeline

    x = torch.from_numpy(np.stack([np.asarray(render(s)) for s in scenes])).permute(0, 3, 1, 2).float() / 127.5 - 1
    x0 = encode_latents(pipeline.vae, x)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    noisy = (1 - level) * x0 + level * noise
    side = x0.shape[-1]
    latents = FluxPipeline._pack_latents(noisy, len(scenes), x0.shape[1], side, side)
    steps = max(1, round(STEPS * level))
    images = pipeline([caption(s) for s in scenes], latents=latents, num_inference_steps=steps,
                      sigmas=list(np.linspace(level, level / steps, steps)), true_cfg_scale=CFG_SCALE,
                      negative_prompt="", output_type="np", **CALL_KWARGS).images
    return [analyse(image) for image in images]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, default=SHIPPED)
    parser.add_argument("--levels", default="1.0,0.8,0.6,0.4,0.2", help="noise levels t in (0, 1], comma-separated")
    parser.add_argument("--per-shape", type=int, default=16, help="scenes per shape (16)")
    args = parser.parse_args(argv)
    try:
        levels = [float(v) for v in args.levels.split(",")]
    except ValueError:
        parser.error(f"--levels: numbers in (0, 1] separated by commas, got {args.levels!r}")
    if not all(0 < v <= 1 for v in levels):
        parser.error(f"--levels: each level must lie in (0, 1], got {args.levels!r}")
    if not (args.folder / "model_index.json").is_file():
        parser.error(f"{args.folder}: no model_index.json there; give a shapes-flux pipeline folder")
    pipeline = load(args.folder)
    pipeline.set_progress_bar_config(disable=True)
    rng = random.Random(30_000)  # held-out scenes, not the training or eval seeds
    scenes = [sample_scene(rng, shape=shape) for _ in range(args.per_shape) for shape in SHAPES]
    rows = []
    for level in levels:
        verdicts = redraw(pipeline, scenes, level)
        rows += [{"from t": level, "shape": scene.shape, "right": verdict.shape == scene.shape}
                 for scene, verdict in zip(scenes, verdicts, strict=True)]
    table = pd.DataFrame(rows).pivot_table(index="from t", columns="shape", values="right", aggfunc="mean") * 100
    table["all"] = table.mean(axis=1)
    print(f"{args.folder}: shape % when drawn back from noise level t ({args.per_shape} scenes per shape)")
    print(table.sort_index(ascending=False).round(1).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
