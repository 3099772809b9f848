"""``python -m helpers.generate PROMPTS.txt --out DIR``: the tutorial's recipe on many prompts, in 1..N processes.

One prompt per line (blank lines are skipped). Each picture is ``DIR/NNNNN.png`` for line NNNNN of the file, made
with its own CPU generator seeded ``--seed`` + line number, so a picture depends only on its line and the settings.
By default: the recipe's precision (``device.recipe_dtype``: float32 on a CPU that would emulate bfloat16),
DPM-Solver++ at 20 steps, guidance 7.5, and the largest batch that fits (probed on CUDA; 4 elsewhere). Batches are
consecutive lines, formed the same way whatever the number of processes; the list of batches is split between
processes with Accelerate's ``PartialState``, so 1 or N processes write the same files with the same bytes. Batch
size is part of the settings: batched matrix products can round differently from single ones, so a picture can
differ (slightly, or more over many steps) under another batch size. On a CPU, so is the number of threads per
process (``--threads``), for the same reason.

``DIR/index.csv`` (line, prompt, seed, file, seconds, rank, processes, settings) is written once, by the main
process, when every picture is there. A rerun into the same DIR resumes: it keeps every picture that opens, has
the right size and is recorded for the same prompt, and makes the rest; an interrupted run loses at most the batch
in flight. Scale out with ``accelerate launch`` (see the README, "When one machine is not enough").
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .errors import TutorialError

SCHEDULERS = {
    "dpm++": "DPMSolverMultistepScheduler",
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "unipc": "UniPCMultistepScheduler",
}
CPU_BATCH = 4  # the default batch size where memory is not probed (CPU, MPS)
STATE = ".generate"  # DIR/.generate/ holds settings.json and one journal per rank
INDEX_COLUMNS = ["line", "prompt", "seed", "file", "seconds", "rank", "processes", "settings"]


@dataclass(frozen=True)
class Settings:
    """Everything besides the prompt and the line that decides a picture's bytes."""

    model: str
    dtype: str
    scheduler: str
    steps: int
    guidance: float
    seed: int
    batch: int
    height: int
    width: int
    threads: int | None  # threads per process on a CPU (they change the rounding there); None on a GPU

    def text(self) -> str:
        """One line for index.csv, e.g. 'model=tiny dtype=bfloat16 scheduler=dpm++ steps=20 ...'."""
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


def read_prompts(path: str | Path) -> list[tuple[int, str]]:
    """(line number, prompt) for every non-blank line of a UTF-8 text file; a one-line error if there are none."""
    path = Path(path)
    fix = "give a UTF-8 text file with one prompt per line"
    if not path.exists():
        raise TutorialError(f"{str(path)!r} does not exist: {fix}.")
    if not path.is_file():
        raise TutorialError(f"{str(path)!r} is not a file: {fix}.")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise TutorialError(f"{str(path)!r} is not a text file: {fix}.")
    prompts = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not prompts:
        raise TutorialError(f"{str(path)!r} has no prompts: {fix}.")
    return prompts


def picture_name(line: int) -> str:
    """The file name of a line's picture: 00001.png for line 1."""
    return f"{line:05d}.png"


def batches(prompts: list[tuple[int, str]], size: int) -> list[list[tuple[int, str]]]:
    """Consecutive lines in groups of ``size``: the same groups whatever the number of processes."""
    return [prompts[i:i + size] for i in range(0, len(prompts), size)]


def picture_ok(path: Path, width: int, height: int) -> bool:
    """Whether a PNG is complete: it opens, decodes, and has the expected size."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image.size == (width, height)
    except (OSError, SyntaxError, ValueError):
        return False


def read_journal(out: Path) -> dict[int, dict]:
    """The newest record of each line from every rank's journal in ``out/.generate`` (torn lines are skipped)."""
    records: dict[int, dict] = {}
    for journal in sorted((out / STATE).glob("journal-*.jsonl")):
        for text in journal.read_text(errors="replace").splitlines():
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                continue
            old = records.get(record["line"])
            if old is None or record["time"] >= old["time"]:
                records[record["line"]] = record
    return records


