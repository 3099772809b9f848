"""``python -m helpers.bench``: the command; what it measures is described in ``helpers/bench/__init__.py``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import helpers.bench as package

from ..bench_figures import format_table, profile_chart, profile_table, write_figures
from ..device import cpu_model, device_name, isa_line, native_half, pick_device, recipe_dtype_reason
from ..errors import TutorialError
from ..models import choose_model, hide_torchvision_notice, model_kind
from . import peers
from .flops import flops_text
from .ladder import climb, ladder
from .peak import measure_peak, percent_of_peak
from .runner import Bench, give_back_freed_memory

TOY_MODELS = ("tiny", "shapes")  # their figures go to build/bench-MODEL/, never over the real-size ones


def parse_args(argv, device: torch.device) -> argparse.Namespace:
    """The command's options, checked; ``picked`` holds the rung numbers to run."""
    whole = ladder(cpu=device.type == "cpu")
    numbered = "\n".join(f"  {i:2}  {rung.name}" for i, rung in enumerate(whole, 1))
    listing = f"The rungs on this device ({device.type}), as --rungs numbers them:\n{numbered}"
    parser = argparse.ArgumentParser(prog="python -m helpers.bench", description=package.__doc__, epilog=listing,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sd15-random", help="preset, hub id or folder (default sd15-random)")
    parser.add_argument("--resolution", type=int, default=None, help="image height and width (default: model's)")
    parser.add_argument("--steps", type=int, default=20, help="steps for the DPM-Solver rungs (default 20)")
    parser.add_argument("--baseline-steps", type=int, default=50, help="PNDM steps of the first two rungs")
    parser.add_argument("--rungs", default=None,
                        help="which exact rungs, e.g. 1-3 or 1,3,5, or all (default: all but half precision on a CPU "
                             "that emulates bfloat16); speedups are over the first one")
    parser.add_argument("--approx", action="store_true",
                        help="add approximate rows: the best rung at fewer steps, token merging and DeepCache")
    parser.add_argument("--approx-steps", type=int, default=10, help="steps of the fewer-steps row (default 10)")
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
                             '(needs the peers extra: pip install "efficient-diffusion[peers]"; '
                             'in a clone, pip install -e ".[peers]")')
    parser.add_argument("--profile", action="store_true",
                        help="after each rung's timing, one more UNet step and decode under torch.profiler: seconds "
                             "and share of the peak for convolution, attention, linear, normalisation and the rest "
                             "(OpenVINO's own per-layer times beside them with --peers); written to profile.csv and "
                             "profile.png")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for bench.csv and bench.json (default build/; build/bench-MODEL/ for the toy "
                             "models tiny and shapes, so that they never replace the real-size figures)")
    args = parser.parse_args(argv)
    if args.out is None:  # a toy model, by name or by folder, gets its own: build/bench.json is real-size figures
        toy = args.model if args.model in TOY_MODELS else model_kind(args.model)
        args.out = Path("build") / f"bench-{toy}" if toy in TOY_MODELS else Path("build")
    for name in ("steps", "baseline_steps", "approx_steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.profile and device.type not in ("cpu", "cuda"):
        parser.error(f"--profile times CPU and CUDA work; on {device.type} run without it")
    if args.peak_seconds <= 0:
        parser.error("--peak-seconds must be positive")
    if args.resolution is not None and (args.resolution < 64 or args.resolution % 64):
        parser.error("--resolution must be a multiple of 64, at least 64")
    count = len(whole)
    # Emulated bfloat16 takes over ten minutes for one real-size UNet call, and the recipe runs float32 there.
    half = next(i for i, rung in enumerate(whole, 1) if rung.half)
    args.left_out = [half] if args.rungs is None and not native_half(device) else []
    try:
        picked = set()
        for part in (args.rungs or "all").replace("all", f"1-{count}").split(","):
            lo, _, hi = part.partition("-")
            picked.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        parser.error(f"--rungs takes numbers and ranges such as 1-3 or 1,4,5, not {args.rungs!r}")
    if not picked or min(picked) < 1 or max(picked) > count:
        names = "; ".join(f"{i} {rung.name.lstrip('+ ')}" for i, rung in enumerate(whole, 1))
        parser.error(f"--rungs must name rungs between 1 and {count} on this device ({names})")
    args.picked = sorted(picked - set(args.left_out))
    # Emulated bfloat16 runs the probe's products at a few GFLOP/s (about 45 s of a 55-s bench of tiny on an AVX2
    # EPYC). Its peak is probed only where it is native or the half-precision rung is picked: a rung adds only its
    # own change to the best rung so far, so no rung runs in bfloat16 without that one.
    args.probe_half = native_half(device) or half in args.picked
    return args


def header(device: torch.device, args) -> dict[str, float]:
    """Phase 1: what runs where, the recipe's precision here, and the machine's limit, measured now."""
    print(f"bench: {args.model} on {device_name(device)}, torch {torch.__version__}", flush=True)
    print(f"bench: CPU {cpu_model()}; {isa_line()}", flush=True)
    print(f"bench: the tutorial's recipe runs in {recipe_dtype_reason(device)}", flush=True)
    for number in args.left_out:
        print(f"bench: rung {number} (half precision) left out: this CPU emulates bfloat16, so one UNet call would take"
              f" minutes at real size; --rungs all (or a list naming {number}) times it anyway", flush=True)
    peak = measure_peak(device, seconds=args.peak_seconds, half=args.probe_half)
    print("bench: peak matrix multiply at UNet sizes (measured now): "
          + ", ".join(f"{dtype} {tflops:.2f} TFLOP/s" for dtype, tflops in peak.items())
          + ("" if args.probe_half else "; bfloat16 not probed (emulated here, and no rung runs it)"),
          flush=True)
    return peak


def recheck_peak(rows: list[dict], profiles: list[dict], peak: dict[str, float], device: torch.device, args) -> None:
    """Phase 3b: the peak probed again after the rungs; the higher of the two probes counts (a busy moment only
    lowers one: the first probe of one run read 0.18 TFLOP/s where the same CPU gave 0.32 alone, before and after),
    and the shares of it in the rows and in ``--profile``'s breakdown follow."""
    again = measure_peak(device, seconds=args.peak_seconds, half=args.probe_half)
    if all(again[dtype] <= 1.05 * peak[dtype] for dtype in peak):
        return
    peak.update({dtype: max(peak[dtype], again[dtype]) for dtype in peak})
    print("bench: peak probed again after the rungs, higher than at the start, so the shares of the peak use "
          + ", ".join(f"{dtype} {tflops:.2f} TFLOP/s" for dtype, tflops in peak.items()), flush=True)
    for row in rows:
        if row.get("unet % peak") is not None and row.get("unet TFLOP/s") is not None:
            row["unet % peak"] = percent_of_peak(row["unet TFLOP/s"], row["dtype"], peak)
    dtypes = {row["rung"]: row["dtype"] for row in rows}
    for kind in profiles:
        if kind["% of peak"] is not None and kind["rung"] in dtypes:
            kind["% of peak"] = percent_of_peak(kind["TFLOP/s"], dtypes[kind["rung"]], peak)


def report(rows: list[dict], bench: Bench, args, peak: dict[str, float], start: float) -> None:
    """Phase 4: speedups over the first rung, the table printed and written, the comparison lines last."""
    import pandas as pd

    baseline = rows[0]["e2e s"]
    best = min((r for r in rows if r["kind"] == "exact"), key=lambda r: r["e2e s"])
    for row in rows:
        row["speedup"] = baseline / row["e2e s"]
    table = format_table(rows)
    device = bench.device
    write_figures(table, args.out, {
        "device": device_name(device), "cpu": cpu_model(), "isa": isa_line(), "peak TFLOP/s": peak,
        "model": args.model, "height": bench.height, "width": bench.width, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "compile s": bench.compile_s, "compiled graphs": bench.graphs,
        "flops": bench.flops, **({"profile": bench.profiles} if bench.profiles else {})})
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table)
        if bench.profiles:
            breakdown = profile_table(bench.profiles)
            breakdown.to_csv(args.out / "profile.csv")
            print("where the time goes (seconds per kind of work; % of the measured peak in brackets):")
            print(breakdown.round({c: 3 if c.endswith(" s") else 0 for c in breakdown.columns}))
            profile_chart(bench.profiles, args.out / "profile.png", f"{cpu_model()}, {torch.get_num_threads()} "
                          f"threads: {args.model} at {bench.height}x{bench.width}")
    wrote = "bench.json, profile.csv and profile.png" if bench.profiles else "bench.json"
    print(f"wrote {args.out / 'bench.csv'} and {wrote}; total {time.perf_counter() - start:.0f} s")
    if versus := peers.summary(rows):  # before the speedup line, which stays last
        print(versus)
    print(f"speedup: {baseline / best['e2e s']:.1f}x")


