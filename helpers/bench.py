"""``python -m helpers.bench``: the guide's speed ladder at real scale, measured on this device.

Each rung keeps the previous rung's settings and adds one: full precision and PNDM at 50 steps (the guide's
baseline), half precision, DPM-Solver++ at 20 steps, channels-last memory layout with fused QKV projections,
on a Linux CPU an allocator setting (glibc keeps freed memory for reuse instead of handing it back to the
system and faulting it in again at the next call), then torch.compile. These are *exact* rungs: they change
precision, solver/step count as the guide does, layout, allocation, compilation or kernels, never the model.
With ``--approx``, an *approximate* rung follows: the last exact rung's settings with fewer steps than the
guide's 20, reported with its largest and mean pixel difference from that exact rung's image for the same seed.

For each rung: the UNet's latency per step (one call on a batch of 2: classifier-free guidance), the VAE decode
time, end-to-end seconds per image (measured directly when it is affordable, else steps x UNet + text encoder +
decode: the ``e2e how`` column says which), speedup over the baseline, iterations per second, core-seconds per
image (CPU), and achieved TFLOP/s with FLOPs counted by torch.utils.flop_counter on a meta-device copy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import peers
from .device import device_name, half_dtype, pick_device
from .memory import flush
from .pipelines import PROMPT, load_pipeline, quiet_logs
from .timing import time_it


@dataclass(frozen=True)
class Rung:
    """One configuration of the ladder."""

    name: str
    half: bool = False
    solver: str = "pndm"  # "pndm" or "dpm"
    steps: int = 50
    channels_last: bool = False
    keep_memory: bool = False
    compiled: bool = False
    exact: bool = True


def ladder(steps: int = 20, baseline_steps: int = 50, cpu: bool = False) -> list[Rung]:
    """The exact rungs, in order (the allocator rung only on a Linux CPU)."""
    base = Rung("float32 + PNDM (guide baseline)", steps=baseline_steps)
    half = replace(base, name="half precision + PNDM", half=True)
    dpm = replace(half, name="+ DPM-Solver++", solver="dpm", steps=steps)
    layout = replace(dpm, name="+ channels_last + fused QKV", channels_last=True)
    rungs = [base, half, dpm, layout]
    if cpu and sys.platform.startswith("linux"):
        rungs.append(replace(layout, name="+ allocator keeps freed memory", keep_memory=True))
    rungs.append(replace(rungs[-1], name="+ torch.compile", compiled=True))
    return rungs


def keep_freed_memory() -> None:
    """Ask glibc never to return freed memory to the system (no mmap for big blocks, no trimming).

    PyTorch's CPU allocator hands every activation back to malloc; large ones are mmapped and unmapped each
    call, so the next call pays page faults and zeroing again. This keeps the pages for reuse instead.
    """
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4
    if not (libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**62)):
        raise RuntimeError("glibc's mallopt refused the setting")


def seconds_needed(rung: Rung, state: Rung) -> int:
    """The budget a rung needs to start: minutes when it compiles (on a CPU and on a GPU alike), else 30 s."""
    return 240 if rung.compiled and not state.compiled else 30


def approximate(last: Rung, steps: int) -> Rung:
    """The approximate rung: the last exact rung's settings with fewer steps than the guide's 20."""
    return replace(last, name=f"approx: {last.name.lstrip('+ ')}, {steps} steps", steps=steps, exact=False)


def count_flops(pipe, height: int, width: int) -> dict[str, float]:
    """FLOPs of one guided UNet call, one VAE decode and the text encoder, counted on meta-device copies."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    latent = (pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    with quiet_logs(), torch.device("meta"):
        unet = type(pipe.unet).from_config(pipe.unet.config)
        vae = type(pipe.vae).from_config(pipe.vae.config)
        text = type(pipe.text_encoder)(pipe.text_encoder.config)
    counts = {}
    # The math backend spells attention out as matrix products, which the counter knows.
    with torch.device("meta"), torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
        cond = torch.empty(2, pipe.tokenizer.model_max_length, pipe.text_encoder.config.hidden_size)
        for key, call in {
            "unet": lambda: unet(torch.empty(2, *latent), torch.tensor(999), cond),
            "vae": lambda: vae.decode(torch.empty(1, *latent)),
            "text": lambda: text(torch.zeros(2, pipe.tokenizer.model_max_length, dtype=torch.long)),
        }.items():
            with FlopCounterMode(display=False) as counter:
                call()
            counts[key] = float(counter.get_total_flops())
    return counts


