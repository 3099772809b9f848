"""The ladder: its rungs as planned, and the climb that measures each on top of the best rung so far."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, fields, replace

from ..compare import pixel_difference
from ..memory import flush
from .attention import kernel_error, kernel_isa
from .linear import onednn_available
from .peak import percent_of_peak
from .profile import breakdown_line
from .winograd import nnpack_available

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
    flash_attention: bool = False  # the project's fused attention kernel (C++, CPU) instead of PyTorch's SDPA
    packed_linear: bool = False  # the UNet's linear layers on oneDNN with packed weights (CPU; helpers/bench/linear.py)
    winograd: bool = False  # float32 3x3 convolutions on NNPACK's Winograd, per layer where faster (CPU; winograd.py)
    regional: bool = False  # torch.compile of the UNet's repeated blocks only (compile_repeated_blocks)
    compiled: bool = False  # torch.compile of the whole UNet and VAE decoder
    keep_memory: bool = False
    tome: float = 0.0  # token merging's ratio (tomesd); 0: off
    deepcache: int = 0  # DeepCache's interval (a full UNet step every N steps); 0: off
    exact: bool = True

    @property
    def compiles(self) -> bool:
        """Whether torch.compile runs on this rung, regionally or whole."""
        return self.compiled or self.regional

    def compiles_more_than(self, current: Rung) -> bool:
        """Whether moving from ``current`` to this rung compiles something new."""
        return (self.compiled and not current.compiled) or (self.regional and not current.regional)


# Settings that only a freshly loaded pipeline can take off again (the solver is swapped either way; glibc's
# allocator setting cannot be taken off at all).
UNDONE_BY_RELOADING = ("half", "channels_last", "pad_heads", "flash_attention", "packed_linear", "winograd",
                       "regional", "compiled", "tome", "deepcache")


def ladder(steps: int = 20, baseline_steps: int = 50, cpu: bool = False) -> list[Rung]:
    """The exact rungs as planned, each adding one setting (on a CPU that PyTorch runs with AVX2 or AVX-512, the
    project's attention kernel after the padded heads; on a CPU with oneDNN, its packed linear layers; on an x86
    CPU with NNPACK, Winograd's 3x3 convolutions; on a Linux CPU, the allocator rung last)."""
    base = Rung("float32 + PNDM (guide baseline)", steps=baseline_steps)
    half = replace(base, name="half precision + PNDM", half=True)
    dpm = replace(half, name="+ DPM-Solver++", solver="dpm", steps=steps)
    layout = replace(dpm, name="+ channels_last + fused QKV", channels_last=True)
    padded = replace(layout, name=f"+ attention heads padded to x{PAD_MULTIPLE}", pad_heads=True)
    rungs = [base, half, dpm, layout, padded]
    if cpu and kernel_isa():
        rungs.append(replace(padded, name="+ fused attention kernel (the project's C++)", pad_heads=False,
                             flash_attention=True))
    if cpu and onednn_available():
        rungs.append(replace(rungs[-1], name="+ linear layers on oneDNN, weights packed", packed_linear=True))
    if cpu and nnpack_available():
        rungs.append(replace(rungs[-1], name="+ Winograd 3x3 convolutions (NNPACK), per layer", winograd=True))
    regional = replace(rungs[-1], name="+ regional torch.compile (repeated blocks)", regional=True)
    compiled = replace(regional, name="+ torch.compile (whole UNet and decoder)", regional=False, compiled=True)
    rungs += [regional, compiled]
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


def keeps(rung: Rung, row: dict, best_row: dict | None) -> bool:
    """Whether a rung is kept: it is not slower than the best rung so far, end to end; regional compilation, which
    leaves the decoder alone, per UNet step."""
    if best_row is None:
        return True
    key = "unet s/step" if rung.regional else "e2e s"
    return row[key] <= best_row[key]


def seconds_needed(rung: Rung, current: Rung) -> int:
    """The budget a rung needs to start: minutes when it compiles (on a CPU and on a GPU alike), else 30 s."""
    compiles = rung.compiles_more_than(current)
    return 240 if compiles else 30


def approximate(best: Rung, steps: int) -> Rung:
    """The approximate rung: the best exact rung's settings with fewer steps than the guide's 20."""
    return replace(best, name=f"approx: {best.name.lstrip('+ ')}, {steps} steps", steps=steps, exact=False)


def approximations(best: Rung, steps: int, tome: float = 0.5, interval: int = 3) -> list[Rung]:
    """The approximate rungs of ``--approx``: fewer steps; then token merging and DeepCache at the best rung's steps.

    The last two patch the UNet's blocks, which a compiled UNet would have to compile again (minutes): they build on
    the best exact rung's settings without torch.compile.
    """
    eager = replace(best, compiled=False, regional=False, exact=False)
    return [approximate(best, steps),
            replace(eager, name=f"approx: token merging {tome}, {best.steps} steps", tome=tome),
            replace(eager, name=f"approx: DeepCache interval {interval}, {best.steps} steps", deepcache=interval)]


def planned_rungs(plan: list[Rung], whole: list[Rung], approx: int):
    """Each planned rung with its predecessor in ``whole`` (None for the first), then (None, i) for each of the
    ``approx`` approximate rungs."""
    for planned in plan:
        index = whole.index(planned)
        yield planned, whole[index - 1] if index else None
    for i in range(approx):
        yield None, i


def climb(bench, plan: list[Rung], args, start: float, peak: dict[str, float],
          whole: list[Rung] | None = None) -> list[dict]:
    """Measure the planned rungs, each built on the best exact rung so far, then the approximate one if asked.

    ``plan`` is the rungs picked from ``whole``, the ladder (default: ``plan`` itself); each adds to the best rung
    only what it adds to its predecessor in ``whole``, so a rung left out of the plan adds nothing.
    """
    whole = whole or plan
    rows, best, best_row = [], None, None
    extra = 3 if args.approx else 0  # fewer steps, token merging, DeepCache
    total = len(plan) + extra
    for number, (planned, before) in enumerate(planned_rungs(plan, whole, extra), 1):
        # 1. The rung's settings: the best so far plus this rung's own change, or an approximation of the best
        if planned is None:
            if best is None:
                break
            rung = approximations(best, args.approx_steps)[before]
        else:
            rung = build_on(best or whole[0], planned, before)
        # 2. Time left for it?
        left = args.budget - (time.perf_counter() - start)
        needs = seconds_needed(rung, bench.current)
        if left < needs:
            print(f"[{number}/{total}] {rung.name}: skipped, {left:.0f} s of the {args.budget:.0f} s budget "
                  f"left and it needs about {needs} s", flush=True)
            continue
        # 3. Apply and time it
        if (rung.tome or rung.deepcache) and best_row["e2e s"] > left / 3:
            print(f"[{number}/{total}] {rung.name}: skipped, timed end to end only and the best rung's "
                  f"{best_row['e2e s']:.0f} s per image is over a third of the {left:.0f} s left", flush=True)
            continue
        if rung.flash_attention and not bench.current.flash_attention and (why := kernel_error()):
            print(f"[{number}/{total}] {rung.name}: skipped, the kernel did not build here ({why})", flush=True)
            continue
        if rung.winograd and rung.half:
            print(f"[{number}/{total}] {rung.name}: skipped, NNPACK runs float32 only and the best rung so far runs "
                  "in half precision", flush=True)
            continue
        print(f"[{number}/{total}] {rung.name} ...", flush=True)
        bench.apply(rung)
        if bench.memory_kept and not rung.keep_memory:
            print("    (glibc's allocator setting from an earlier rung cannot be taken back: it still holds)")
        flush()
        last_or_approximate = planned is plan[-1] or not rung.exact  # worth an end-to-end run when time allows
        try:
            row = bench.time_rung(rung, max(args.direct_limit, left / 3) if last_or_approximate else args.direct_limit,
                                  best_row["e2e s"] if best_row else None)
        except Exception as err:  # e.g. torch.compile without a working C++ compiler
            if not rung.compiles:
                raise
            print(f"    skipped: torch.compile failed here ({type(err).__name__}: {str(err).splitlines()[0]})")
            continue
        # 4. Keep it if it is not slower than the best; an approximate rung is compared pixel by pixel instead
        row["unet % peak"] = percent_of_peak(row["unet TFLOP/s"], row["dtype"], peak)
        if rung.exact:
            kept = keeps(rung, row, best_row)
            row["kept"] = "yes" if kept else "no"
            if kept:
                best, best_row = rung, row
        else:
            row["kept"] = "-"
            add_pixel_difference(bench, row, best, best_row, args.budget - (time.perf_counter() - start))
        rows.append(row)
        share = "peak not probed" if row["unet % peak"] is None else f"{row['unet % peak']:.0f} % of peak"
        print(f"    unet {row['unet s/step']:.3f} s/step ({share}), decode "
              f"{row['vae decode s']:.3f} s, e2e {row['e2e s']:.2f} s ({row['e2e how']}), kept: {row['kept']}"
              + (f", compile took {row['compile s']:.0f} s" if "compile s" in row else ""), flush=True)
        # 5. Where its time goes (--profile): one more UNet step and decode, under the profiler
        if args.profile and row["e2e how"] != "at least" and not rung.deepcache:
            for part in bench.profile(row, peak):
                print(breakdown_line(part), flush=True)
    return rows


def add_pixel_difference(bench, row: dict, best: Rung, best_row: dict, left: float) -> None:
    """The approximate row's pixel difference from the best exact rung's image, made now if it was not yet."""
    if "image" not in row:
        print(f"    {row['rung']}: no pixel difference (its image was too slow to generate directly)")
        return
    if "image" not in best_row:
        if best_row["e2e s"] > left / 3:
            print(f"    {row['rung']}: no pixel difference (the best exact rung's image is too slow to make)")
            return
        with bench.quiet_compiler():
            best_row["image"] = bench.generate(best.steps)  # same settings, the best rung's step count
    diff = pixel_difference(row["image"], best_row["image"])
    row["max diff"], row["mean diff"] = diff.max, diff.mean