def main(argv: list[str] | None = None) -> int:
    device = pick_device()
    args = parse_args(argv, device)
    hide_torchvision_notice()  # transformers' note about an optional package, not about the bench
    try:
        choose_model(device, args.model, quiet=True)  # a bad name or an unreachable Hub: one line, before any work
        return run(args, device)
    except TutorialError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, device: torch.device) -> int:
    """Phases 1-3 (the header and peaks, the pipeline, the rungs and peers, the peak again), then the report."""
    start = time.perf_counter()
    peak = header(device, args)
    # Phase 2: the pipeline, at the size it is timed at, and its FLOPs
    bench = Bench(args.model, device, args.resolution, args.resolution, args.repeats)
    print(f"bench: {bench.height}x{bench.width}; FLOPs per guided UNet call {flops_text(bench.flops['unet'])}, "
          f"per VAE decode {flops_text(bench.flops['vae'])}, text encoder {flops_text(bench.flops['text'])}",
          flush=True)
    ready = peers.ready_on(device) if args.peers else []  # a missing extra is said now, not after the rungs
    # Phase 3: the rungs, then the peers
    rungs = ladder(args.steps, args.baseline_steps, cpu=device.type == "cpu")
    try:
        rows = climb(bench, [rungs[i - 1] for i in args.picked], args, start, peak, rungs)
    finally:
        bench.uncompile()
    if not rows:
        print("bench: no rung was measured")
        return 1
    if ready:
        bench.release()  # 21.9 GiB at most on a 23-GiB EPYC with it kept, 22.2 GiB once the linear layers were packed
        if bench.memory_kept:
            give_back_freed_memory()
            print("peers: glibc's allocator back to its defaults and its kept memory handed back first", flush=True)
    rows += peers.run_peers(bench, args.model, args.steps, args.direct_limit, ready, peak if args.profile else None)
    recheck_peak(rows, bench.profiles, peak, device, args)
    report(rows, bench, args, peak, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
