"""``python -m helpers.bench``: the guide's speed ladder at real scale, measured on this device, against its limit.

The rungs, each one setting added to the best rung so far: full precision and PNDM at 50 steps (the guide's
baseline), half precision, DPM-Solver++ at 20 steps, channels-last memory layout with fused QKV projections,
attention heads zero-padded to a multiple of 64, torch.compile, and last, on a Linux CPU, an allocator setting
(glibc keeps freed memory for reuse instead of handing it back to the system and faulting it in again at the
next call; it is last because it cannot be taken back). These are *exact* rungs: they change precision,
solver/step count as the guide does, layout, allocation, compilation or kernels, never the model. Each rung adds
its own setting to the best rung measured so far (the baseline's settings if none): a rung whose end-to-end time
is slower than that is printed with ``kept: no``, and the rungs after it build on the best settings instead (from
a freshly loaded pipeline when a setting must be taken off), so ``--rungs 1,3`` runs DPM-Solver++ in float32.
A rung so slow that its steps times one UNet call already take over twice the best end-to-end time (half
precision on a CPU that emulates bfloat16) is not timed further: its end-to-end time is that lower bound, and it
is not kept. With
``--approx``, an *approximate* rung follows: the best exact rung's settings with fewer steps than the guide's
20, reported with its largest and mean pixel difference from that exact rung's image for the same seed.

Before the ladder, a short probe measures this machine's limit: the best matrix-multiply throughput at
UNet-like sizes in float32 and in the device's 16-bit type (helpers.peak). For each rung: the UNet's latency per
step (one call on a batch of 2: classifier-free guidance, made as the pipeline makes it), the VAE decode time,
end-to-end seconds per image (measured directly when it is affordable, else steps x UNet + text encoder +
decode: the ``e2e how`` column says which), speedup over the baseline, iterations per second, core-seconds per
image (CPU), achieved TFLOP/s with FLOPs counted by torch.utils.flop_counter on a meta-device copy, the UNet's
TFLOP/s as a percentage of the measured peak for its dtype (``unet % peak``), and whether the rung was kept.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from . import peers
from .attention import pad_attention_heads
from .choice import family
from .compare import pixel_difference
from .device import cpu_model, device_name, half_dtype, isa_line, pick_device, recipe_dtype_reason
from .memory import flush
from .peak import measure_peak, percent_of_peak
from .pipelines import PROMPT, hide_torchvision_notice, load_pipeline, quiet_logs
from .timing import time_it

TOY_MODELS = ("tiny", "shapes")  # their figures go to build/bench-MODEL/, never over the real-size ones
PAD_MULTIPLE = 64  # attention heads are padded to a multiple of this (SD 1.5: 40, 80, 160 -> 64, 128, 192)


@dataclass(frozen=True)
class Rung:
    """One configuration of the ladder."""

    name: str
    half: bool = False
    solver: str = "pndm"  # "pndm" or "dpm"
    steps: int = 50
    channels_last: bool = False  # with fused QKV projections
    pad_heads: bool = False
    compiled: bool = False
    keep_memory: bool = False
    exact: bool = True


# Settings that only a freshly loaded pipeline can take off again (the solver is swapped either way; glibc's
# allocator setting cannot be taken off at all).
UNDONE_BY_RELOADING = ("half", "channels_last", "pad_heads", "compiled")


def ladder(steps: int = 20, baseline_steps: int = 50, cpu: bool = False) -> list[Rung]:
    """The exact rungs as planned, each adding one setting (the allocator rung last, on a Linux CPU only)."""
    base = Rung("float32 + PNDM (guide baseline)", steps=baseline_steps)
    half = replace(base, name="half precision + PNDM", half=True)
    dpm = replace(half, name="+ DPM-Solver++", solver="dpm", steps=steps)
    layout = replace(dpm, name="+ channels_last + fused QKV", channels_last=True)
    padded = replace(layout, name=f"+ attention heads padded to x{PAD_MULTIPLE}", pad_heads=True)
    compiled = replace(padded, name="+ torch.compile", compiled=True)
    rungs = [base, half, dpm, layout, padded, compiled]
    if cpu and sys.platform.startswith("linux"):
        rungs.append(replace(compiled, name="+ allocator keeps freed memory", keep_memory=True))
    return rungs


def build_on(best: Rung, rung: Rung, before: Rung | None) -> Rung:
    """``rung`` as climbed from ``best``: the best settings plus what ``rung`` changes from ``before``, its
    predecessor in the whole ladder (the same as ``rung`` when every rung so far was measured and kept)."""
    if before is None:
        return rung
    changes = {f.name: getattr(rung, f.name) for f in fields(Rung) if getattr(rung, f.name) != getattr(before, f.name)}
    return replace(best, **changes)


def keeps(e2e: float, best_e2e: float | None) -> bool:
    """Whether a rung of ``e2e`` seconds per image is kept: it is not slower than the best rung so far."""
    return best_e2e is None or e2e <= best_e2e


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


def approximate(best: Rung, steps: int) -> Rung:
    """The approximate rung: the best exact rung's settings with fewer steps than the guide's 20."""
    return replace(best, name=f"approx: {best.name.lstrip('+ ')}, {steps} steps", steps=steps, exact=False)


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
    """Moves one pipeline from rung to rung and measures each."""

    def __init__(self, model: str, device: torch.device, height: int | None, width: int | None, repeats: int):
        self.model, self.device, self.repeats = model, device, repeats
        self.pipe = load_pipeline(model, dtype=torch.float32, device=device, quiet=True)
        self.first_scheduler = self.pipe.scheduler  # the model's own (PNDM for SD 1.5), to go back to
        self.height = height or self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        self.width = width or self.height
        self.flops = count_flops(self.pipe, self.height, self.width)
        self.state = Rung("")
        self.memory_kept = False  # glibc's setting, once made, holds for the rest of the process
        self.compile_s = 0.0
        self.graphs = 0  # graphs torch.compile made, warm-up included
        self.freezing_before = None  # inductor's freezing setting before the compiled rung changed it

    def uncompile(self) -> None:
        """Drop the compiled graphs and give inductor's freezing setting back its value from before."""
        if self.freezing_before is not None:
            import torch._inductor.config as inductor

            torch._dynamo.reset()
            inductor.freezing, self.freezing_before = self.freezing_before, None

    def reload(self) -> None:
        """A freshly loaded pipeline in float32 with PNDM, nothing compiled: the way to take settings off."""
        self.pipe = None
        self.uncompile()
        flush()
        self.pipe = load_pipeline(self.model, dtype=torch.float32, device=self.device, quiet=True)
        self.state = Rung("")

    def apply(self, rung: Rung) -> None:
        """Move the pipeline from its current settings to the rung's, reloading it when one must come off."""
        if any(getattr(self.state, key) and not getattr(rung, key) for key in UNDONE_BY_RELOADING):
            self.reload()
        pipe, state = self.pipe, self.state
        with quiet_logs():
            if rung.half and not state.half:
                pipe.to(dtype=half_dtype(self.device))
            if rung.solver != state.solver:
                from diffusers import DPMSolverMultistepScheduler

                scheduler = DPMSolverMultistepScheduler if rung.solver == "dpm" else type(self.first_scheduler)
                pipe.scheduler = scheduler.from_config(self.first_scheduler.config)
            fused = rung.channels_last and not state.channels_last
            if fused:
                pipe.unet.to(memory_format=torch.channels_last)
                pipe.vae.to(memory_format=torch.channels_last)
                pipe.fuse_qkv_projections()  # this also resets the attention processors: pad after it
            if rung.pad_heads and (fused or not state.pad_heads):
                pad_attention_heads(pipe.unet, PAD_MULTIPLE)
            if rung.compiled and not state.compiled:
                import torch._inductor.config as inductor

                # Freezing folds the weights into the graph so that oneDNN can pre-pack them (CPU inference).
                # Inductor reads it when it compiles, which happens at the first call: so it is set for the
                # rest of the process, not only around the warm-up, and any later recompile is frozen too.
                self.freezing_before = inductor.freezing
                inductor.freezing = self.device.type == "cpu"
                pipe.unet.compile(fullgraph=True)
                pipe.vae.decoder.compile(fullgraph=True)
            if rung.keep_memory and not self.memory_kept:
                keep_freed_memory()
                self.memory_kept = True
        self.state = rung

    @contextlib.contextmanager
    def _quiet_compiler(self):
        if not self.state.compiled:
            yield
            return
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dynamo's notes about diffusers' internals, not about the results
            yield

    def calls(self) -> dict:
        """The text encoder, one guided UNet step and the VAE decode, each called exactly as the pipeline calls it.

        Contiguous latents, the prompt's embeddings and a 0-d int64 timestep made outside inference mode,
        no_grad (the pipeline's own mode) and ``return_dict=False``: with torch.compile, a call that differs in
        any of these (say channels-last latents, or inference tensors) would compile and time another graph.
        """
        pipe = self.pipe
        latent_shape = (1, pipe.unet.config.in_channels, self.height // pipe.vae_scale_factor,
                        self.width // pipe.vae_scale_factor)
        latents = torch.randn(latent_shape, generator=torch.Generator().manual_seed(0)).to(self.device, pipe.unet.dtype)
        timestep = torch.tensor(999, device=self.device)

        @torch.no_grad()
        def encode():
            cond, uncond = pipe.encode_prompt(PROMPT, self.device, 1, True)
            return torch.cat([uncond, cond])

        embeds = encode()

        @torch.no_grad()
        def unet_call():
            return pipe.unet(torch.cat([latents] * 2), timestep, encoder_hidden_states=embeds, timestep_cond=None,
                             cross_attention_kwargs=None, added_cond_kwargs=None, return_dict=False)[0]

        @torch.no_grad()
        def decode():
            return pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]

        return {"text": encode, "unet": unet_call, "vae": decode}

    def measure(self, rung: Rung, direct_limit: float, best_e2e: float | None = None) -> dict:
        """Time the rung's parts; generate a whole image too when its estimate is under ``direct_limit`` s.

        When ``rung.steps`` times the first UNet call already exceeds twice ``best_e2e``, the rung cannot be
        kept: it is timed no further, and its end-to-end time is that lower bound (``e2e how``: 'at least').
        """
        dtype = self.pipe.unet.dtype
        calls = self.calls()
        encode, unet_call, decode = calls["text"], calls["unet"], calls["vae"]
        with self._quiet_compiler():
            warm = time.perf_counter()
            if self.state.compiled:
                self.generate(2)  # compiles the graphs the pipeline itself uses (the calls below reuse them)
            unet_call()  # these first calls are the warm-up
            if not self.state.compiled and best_e2e and rung.steps * (time.perf_counter() - warm) > 2 * best_e2e:
                return self.hopeless(rung, time.perf_counter() - warm)
            decode()
            first = time.perf_counter() - warm
            graphs = compiled_graphs() if self.state.compiled else None
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
            with self._quiet_compiler():
                run = time_it(lambda: self.generate(rung.steps), repeats=1, warmup=0)
            row["e2e s"], row["e2e how"] = run.median, "measured"
            row["image"] = run.value
        if graphs is not None:  # the warm-up compiled what the pipeline runs: timing should compile nothing more
            self.graphs = compiled_graphs()
            if self.graphs != graphs:
                print(f"    note: torch.compile made {self.graphs - graphs} more graph(s) while timing")
        self.add_rates(row, rung.steps)
        return row

    def hopeless(self, rung: Rung, unet_s: float) -> dict:
        """The row of a rung timed by one UNet call only: its steps times that call are already far too slow."""
        row = {"rung": rung.name, "kind": "exact" if rung.exact else "approximate",
               "dtype": str(self.pipe.unet.dtype).split(".")[-1], "solver": rung.solver, "steps": rung.steps,
               "unet s/step": unet_s, "it/s": 1 / unet_s, "vae decode s": float("nan"), "text s": float("nan"),
               "e2e s": rung.steps * unet_s, "e2e how": "at least"}
        self.add_rates(row, rung.steps)
        return row

    def add_rates(self, row: dict, steps: int) -> None:
        """Add achieved TFLOP/s (whole image and UNet) and, on a CPU, core-seconds per image to a measured row."""
        total = steps * self.flops["unet"] + self.flops["vae"] + self.flops["text"]
        row["TFLOP/s"] = total / row["e2e s"] / 1e12
        row["unet TFLOP/s"] = self.flops["unet"] / row["unet s/step"] / 1e12
        if self.device.type == "cpu":
            row["core-s/image"] = row["e2e s"] * torch.get_num_threads()

    def generate(self, steps: int):
        return self.pipe(PROMPT, height=self.height, width=self.width, num_inference_steps=steps,
                         generator=torch.Generator().manual_seed(0), output_type="np").images[0]


