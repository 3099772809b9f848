"""Check, for a `shapes` checkpoint, every seed-dependent fact that notebooks 01-03 assert, in float32, bfloat16 and
float16 on the CPU (a GPU runs the notebooks in float16; a CPU in bfloat16). Run it after retraining, before shipping,
and with --device cuda on a GPU too: CUDA's float16 kernels round differently from the CPU's.

Usage: python scripts/check_shapes_seeds.py [FOLDER] [--device cpu|cuda] [--tweak-seeds A-B [--dtypes LIST]]
(FOLDER holds shapes/ and shapes-vae-ft/; default: the shipped helpers/shapes/weights. --tweak-seeds scans 03's
tweak for seeds A to B instead, in --dtypes (default all three), to choose lessons.TWEAK_SEEDS.)
Prints one line per fact and precision, and exits 1 when any fact fails. About 35 s on 2 idle CPU cores.
The prompts come from helpers/prompts.py and 03's seed and tolerances from helpers/lessons.py, as the notebooks
get them.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from helpers.checks import same_layout, shows_prompt
from helpers.lessons import TWEAK_AREA_RATIO, TWEAK_MOVE_PX, tweak_seed  # 03's, as it imports them
from helpers.models import WEIGHTS, hide_torchvision_notice, quiet_logs
from helpers.prompts import AGE_COLOURS, GUIDE_AGES, GUIDE_DETAILS, GUIDE_PROMPT, GUIDE_STYLE, NEGATIVE, for_model
from helpers.shapes import BACKGROUNDS
from helpers.shapes.judge import analyse

# The notebooks' prompts, through for_model as the notebooks pass them (any shapes folder gets the same words).
SHAPES = str(WEIGHTS / "shapes")
PROMPT = for_model(GUIDE_PROMPT, SHAPES)  # 01, 02 and 03's short prompt
DETAILED = for_model(GUIDE_PROMPT + GUIDE_DETAILS + GUIDE_STYLE, SHAPES)  # 03: names a background
UNWANTED = for_model(NEGATIVE, SHAPES)  # 03's negative prompt
TWEAKS = [for_model(f"portrait photo of {age}{GUIDE_DETAILS}{GUIDE_STYLE}", SHAPES) for age in GUIDE_AGES]
TWEAK_COLOURS = [AGE_COLOURS[age] for age in GUIDE_AGES]
SEED = 0  # 01's seed: the guide's own get_inputs call, which 01 spells out


def load(folder: Path, dtype: torch.dtype, fine_tuned_vae: bool, dpm: bool = True, device: str = "cpu"):
    from diffusers import AutoencoderKL, DiffusionPipeline, DPMSolverMultistepScheduler

    with quiet_logs():  # no loading bars between the verdicts
        pipeline = DiffusionPipeline.from_pretrained(folder / "shapes", use_safetensors=True, dtype=dtype)
        if fine_tuned_vae:
            pipeline.vae = AutoencoderKL.from_pretrained(folder / "shapes-vae-ft", use_safetensors=True, dtype=dtype)
    if dpm:
        pipeline.scheduler = DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline if device == "cpu" else pipeline.to(device)  # loaded on the CPU already


def seen(pipeline, prompts: list[str], seeds, steps: int = 20, **kwargs):
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    images = pipeline(prompts, generator=generators, num_inference_steps=steps, **kwargs).images
    return [analyse(image) for image in images]


def described(view) -> str:
    return f"{view.colour} {view.shape} on {view.background} at ({view.cx:.0f}, {view.cy:.0f})"


def reference(folder: Path, device: str = "cpu"):
    """01's first rung, the judge's view: its seed in float32 with PNDM 50 (the same for every precision checked)."""
    return seen(load(folder, torch.float32, fine_tuned_vae=False, dpm=False, device=device), [PROMPT], [SEED],
                steps=50)[0]


def facts(folder: Path, dtype: torch.dtype, device: str = "cpu", first=None):
    """(name, holds, detail) for each fact the notebooks check, in ``dtype``; ``first`` is ``reference()``."""
    from diffusers import DPMSolverMultistepScheduler

    # 01: its first rung, then this precision with PNDM 50 and DPM-Solver++ 20
    first = first or reference(folder, device)
    pipeline = load(folder, dtype, fine_tuned_vae=False, dpm=False, device=device)
    pndm = seen(pipeline, [PROMPT], [SEED], steps=50)[0]
    pipeline.scheduler = DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config)
    dpm = seen(pipeline, [PROMPT], [SEED])[0]
    colour, shape = PROMPT.split()[-2:]
    rungs = (first, pndm, dpm)
    spread = max(math.dist((a.cx, a.cy), (b.cx, b.cy)) for a in rungs for b in rungs)  # shown in 01, not checked
    yield (f"01: seed {SEED} draws {PROMPT!r} in float32 with PNDM 50 and here with PNDM 50 and DPM-Solver++ 20",
           {(v.colour, v.shape) for v in rungs} == {(colour, shape)},
           " / ".join(described(v) for v in rungs) + f"; centroids within {spread:.1f} px")
    batch = seen(pipeline, [PROMPT] * 8, range(8))  # 02: seeds 0-7
    yield (f"02: seeds 0-7 draw {PROMPT!r}", all((v.colour, v.shape) == (colour, shape) for v in batch),
           [f"{v.colour} {v.shape}" for v in batch])

    pipeline = load(folder, dtype, fine_tuned_vae=True, device=device)  # 03 runs with the fine-tuned VAE
    short = seen(pipeline, [PROMPT] * 8, range(8))
    detailed = seen(pipeline, [DETAILED] * 8, range(8))
    named = next(word for word in DETAILED.split() if word in BACKGROUNDS)  # the background it names
    named_short, named_detailed = (sum(v.background == named for v in views) for views in (short, detailed))
    yield (f"03: {DETAILED!r} gets {named} in 6 of 8 or more, and more often than {PROMPT!r}",
           named_detailed >= 6 and named_detailed > named_short, f"{named_detailed} vs {named_short} of 8")
    avoided = next(word for word in UNWANTED.split() if word in BACKGROUNDS)  # the one the negative prompt names
    negative = seen(pipeline, [PROMPT] * 4, range(4), negative_prompt=[UNWANTED] * 4)
    without, with_it = (sum(v.background == avoided for v in views) for views in (short[:4], negative))
    yield (f"03: the negative prompt {UNWANTED!r} leaves fewer {avoided} backgrounds", with_it < without,
           f"{with_it} vs {without} of 4")
    seed = tweak_seed(device)
    holds, detail = tweak(pipeline, seed)
    yield f"03: the tweak (seed {seed} on {device}) keeps each colour and the layout", holds, detail


def tweak(pipeline, seed: int) -> tuple[bool, str]:
    """03's tweak from ``seed``: whether each picture shows its colour and the layout stays, and what was seen."""
    generators = [torch.Generator("cpu").manual_seed(seed) for _ in TWEAKS]
    images = pipeline(TWEAKS, generator=generators, num_inference_steps=25).images
    shown, stays = shows_prompt(images, TWEAKS, SHAPES), same_layout(images, SHAPES, TWEAK_MOVE_PX,
                                                                    area_ratio=TWEAK_AREA_RATIO)
    views = [analyse(image) for image in images]
    spread = max(math.dist((a.cx, a.cy), (b.cx, b.cy)) for a in views for b in views)
    ratio = max(v.area for v in views) / max(1, min(v.area for v in views))
    holds = [v.colour for v in views] == list(TWEAK_COLOURS) and shown.passed and stays.passed
    return holds, f"centroids within {spread:.1f} px, areas within {ratio:.2f}x; {shown}; {stays}"


