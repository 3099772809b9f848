"""``python -m helpers.generate``: the command, in phases: plan, load, prepare the folder, make the pictures, finish."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

import helpers.generate as package

from ..errors import TutorialError
from .files import (
    STATE,
    Settings,
    batches,
    check_out_dir,
    done_lines,
    picture_name,
    png_bytes,
    read_prompts,
    refuse_other_settings,
    write_atomic,
    write_index,
)

SCHEDULERS = {
    "dpm++": "DPMSolverMultistepScheduler",
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "unipc": "UniPCMultistepScheduler",
}
CPU_BATCH = 4  # the default batch size where memory is not probed (CPU, MPS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command's options, checked."""
    parser = argparse.ArgumentParser(prog="python -m helpers.generate", description=package.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompts", type=Path, help="text file, one prompt per line")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for NNNNN.png and index.csv: new, empty, or an earlier run's (then it resumes)")
    parser.add_argument("--model", default=None,
                        help="shapes, a preset (tiny, sd15-random), hub id or local folder (default: "
                             "$TUTORIAL_MODEL, else the real model on a GPU and shapes on a CPU)")
    parser.add_argument("--dtype", default="recipe", choices=["recipe", "half", "float32", "float16", "bfloat16"],
                        help="recipe (default): float16 on a GPU; on a CPU bfloat16 where it is native and measured "
                             "faster than float32, else float32; half: the device's 16-bit type even where it is "
                             "emulated")
    parser.add_argument("--scheduler", default="dpm++", choices=list(SCHEDULERS), help="default dpm++")
    parser.add_argument("--steps", type=int, default=20, help="inference steps (default 20)")
    parser.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    parser.add_argument("--seed", type=int, default=0, help="base seed: line N gets seed + N (default 0)")
    parser.add_argument("--batch-size", default="auto",
                        help="pictures per pipeline call; auto (default): the largest that fits on CUDA (probed, up "
                             f"to --max-batch), {CPU_BATCH} on a CPU or MPS, or the earlier run's when resuming")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU only: threads per process; they change a picture's last bits, so they are part of "
                             "the settings (default: the launcher's, e.g. all cores for python -m and 1 under "
                             "accelerate launch, or the earlier run's when resuming)")
    parser.add_argument("--max-batch", type=int, default=32, help="the largest batch auto tries on CUDA (default 32)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.guidance < 0:
        parser.error("--guidance must be 0 or more")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.max_batch < 1:
        parser.error("--max-batch must be at least 1")
    if args.batch_size != "auto":
        try:
            args.batch_size = int(args.batch_size)
        except ValueError:
            parser.error(f"--batch-size takes a whole number or auto, not {args.batch_size!r}")
        if args.batch_size < 1:
            parser.error("--batch-size must be at least 1")
    return args


def set_scheduler(pipe, name: str) -> None:
    """Swap the pipeline's scheduler for one of SCHEDULERS, keeping the model's noise schedule."""
    import diffusers

    cls = getattr(diffusers, SCHEDULERS[name])
    pipe.scheduler = cls.from_config(pipe.scheduler.config)


def probe_batch(pipe, settings: Settings, limit: int, device: torch.device) -> int:
    """The largest batch (up to ``limit``) that runs without running out of memory on CUDA: 2-step trial runs."""
    from ..memory import find_max_batch

    def run(batch: int) -> None:
        generators = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
        pipe(["a probe"] * batch, generator=generators, num_inference_steps=2, guidance_scale=settings.guidance,
             output_type="pil")

    search = find_max_batch(run, limit=limit, device=device)
    if search.max_batch < 1:
        raise TutorialError("Even a batch of 1 runs out of memory here: try a smaller model or --dtype float16.")
    return search.max_batch


def choose_batch(args, earlier: dict | None, pipe, state, guess: Settings) -> int:
    """The batch size: given, else the earlier run's, else probed on CUDA (the smallest over processes), else 4."""
    if args.batch_size != "auto":
        return args.batch_size
    if earlier is not None and "batch" in earlier:
        return int(earlier["batch"])
    if state.device.type != "cuda":
        return CPU_BATCH
    from accelerate.utils import gather_object

    found = probe_batch(pipe, guess, args.max_batch, state.device)
    return min(gather_object([found])) if state.num_processes > 1 else found



@dataclass
class Plan:
    """What this process does: the prompts, the folder and any earlier run's settings, the device and dtype."""

    prompts: list[tuple[int, str]]
    out: Path
    earlier: dict | None
    spec: str
    dtype: torch.dtype


def plan(args, state) -> Plan:
    """Phase 1: read the prompts, check the folder and refuse other settings, before any model is loaded."""
    from ..device import as_dtype
    from ..models import resolve_model

    prompts = read_prompts(args.prompts)
    earlier = check_out_dir(args.out)
    dtype = as_dtype(args.dtype, state.device)
    spec, _ = resolve_model(args.model, state.device)
    known = {"model": spec, "dtype": str(dtype).removeprefix("torch."), "scheduler": args.scheduler,
             "steps": args.steps, "guidance": args.guidance, "seed": args.seed}
    if args.batch_size != "auto":
        known["batch"] = args.batch_size
    if args.threads and state.device.type == "cpu":
        known["threads"] = args.threads
    refuse_other_settings(args.out, earlier, known)  # a mistake is reported at once, not after the load
    return Plan(prompts, args.out, earlier, spec, dtype)


def load(args, state, job: Plan):
    """Phase 2: the pipeline with its scheduler and threads, and every setting that decides a picture's bytes."""
    from ..models import load_pipeline

    pipe = load_pipeline(job.spec, dtype=job.dtype, device=state.device, quiet=not state.is_main_process)
    if args.dtype == "recipe" and state.is_main_process:
        from ..device import recipe_dtype_reason

        print(f"generate: the recipe's precision, {recipe_dtype_reason(state.device)}")
    set_scheduler(pipe, args.scheduler)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    threads = None
    if state.device.type == "cpu":
        threads = args.threads or (job.earlier or {}).get("threads") or torch.get_num_threads()
        torch.set_num_threads(threads)
    settings = Settings(job.spec, str(job.dtype).removeprefix("torch."), args.scheduler, args.steps, args.guidance,
                        args.seed, 1, size, size, threads)
    settings = replace(settings, batch=choose_batch(args, job.earlier, pipe, state, settings))
    refuse_other_settings(job.out, job.earlier, asdict(settings))
    return pipe, settings


def prepare(state, job: Plan, settings: Settings, done: set[int]) -> None:
    """Phase 3, main process only: settings.json written, torn files and a finished run's index.csv removed."""
    out = job.out
    (out / STATE).mkdir(parents=True, exist_ok=True)
    for tmp in out.glob(".*.tmp"):  # torn writes of an interrupted run
        tmp.unlink()
    (out / "index.csv").unlink(missing_ok=True)  # index.csv is there only when a run has finished
    write_atomic(out / STATE / "settings.json", json.dumps(asdict(settings), indent=1).encode())
    print(f"generate: {len(job.prompts)} prompts, {len(done)} pictures already in {out}; {settings.text()}; "
          f"{state.num_processes} process(es) on {state.device.type}", flush=True)


def make(pipe, state, job: Plan, settings: Settings, todo: list, done: set[int]) -> int:
    """Phase 4: this process's share of the batches, each picture written whole and then recorded; how many."""
    from tqdm.auto import tqdm

    journal = job.out / STATE / f"journal-{state.process_index}.jsonl"
    made = 0
    with state.split_between_processes(todo) as mine:
        bar = tqdm(total=sum(len(b) for b in mine), unit="picture", disable=not state.is_main_process,
                   desc=f"rank 0 of {state.num_processes}" if state.num_processes > 1 else "generate")
        for batch in mine:
            tick = time.perf_counter()
            images = pipe([prompt for _, prompt in batch],
                          generator=[torch.Generator("cpu").manual_seed(settings.seed + line) for line, _ in batch],
                          num_inference_steps=settings.steps, guidance_scale=settings.guidance,
                          height=settings.height, width=settings.width, output_type="pil").images
            seconds = (time.perf_counter() - tick) / len(batch)
            records = []
            for (line, prompt), image in zip(batch, images, strict=True):
                if line in done:
                    continue
                seed = settings.seed + line
                write_atomic(job.out / picture_name(line), png_bytes(image, prompt, seed, settings))
                records.append({"line": line, "prompt": prompt, "seed": seed, "file": picture_name(line),
                                "seconds": round(seconds, 3), "rank": state.process_index,
                                "processes": state.num_processes, "settings": settings.text(), "time": time.time()})
            with open(journal, "a") as f:  # after the pictures: a record always points at a complete file
                f.write("".join(json.dumps(r) + "\n" for r in records))
            made += len(records)
            bar.update(len(batch))
        bar.close()
    return made


def finish(state, job: Plan, made: int, seconds: float) -> int:
    """Phase 5: the main process writes index.csv from every process's journal and says what is missing."""
    from accelerate.utils import gather_object

    total = sum(gather_object([made])) if state.num_processes > 1 else made
    if not state.is_main_process:
        return 0
    missing = write_index(job.out, job.prompts)
    rate = f"{total / seconds:.3f} pictures/s" if total else "nothing to do"
    print(f"generate: made {total} pictures in {seconds:.1f} s ({rate}) with {state.num_processes} process(es); "
          f"{len(job.prompts) - missing} of {len(job.prompts)} listed in {job.out / 'index.csv'}", flush=True)
    if missing:
        print(f"generate: {missing} pictures are missing: rerun the same command to make them", flush=True)
        return 1
    return 0


def generate(args: argparse.Namespace) -> int:
    """Make the pictures this process is given; the main process then writes index.csv."""
    from accelerate import PartialState

    from ..device import pick_device

    state = PartialState(cpu=pick_device().type == "cpu")
    job = plan(args, state)
    pipe, settings = load(args, state, job)
    done = done_lines(job.out, job.prompts, settings) if job.earlier is not None else set()
    todo = [batch for batch in batches(job.prompts, settings.batch) if any(line not in done for line, _ in batch)]
    state.wait_for_everyone()  # every process has planned from the same files before any is written
    if state.is_main_process:
        prepare(state, job, settings, done)
    state.wait_for_everyone()
    start = time.perf_counter()
    made = make(pipe, state, job, settings, todo, done)
    state.wait_for_everyone()
    try:
        return finish(state, job, made, time.perf_counter() - start)
    finally:  # PyTorch asks for it before exit: a process group left to the interpreter's teardown once aborted
        state.destroy_process_group()  # a rank with "terminate called without an active exception"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return generate(args)
    except TutorialError as err:
        if int(os.environ.get("RANK", "0")) == 0:  # under accelerate launch every process meets the same problem
            print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