class Bench:
    """Applies the rungs to one pipeline, cumulatively, and measures each."""

    def __init__(self, model: str, device: torch.device, height: int | None, width: int | None, repeats: int):
        self.device, self.repeats = device, repeats
        self.pipe = load_pipeline(model, dtype=torch.float32, device=device, quiet=True)
        self.height = height or self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        self.width = width or self.height
        self.flops = count_flops(self.pipe, self.height, self.width)
        self.state = Rung("")
        self.compile_s = 0.0

    def apply(self, rung: Rung) -> None:
        """Move the pipeline from its current settings to the rung's (settings only ever get added)."""
        pipe, state = self.pipe, self.state
        with quiet_logs():
            if rung.half and not state.half:
                pipe.to(dtype=half_dtype(self.device))
            if rung.solver != state.solver:
                from diffusers import DPMSolverMultistepScheduler

                pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
            if rung.channels_last and not state.channels_last:
                pipe.unet.to(memory_format=torch.channels_last)
                pipe.vae.to(memory_format=torch.channels_last)
                pipe.fuse_qkv_projections()
            if rung.keep_memory and not state.keep_memory:
                keep_freed_memory()
            if rung.compiled and not state.compiled:
                pipe.unet.compile(fullgraph=True)
                pipe.vae.decoder.compile(fullgraph=True)
        self.state = rung

    @contextlib.contextmanager
    def _compile_context(self):
        if not self.state.compiled:
            yield
            return
        import warnings

        import torch._inductor.config as inductor

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dynamo's notes about diffusers' internals, not about the results
            # On a CPU, freezing folds the weights into the graph so oneDNN can pre-pack them for inference.
            with inductor.patch(freezing=self.device.type == "cpu"):
                yield

    def measure(self, rung: Rung, direct_limit: float) -> dict:
        """Time the rung's parts; generate a whole image too when its estimate is under ``direct_limit`` s."""
        pipe = self.pipe
        dtype = pipe.unet.dtype
        latent_shape = (1, pipe.unet.config.in_channels, self.height // pipe.vae_scale_factor,
                        self.width // pipe.vae_scale_factor)
        latents = torch.randn(latent_shape, generator=torch.Generator().manual_seed(0)).to(self.device, dtype)
        if self.state.channels_last:
            latents = latents.to(memory_format=torch.channels_last)
        unet_in = torch.cat([latents] * 2)
        timestep = torch.tensor(999, device=self.device)

        def encode():
            with torch.inference_mode():
                cond, uncond = pipe.encode_prompt(PROMPT, self.device, 1, True)
            return torch.cat([uncond, cond])

        def unet_call():
            with torch.inference_mode():
                return pipe.unet(unet_in, timestep, encoder_hidden_states=embeds).sample

        def decode():
            with torch.inference_mode():
                return pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample

        embeds = encode()
        with self._compile_context():
            warm = time.perf_counter()
            if self.state.compiled:
                self.generate(2)  # compiles the graphs the pipeline itself will use
            unet_call()  # these first calls are the warm-up
            decode()
            first = time.perf_counter() - warm
            enc = time_it(encode, repeats=self.repeats, warmup=0)
            unet = time_it(unet_call, repeats=self.repeats, warmup=0)
            vae = time_it(decode, repeats=self.repeats, warmup=0)
        if self.state.compiled and not self.compile_s:
            self.compile_s = first
        estimate = enc.median + rung.steps * unet.median + vae.median
        row = {
            "rung": rung.name, "kind": "exact" if rung.exact else "approximate", "dtype": str(dtype).split(".")[-1],
            "solver": rung.solver, "steps": rung.steps, "unet s/step": unet.median, "it/s": 1 / unet.median,
            "vae decode s": vae.median, "text s": enc.median, "e2e s": estimate, "e2e how": "estimated",
        }
        if estimate <= direct_limit:
            with self._compile_context():
                run = time_it(lambda: self.generate(rung.steps), repeats=1, warmup=0)
            row["e2e s"], row["e2e how"] = run.median, "measured"
            row["image"] = run.value
        total = rung.steps * self.flops["unet"] + self.flops["vae"] + self.flops["text"]
        row["TFLOP/s"] = total / row["e2e s"] / 1e12
        row["unet TFLOP/s"] = self.flops["unet"] / unet.median / 1e12
        if self.device.type == "cpu":
            row["core-s/image"] = row["e2e s"] * torch.get_num_threads()
        return row

    def generate(self, steps: int):
        return self.pipe(PROMPT, height=self.height, width=self.width, num_inference_steps=steps,
                         generator=torch.Generator().manual_seed(0), output_type="np").images[0]


def pixel_difference(image, reference) -> tuple[float, float]:
    """Largest and mean absolute difference between two images, in 0-255 pixel levels."""
    import numpy as np

    diff = np.abs(np.asarray(image, dtype=np.float64) - np.asarray(reference, dtype=np.float64)) * 255
    return float(diff.max()), float(diff.mean())


def format_table(rows: list[dict]):
    """The rows as a pandas DataFrame, rounded for printing."""
    import pandas as pd

    df = pd.DataFrame([{k: v for k, v in r.items() if k != "image"} for r in rows]).set_index("rung")
    return df.round({"unet s/step": 3, "it/s": 2, "vae decode s": 3, "text s": 3, "e2e s": 2, "speedup": 2,
                     "TFLOP/s": 2, "unet TFLOP/s": 2, "core-s/image": 1, "max diff": 1, "mean diff": 2})


def parse_args(argv, device: torch.device):
    parser = argparse.ArgumentParser(prog="python -m helpers.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sd15-random", help="preset, hub id or folder (default sd15-random)")
    parser.add_argument("--resolution", type=int, default=None, help="image height and width (default: model's)")
    parser.add_argument("--steps", type=int, default=20, help="steps for the DPM-Solver rungs (default 20)")
    parser.add_argument("--baseline-steps", type=int, default=50, help="PNDM steps of the first two rungs")
    parser.add_argument("--rungs", default="all",
                        help="which exact rungs, e.g. 1-3 or 1,3,5 (default: all); speedups are over the first one")
    parser.add_argument("--approx", action="store_true", help="add an approximate rung: the last one, fewer steps")
    parser.add_argument("--approx-steps", type=int, default=10, help="steps of the approximate rung (default 10)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per measurement (default 2)")
    parser.add_argument("--direct-limit", type=float, default=15.0,
                        help="measure end-to-end directly when the estimate is under this many seconds (the last "
                             "exact rung and the approximate one: whenever a third of the budget left allows)")
    parser.add_argument("--budget", type=float, default=560.0, help="skip rungs once this many seconds are used")
    parser.add_argument("--peers", action="store_true",
                        help="after the rungs, OpenVINO and ONNX Runtime on the same model, outside --budget "
                             '(needs pip install -e ".[peers]")')
    parser.add_argument("--out", type=Path, default=Path("build"), help="folder for bench.csv and bench.json")
    args = parser.parse_args(argv)
    for name in ("steps", "baseline_steps", "approx_steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.resolution is not None and (args.resolution < 64 or args.resolution % 64):
        parser.error("--resolution must be a multiple of 64, at least 64")
    count = len(ladder(cpu=device.type == "cpu"))
    try:
        picked = set()
        for part in args.rungs.replace("all", f"1-{count}").split(","):
            lo, _, hi = part.partition("-")
            picked.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        parser.error(f"--rungs takes numbers and ranges such as 1-3 or 1,4,5, not {args.rungs!r}")
    if not picked or min(picked) < 1 or max(picked) > count:
        parser.error(f"--rungs must name rungs between 1 and {count} on this device")
    args.picked = sorted(picked)
    return args


def main(argv: list[str] | None = None) -> int:
    device = pick_device()
    args = parse_args(argv, device)
    start = time.perf_counter()
    print(f"bench: {args.model} on {device_name(device)}, torch {torch.__version__}", flush=True)
    bench = Bench(args.model, device, args.resolution, args.resolution, args.repeats)
    print(f"bench: {bench.height}x{bench.width}; FLOPs per guided UNet call {bench.flops['unet'] / 1e12:.3f} T, "
          f"per VAE decode {bench.flops['vae'] / 1e12:.3f} T, text encoder {bench.flops['text'] / 1e12:.3f} T",
          flush=True)
    rungs = ladder(args.steps, args.baseline_steps, cpu=device.type == "cpu")
    chosen = [rungs[i - 1] for i in args.picked] + ([None] if args.approx else [])
    rows = []
    for number, rung in enumerate(chosen, 1):
        if rung is None:  # the approximate rung: whatever settings the exact rungs reached, with fewer steps
            rung = approximate(bench.state, args.approx_steps)
        left = args.budget - (time.perf_counter() - start)
        needs = seconds_needed(rung, bench.state)
        if left < needs:
            print(f"[{number}/{len(chosen)}] {rung.name}: skipped, {left:.0f} s of the {args.budget:.0f} s budget "
                  f"left and it needs about {needs} s", flush=True)
            continue
        print(f"[{number}/{len(chosen)}] {rung.name} ...", flush=True)
        bench.apply(rung)
        flush()
        try:
            key = rung is chosen[len(args.picked) - 1] or not rung.exact  # the last exact rung and the approximate one
            row = bench.measure(rung, max(args.direct_limit, left / 3) if key else args.direct_limit)
        except Exception as err:  # e.g. torch.compile without a working C++ compiler
            if not rung.compiled:
                raise
            print(f"    skipped: torch.compile failed here ({type(err).__name__}: {str(err).splitlines()[0]})")
            continue
        rows.append(row)
        print(f"    unet {row['unet s/step']:.3f} s/step, decode {row['vae decode s']:.3f} s, "
              f"e2e {row['e2e s']:.2f} s ({row['e2e how']})"
              + (f", compile took {bench.compile_s:.0f} s" if rung.compiled and rung.exact else ""), flush=True)
    if not rows:
        print("bench: no rung was measured")
        return 1
    if args.peers:
        rows += peers.measure(bench, args.model, args.steps, args.direct_limit)
    baseline = rows[0]["e2e s"]
    exact = [r for r in rows if r["kind"] == "exact"]
    best = min(exact, key=lambda r: r["e2e s"])
    # The approximate rung differs from the last exact rung in its step count only: compare with that image.
    reference = next((r["image"] for r in reversed(exact) if "image" in r), None)
    for row in rows:
        row["speedup"] = baseline / row["e2e s"]
        if row["kind"] == "approximate":
            if "image" in row and reference is not None:
                row["max diff"], row["mean diff"] = pixel_difference(row["image"], reference)
            else:
                print(f"    {row['rung']}: no pixel difference (an image was too slow to generate directly)")
    table = format_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "bench.csv")
    meta = {"device": device_name(device), "model": args.model, "height": bench.height, "width": bench.width,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "compile_s": bench.compile_s,
            "flops": bench.flops, "rows": json.loads(table.reset_index().to_json(orient="records"))}
    (args.out / "bench.json").write_text(json.dumps(meta, indent=1))
    import pandas as pd

    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table)
    print(f"wrote {args.out / 'bench.csv'} and bench.json; total {time.perf_counter() - start:.0f} s")
    if versus := peers.summary(rows):  # before the speedup line, which stays last
        print(versus)
    print(f"speedup: {baseline / best['e2e s']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
