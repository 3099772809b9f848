"""Check, for a `shapes` checkpoint, every seed-dependent fact that notebooks 01-03 assert, in float32, bfloat16 and
float16 on the CPU (a GPU runs the notebooks in float16; a CPU in bfloat16). Run it after retraining, before shipping.

Usage: python scripts/check_shapes_seeds.py [FOLDER]   (FOLDER holds shapes/ and shapes-vae-ft/; default models)
Prints one line per fact and precision, and exits 1 when any fact fails.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

from helpers.pipelines import hide_torchvision_notice, quiet_logs
from helpers.shapes.judge import analyse

PROMPT, WHITE, NEGATIVE = "a red circle", "a red circle on a white background", "a gray background"
TWEAK_COLOURS, TWEAK_SEED, MOVE_PX, AREA_RATIO = ("orange", "red", "yellow", "green"), 2, 6, 1.25  # notebook 03


def load(folder: Path, dtype: torch.dtype, fine_tuned_vae: bool, dpm: bool = True):
    from diffusers import AutoencoderKL, DiffusionPipeline, DPMSolverMultistepScheduler

    with quiet_logs():  # no loading bars between the verdicts
        pipeline = DiffusionPipeline.from_pretrained(folder / "shapes", use_safetensors=True, dtype=dtype)
        if fine_tuned_vae:
            pipeline.vae = AutoencoderKL.from_pretrained(folder / "shapes-vae-ft", use_safetensors=True, dtype=dtype)
    if dpm:
        pipeline.scheduler = DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def seen(pipeline, prompts: list[str], seeds, steps: int = 20, **kwargs):
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    images = pipeline(prompts, generator=generators, num_inference_steps=steps, **kwargs).images
    return [analyse(image) for image in images]


def described(view) -> str:
    return f"{view.colour} {view.shape} on {view.background} at ({view.cx:.0f}, {view.cy:.0f})"


def facts(folder: Path, dtype: torch.dtype):
    """(name, holds, detail) for each fact the notebooks check, in ``dtype``."""
    from diffusers import DPMSolverMultistepScheduler

    pipeline = load(folder, dtype, fine_tuned_vae=False, dpm=False)  # 01: seed 0, PNDM 50 then DPM-Solver++ 20
    pndm = seen(pipeline, [PROMPT], [0], steps=50)[0]
    pipeline.scheduler = DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config)
    dpm = seen(pipeline, [PROMPT], [0])[0]
    yield ("01: seed 0 draws a red circle with PNDM 50 and DPM-Solver++ 20, centroids within 4 px",
           {(pndm.colour, pndm.shape), (dpm.colour, dpm.shape)} == {("red", "circle")}
           and math.dist((pndm.cx, pndm.cy), (dpm.cx, dpm.cy)) <= 4, f"{described(pndm)} / {described(dpm)}")
    batch = seen(pipeline, [PROMPT] * 8, range(8))  # 02: seeds 0-7
    yield ("02: seeds 0-7 draw a red circle", all((v.colour, v.shape) == ("red", "circle") for v in batch),
           [f"{v.colour} {v.shape}" for v in batch])

    pipeline = load(folder, dtype, fine_tuned_vae=True)  # 03 runs with the fine-tuned VAE
    short = seen(pipeline, [PROMPT] * 8, range(8))
    detailed = seen(pipeline, [WHITE] * 8, range(8))
    white_short, white_detailed = (sum(v.background == "white" for v in views) for views in (short, detailed))
    yield ("03: the detailed prompt gets white in 6 of 8 or more, and more often than the short one",
           white_detailed >= 6 and white_detailed > white_short, f"{white_detailed} vs {white_short} of 8")
    negative = seen(pipeline, [PROMPT] * 4, range(4), negative_prompt=[NEGATIVE] * 4)
    gray_without, gray_with = (sum(v.background == "gray" for v in views) for views in (short[:4], negative))
    yield ("03: the negative prompt leaves fewer gray backgrounds", gray_with < gray_without,
           f"{gray_with} vs {gray_without} of 4")
    tweak = seen(pipeline, [f"a {colour} circle on a white background" for colour in TWEAK_COLOURS],
                 [TWEAK_SEED] * 4, steps=25)
    kept = tweak[1]
    moved = max(math.dist((v.cx, v.cy), (kept.cx, kept.cy)) for v in tweak)
    ratio = max(float(np.exp(abs(np.log(v.area / kept.area)))) for v in tweak)
    yield (f"03: the tweak (seed {TWEAK_SEED}) keeps each colour and the layout",
           [v.colour for v in tweak] == list(TWEAK_COLOURS) and moved <= MOVE_PX and ratio <= AREA_RATIO,
           f"{[v.colour for v in tweak]}, centroids within {moved:.1f} px, areas within {ratio:.3f}x")


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "models")
    if not (folder / "shapes" / "model_index.json").is_file() or not (folder / "shapes-vae-ft").is_dir():
        print(f"error: {folder} has no shapes/ and shapes-vae-ft/: give the folder `make shapes` wrote "
              "(build/shapes) or models", file=sys.stderr)
        return 2
    hide_torchvision_notice()
    failed = 0
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for name, holds, detail in facts(folder, dtype):
            failed += not holds
            print(f"{'ok  ' if holds else 'FAIL'} {str(dtype).removeprefix('torch.'):8} {name}: {detail}", flush=True)
    print("every fact holds in every precision" if not failed else f"{failed} fact(s) fail: choose other seeds or "
          "prompts (helpers/prompts.py, the notebooks) before shipping this checkpoint")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