def check_out_dir(out: Path) -> dict | None:
    """The settings of an earlier run into ``out`` (None for a new or empty folder); refuse anyone else's folder."""
    if out.exists() and not out.is_dir():
        raise TutorialError(f"--out {str(out)!r} is a file: choose a folder (new, empty, or from an earlier run).")
    settings = out / STATE / "settings.json"
    if settings.is_file():
        try:
            return json.loads(settings.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TutorialError(f"{settings} is damaged: choose another --out.") from None
    if (out / STATE).is_dir():  # stopped before its settings were written: nothing else was made
        return None
    if out.is_dir() and any(out.iterdir()):
        raise TutorialError(f"--out {str(out)!r} holds files not made by helpers.generate: choose a new or empty "
                            "folder (your files are never overwritten).")
    return None


def done_lines(out: Path, prompts: list[tuple[int, str]], settings: Settings) -> set[int]:
    """Lines whose picture is complete and recorded for the same prompt and seed."""
    records = read_journal(out)
    done = set()
    for line, prompt in prompts:
        record = records.get(line)
        if (record and record["prompt"] == prompt and record["seed"] == settings.seed + line
                and picture_ok(out / picture_name(line), settings.width, settings.height)):
            done.add(line)
    return done


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file under a temporary name, then rename it: an interruption never leaves a torn file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def png_bytes(image, prompt: str, seed: int, settings: Settings) -> bytes:
    """The picture as PNG bytes, with its prompt, seed and settings in text chunks."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("prompt", prompt)
    info.add_text("seed", str(seed))
    info.add_text("settings", settings.text())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def set_scheduler(pipe, name: str) -> None:
    """Swap the pipeline's scheduler for one of SCHEDULERS, keeping the model's noise schedule."""
    import diffusers

    cls = getattr(diffusers, SCHEDULERS[name])
    pipe.scheduler = cls.from_config(pipe.scheduler.config)


def probe_batch(pipe, settings: Settings, limit: int, device: torch.device) -> int:
    """The largest batch (up to ``limit``) that runs without running out of memory on CUDA: 2-step trial runs."""
    from .memory import find_max_batch

    def run(batch: int) -> None:
        generators = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
        pipe(["a probe"] * batch, generator=generators, num_inference_steps=2, guidance_scale=settings.guidance,
             output_type="pil")

    search = find_max_batch(run, limit=limit, device=device)
    if search.max_batch < 1:
        raise TutorialError("Even a batch of 1 runs out of memory here: try a smaller model or --dtype float16.")
    return search.max_batch


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m helpers.generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompts", type=Path, help="text file, one prompt per line")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for NNNNN.png and index.csv: new, empty, or an earlier run's (then it resumes)")
    parser.add_argument("--model", default=None,
                        help="preset (tiny, sd15-random), hub id or local folder (default: $TUTORIAL_MODEL, else "
                             "the real model on a GPU and tiny on a CPU)")
    parser.add_argument("--dtype", default="recipe", choices=["recipe", "half", "float32", "float16", "bfloat16"],
                        help="recipe (default): float16 on a GPU, bfloat16 on a CPU that computes it natively, else "
                             "float32; half: the device's 16-bit type even where it is emulated")
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


def refuse_other_settings(out: Path, earlier: dict | None, settings: dict) -> None:
    """A one-line error naming what changed (e.g. 'steps 20 -> 4') if ``out`` holds a run with other settings."""
    if earlier is None:
        return
    changed = ", ".join(f"{k} {earlier.get(k)} -> {v}" for k, v in settings.items() if earlier.get(k) != v)
    if changed:
        raise TutorialError(f"--out {str(out)!r} holds an earlier run with other settings ({changed}): rerun with "
                            "its options to resume, or choose another --out.")


def write_index(out: Path, prompts: list[tuple[int, str]]) -> int:
    """Write out/index.csv from the journals, one row per prompt line; returns how many lines have no picture."""
    records = read_journal(out)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=INDEX_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    missing = 0
    for line, prompt in prompts:
        record = records.get(line)
        if record is None or record["prompt"] != prompt:
            missing += 1
            continue
        writer.writerow(record)
    write_atomic(out / "index.csv", buffer.getvalue().encode())
    return missing


def generate(args: argparse.Namespace) -> int:
    """Make the pictures this process is given; the main process then writes index.csv."""
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from .device import as_dtype, pick_device
    from .pipelines import load_pipeline, resolve_model

    state = PartialState(cpu=pick_device().type == "cpu")
    main = state.is_main_process
    prompts = read_prompts(args.prompts)
    out = args.out
    earlier = check_out_dir(out)
    device = state.device
    dtype = as_dtype(args.dtype, device)
    spec, _ = resolve_model(args.model, device)
    known = {"model": spec, "dtype": str(dtype).removeprefix("torch."), "scheduler": args.scheduler,
             "steps": args.steps, "guidance": args.guidance, "seed": args.seed}
    if args.batch_size != "auto":
        known["batch"] = args.batch_size
    if args.threads and device.type == "cpu":
        known["threads"] = args.threads
    refuse_other_settings(out, earlier, known)  # before loading the model: a mistake is reported at once
    pipe = load_pipeline(spec, dtype=dtype, device=device, quiet=not main)
    set_scheduler(pipe, args.scheduler)
    height = pipe.unet.config.sample_size * pipe.vae_scale_factor
    width = height
    threads = None
    if device.type == "cpu":
        threads = args.threads or (earlier or {}).get("threads") or torch.get_num_threads()
        torch.set_num_threads(threads)
    settings = Settings(spec, str(dtype).removeprefix("torch."), args.scheduler, args.steps, args.guidance,
                        args.seed, 1, height, width, threads)
    settings = replace(settings, batch=choose_batch(args, earlier, pipe, state, settings))
    refuse_other_settings(out, earlier, asdict(settings))
    done = done_lines(out, prompts, settings) if earlier is not None else set()
    todo = [batch for batch in batches(prompts, settings.batch) if any(line not in done for line, _ in batch)]
    state.wait_for_everyone()  # every process has planned from the same files before any is written
    if main:
        (out / STATE).mkdir(parents=True, exist_ok=True)
        for tmp in out.glob(".*.tmp"):  # torn writes of an interrupted run
            tmp.unlink()
        (out / "index.csv").unlink(missing_ok=True)  # index.csv is there only when a run has finished
        write_atomic(out / STATE / "settings.json", json.dumps(asdict(settings), indent=1).encode())
        print(f"generate: {len(prompts)} prompts, {len(done)} pictures already in {out}; {settings.text()}; "
              f"{state.num_processes} process(es) on {device.type}", flush=True)
    state.wait_for_everyone()
    start = time.perf_counter()
    journal = out / STATE / f"journal-{state.process_index}.jsonl"
    made = 0
    with state.split_between_processes(todo) as mine:
        bar = tqdm(total=sum(len(b) for b in mine), unit="picture", disable=not main,
                   desc=f"rank 0 of {state.num_processes}" if state.num_processes > 1 else "generate")
        for batch in mine:
            tick = time.perf_counter()
            images = pipe([prompt for _, prompt in batch],
                          generator=[torch.Generator("cpu").manual_seed(settings.seed + line) for line, _ in batch],
                          num_inference_steps=settings.steps, guidance_scale=settings.guidance,
                          height=height, width=width, output_type="pil").images
            seconds = (time.perf_counter() - tick) / len(batch)
            records = []
            for (line, prompt), image in zip(batch, images, strict=True):
                if line in done:
                    continue
                seed = settings.seed + line
                write_atomic(out / picture_name(line), png_bytes(image, prompt, seed, settings))
                records.append({"line": line, "prompt": prompt, "seed": seed, "file": picture_name(line),
                                "seconds": round(seconds, 3), "rank": state.process_index,
                                "processes": state.num_processes, "settings": settings.text(), "time": time.time()})
            with open(journal, "a") as f:  # after the pictures: a record always points at a complete file
                f.write("".join(json.dumps(r) + "\n" for r in records))
            made += len(records)
            bar.update(len(batch))
        bar.close()
    state.wait_for_everyone()
    seconds = time.perf_counter() - start
    from accelerate.utils import gather_object

    total = sum(gather_object([made])) if state.num_processes > 1 else made
    if main:
        missing = write_index(out, prompts)
        rate = f"{total / seconds:.3f} pictures/s" if total else "nothing to do"
        print(f"generate: made {total} pictures in {seconds:.1f} s ({rate}) with {state.num_processes} process(es); "
              f"{len(prompts) - missing} of {len(prompts)} listed in {out / 'index.csv'}", flush=True)
        if missing:
            print(f"generate: {missing} pictures are missing: rerun the same command to make them", flush=True)
            return 1
    return 0


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