def scan_tweak(folder: Path, seeds: list[int], device: str, dtypes: list[torch.dtype]) -> int:
    """Print 03's tweak for each of ``seeds`` in each of ``dtypes`` (a line per seed and precision), then the seeds
    that held in all of them; the exit status (0)."""
    from helpers.device import cpu_model

    print(f"scanning on {device} ({torch.cuda.get_device_name(0) if device == 'cuda' else cpu_model()})", flush=True)
    held = {}
    for dtype in dtypes:
        pipeline = load(folder, dtype, fine_tuned_vae=True, device=device)
        precision = str(dtype).removeprefix("torch.")
        for seed in seeds:
            holds, detail = tweak(pipeline, seed)
            held.setdefault(seed, []).append(holds)
            verdict, where = "ok  " if holds else "FAIL", detail.split(";")[0]
            print(f"{verdict} {device:4} {precision:8} tweak seed {seed}: {where}", flush=True)
    everywhere = [seed for seed, verdicts in held.items() if all(verdicts)]
    names = ", ".join(str(dtype).removeprefix("torch.") for dtype in dtypes)
    print(f"the tweak holds in {names} on {device} for seeds: {everywhere or 'none'}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/check_shapes_seeds.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default=str(WEIGHTS),
                        help="holds shapes/ and shapes-vae-ft/ (default: the shipped helpers/shapes/weights)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where the pipelines run (default cpu; the seeds' noise is drawn on the CPU either way)")
    parser.add_argument("--tweak-seeds", metavar="A-B",
                        help="instead of the facts: scan 03's tweak for seeds A to B")
    parser.add_argument("--dtypes", default="float32,bfloat16,float16",
                        help="the precisions --tweak-seeds scans (default float32,bfloat16,float16)")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda needs a CUDA GPU, and torch sees none here: leave --device out", file=sys.stderr)
        return 2
    start = time.perf_counter()
    if not (folder / "shapes" / "model_index.json").is_file() or not (folder / "shapes-vae-ft").is_dir():
        print(f"error: {folder} has no shapes/ and shapes-vae-ft/: give the folder `make shapes` wrote "
              "(build/shapes) or helpers/shapes/weights", file=sys.stderr)
        return 2
    hide_torchvision_notice()
    if args.dtypes != parser.get_default("dtypes") and not args.tweak_seeds:
        parser.error("--dtypes goes with --tweak-seeds (the facts are checked in all three precisions)")
    if args.tweak_seeds:
        first, _, last = args.tweak_seeds.partition("-")
        if not (first.isdigit() and (last or first).isdigit() and int(first) <= int(last or first)):
            parser.error(f"--tweak-seeds takes A-B with A <= B, such as 0-63, not {args.tweak_seeds!r}")
        dtypes = [getattr(torch, name.strip(), None) for name in args.dtypes.split(",")]
        if not all(isinstance(dtype, torch.dtype) for dtype in dtypes):
            parser.error(f"--dtypes takes names such as float32,bfloat16,float16, not {args.dtypes!r}")
        return scan_tweak(folder, list(range(int(first), int(last or first) + 1)), args.device, dtypes)
    failed = 0
    first = reference(folder, args.device)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for name, holds, detail in facts(folder, dtype, args.device, first):
            failed += not holds
            verdict, precision = "ok  " if holds else "FAIL", str(dtype).removeprefix("torch.")
            print(f"{verdict} {args.device:4} {precision:8} {name}: {detail}", flush=True)
    print(("every fact holds in every precision" if not failed else f"{failed} fact(s) fail: choose other seeds or "
           "prompts (helpers/prompts.py, the notebooks) before shipping this checkpoint")
          + f" ({time.perf_counter() - start:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