def flops_text(flops: float) -> str:
    """A FLOP count for the header: in T (10^12) at real size, in G (10^9) for a toy model whose T would read 0.000."""
    return f"{flops / 1e12:.3f} T" if flops >= 1e11 else f"{flops / 1e9:.3f} G"


def compiled_graphs() -> int:
    """How many graphs torch.compile has made in this process so far (recompiles included)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def format_table(rows: list[dict]):
    """The rows as a pandas DataFrame, rounded for printing."""
    import pandas as pd

    df = pd.DataFrame([{k: v for k, v in r.items() if k != "image"} for r in rows]).set_index("rung")
    return df.round({"unet s/step": 3, "it/s": 2, "vae decode s": 3, "text s": 3, "e2e s": 2, "speedup": 2,
                     "TFLOP/s": 2, "unet TFLOP/s": 2, "unet % peak": 1, "core-s/image": 1, "max diff": 1,
                     "mean diff": 2})


def parse_args(argv, device: torch.device):
    parser = argparse.ArgumentParser(prog="python -m helpers.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sd15-random", help="preset, hub id or folder (default sd15-random)")
    parser.add_argument("--resolution", type=int, default=None, help="image height and width (default: model's)")
    parser.add_argument("--steps", type=int, default=20, help="steps for the DPM-Solver rungs (default 20)")
    parser.add_argument("--baseline-steps", type=int, default=50, help="PNDM steps of the first two rungs")
    parser.add_argument("--rungs", default="all",
                        help="which exact rungs, e.g. 1-3 or 1,3,5 (default: all); speedups are over the first one")
    parser.add_argument("--approx", action="store_true", help="add an approximate rung: the best one, fewer steps")
    parser.add_argument("--approx-steps", type=int, default=10, help="steps of the approximate rung (default 10)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per measurement (default 2)")
    parser.add_argument("--direct-limit", type=float, default=15.0,
                        help="measure end-to-end directly when the estimate is under this many seconds (the last "
                             "exact rung and the approximate one: whenever a third of the budget left allows)")
    parser.add_argument("--peak-seconds", type=float, default=0.25,
                        help="seconds of the peak probe per matrix size and dtype (default 0.25)")
    parser.add_argument("--budget", type=float, default=1500.0,
                        help="skip rungs once this many seconds are used (default 1500)")
    parser.add_argument("--peers", action="store_true",
                        help="after the rungs, OpenVINO and ONNX Runtime on the same model, outside --budget "
                             '(needs pip install -e ".[peers]")')
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for bench.csv and bench.json (default build/; build/bench-MODEL/ for the toy "
                             "models tiny and shapes, so that they never replace the real-size figures)")
    args = parser.parse_args(argv)
    if args.out is None:  # a toy model, by name or by folder, gets its own: build/bench.json is real-size figures
        toy = args.model if args.model in TOY_MODELS else family(args.model)
        args.out = Path("build") / f"bench-{toy}" if toy in TOY_MODELS else Path("build")
    for name in ("steps", "baseline_steps", "approx_steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.peak_seconds <= 0:
        parser.error("--peak-seconds must be positive")
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


def climb(bench: Bench, plan: list[Rung], args, start: float, peak: dict[str, float],
          whole: list[Rung] | None = None) -> list[dict]:
    """Measure the planned rungs, each built on the best exact rung so far, then the approximate one if asked.

    ``plan`` is the rungs picked from ``whole``, the ladder (default: ``plan`` itself); each adds to the best rung
    only what it adds to its predecessor in ``whole``, so a rung left out of the plan adds nothing.
    """
    whole = whole or plan
    rows, best, best_row = [], None, None
    total = len(plan) + args.approx
    for number, planned in enumerate(plan + ([None] if args.approx else []), 1):
        if planned is None:  # the approximate rung: the best exact settings with fewer steps
            if best is None:
                break
            rung = approximate(best, args.approx_steps)
        else:
            index = whole.index(planned)
            before = whole[index - 1] if index else None
            rung = build_on(best or whole[0], planned, before)
        left = args.budget - (time.perf_counter() - start)
        needs = seconds_needed(rung, bench.state)
        if left < needs:
            print(f"[{number}/{total}] {rung.name}: skipped, {left:.0f} s of the {args.budget:.0f} s budget "
                  f"left and it needs about {needs} s", flush=True)
            continue
        print(f"[{number}/{total}] {rung.name} ...", flush=True)
        bench.apply(rung)
        if bench.memory_kept and not rung.keep_memory:
            print("    (glibc's allocator setting from an earlier rung cannot be taken back: it still holds)")
        flush()
        try:
            key = planned is plan[-1] or not rung.exact  # the last exact rung and the approximate one
            row = bench.measure(rung, max(args.direct_limit, left / 3) if key else args.direct_limit,
                                best_row["e2e s"] if best_row else None)
        except Exception as err:  # e.g. torch.compile without a working C++ compiler
            if not rung.compiled:
                raise
            print(f"    skipped: torch.compile failed here ({type(err).__name__}: {str(err).splitlines()[0]})")
            continue
        row["unet % peak"] = percent_of_peak(row["unet TFLOP/s"], row["dtype"], peak)
        if rung.exact:
            kept = keeps(row["e2e s"], best_row["e2e s"] if best_row else None)
            row["kept"] = "yes" if kept else "no"
            if kept:
                best, best_row = rung, row
        else:
            row["kept"] = "-"
            add_pixel_difference(bench, row, best, best_row, args.budget - (time.perf_counter() - start))
        rows.append(row)
        print(f"    unet {row['unet s/step']:.3f} s/step ({row['unet % peak'] or 0:.0f} % of peak), decode "
              f"{row['vae decode s']:.3f} s, e2e {row['e2e s']:.2f} s ({row['e2e how']}), kept: {row['kept']}"
              + (f", compile took {bench.compile_s:.0f} s" if rung.compiled and rung.exact else ""), flush=True)
    return rows


def add_pixel_difference(bench: Bench, row: dict, best: Rung, best_row: dict, left: float) -> None:
    """The approximate row's pixel difference from the best exact rung's image, made now if it was not yet."""
    if "image" not in row:
        print(f"    {row['rung']}: no pixel difference (its image was too slow to generate directly)")
        return
    if "image" not in best_row:
        if best_row["e2e s"] > left / 3:
            print(f"    {row['rung']}: no pixel difference (the best exact rung's image is too slow to make)")
            return
        with bench._quiet_compiler():
            best_row["image"] = bench.generate(best.steps)  # same settings, the best rung's step count
    diff = pixel_difference(row["image"], best_row["image"])
    row["max diff"], row["mean diff"] = diff.max, diff.mean


def main(argv: list[str] | None = None) -> int:
    device = pick_device()
    args = parse_args(argv, device)
    hide_torchvision_notice()  # transformers' note about an optional package, not about the bench
    start = time.perf_counter()
    print(f"bench: {args.model} on {device_name(device)}, torch {torch.__version__}", flush=True)
    print(f"bench: CPU {cpu_model()}; {isa_line()}", flush=True)
    print(f"bench: the tutorial's recipe runs in {recipe_dtype_reason(device)}", flush=True)
    peak = measure_peak(device, seconds=args.peak_seconds)
    print("bench: peak matrix multiply at UNet sizes (measured now): "
          + ", ".join(f"{dtype} {tflops:.2f} TFLOP/s" for dtype, tflops in peak.items()), flush=True)
    bench = Bench(args.model, device, args.resolution, args.resolution, args.repeats)
    print(f"bench: {bench.height}x{bench.width}; FLOPs per guided UNet call {flops_text(bench.flops['unet'])}, "
          f"per VAE decode {flops_text(bench.flops['vae'])}, text encoder {flops_text(bench.flops['text'])}",
          flush=True)
    ready = peers.ready_on(device) if args.peers else []  # a missing extra is said now, not after the rungs
    rungs = ladder(args.steps, args.baseline_steps, cpu=device.type == "cpu")
    try:
        rows = climb(bench, [rungs[i - 1] for i in args.picked], args, start, peak, rungs)
    finally:
        bench.uncompile()
    if not rows:
        print("bench: no rung was measured")
        return 1
    if args.peers:
        rows += peers.measure(bench, args.model, args.steps, args.direct_limit, ready)
    baseline = rows[0]["e2e s"]
    best = min((r for r in rows if r["kind"] == "exact"), key=lambda r: r["e2e s"])
    for row in rows:
        row["speedup"] = baseline / row["e2e s"]
    table = format_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "bench.csv")
    meta = {"device": device_name(device), "cpu": cpu_model(), "isa": isa_line(), "peak TFLOP/s": peak,
            "model": args.model, "height": bench.height, "width": bench.width, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "compile_s": bench.compile_s, "compiled graphs": bench.graphs,
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
