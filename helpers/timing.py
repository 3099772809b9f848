"""Timing a call: warm-up rounds, then median/min/max over repeats, with the device synchronised."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .device import synchronize


def _clock() -> float:
    """Wait for the default device's queued work (CUDA or MPS), then read a monotonic clock.

    Synchronised here rather than through torch.utils.benchmark's private timer, which
    synchronises MPS only from torch 2.9 on: before that, MPS timings would stop too early.
    """
    synchronize()
    return time.perf_counter()


UNSTEADY = " -- unsteady: is another program using the CPU? Rerun this cell when the machine is idle."


@dataclass
class Timing:
    """Seconds per call over repeats; ``value`` is what the last call returned."""

    times: list[float]
    value: Any = field(default=None, repr=False)
    label: str = ""
    how: str = ""  # how an estimated time was made (``time_from_steps``); empty when measured

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def max(self) -> float:
        return max(self.times)

    def __str__(self) -> str:
        head = f"{self.label}: " if self.label else ""
        if self.how:
            return f"{head}{self.median:.3f} s ({self.how})"
        if len(self.times) == 1:
            return f"{head}{self.median:.3f} s (1 run)"
        text = f"{head}{self.median:.3f} s (median of {len(self.times)}; min {self.min:.3f}, max {self.max:.3f})"
        return text if self.steady else text + UNSTEADY

    @property
    def steady(self) -> bool:
        """Whether the repeats agree: the slowest within 1.5x the fastest (a busy machine breaks this first)."""
        return len(self.times) < 2 or self.max <= 1.5 * self.min

    __repr__ = __str__


@contextlib.contextmanager
def no_progress_bar(pipe):
    """Turn a diffusers pipeline's progress bar off inside the block, then restore its setting."""
    if pipe is None:
        yield
        return
    before = dict(getattr(pipe, "_progress_bar_config", {}))
    pipe.set_progress_bar_config(**{**before, "disable": True})
    try:
        yield
    finally:
        pipe._progress_bar_config = before


def time_it(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1, label: str = "", pipe=None) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; progress bars off if ``pipe`` is given."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"Need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}.")
    times = []
    with no_progress_bar(pipe):
        for _ in range(warmup):
            fn()
        for _ in range(repeats):
            start = _clock()
            value = fn()
            times.append(_clock() - start)
    return Timing(times, value, label)


def time_from_steps(generate: Callable[[int], Any], steps: int, few: tuple[int, int] = (2, 4),
                    label: str = "", warmup: bool = True) -> Timing:
    """Estimate ``generate(steps)``'s seconds from one call at each of ``few`` step counts (01, step 3).

    For a setting too slow to run in full, such as emulated half precision: after one untimed call at the short count
    (unless ``warmup`` is False), the two calls give the cost of one step and the fixed cost (text encoder, VAE
    decode), and the estimate is fixed + ``steps`` x per step.
    ``value`` is what the longer call returned. Both counts should be at least 2: PNDM calls the UNet once more than
    its step count from 2 steps on (it repeats one timestep to start its multistep method) but once for 1 step, so a
    pair that starts at 1 overstates the cost of a step (by half for 1 and 3).
    """
    short, long = sorted(few)
    if not 1 <= short < long:
        raise ValueError(f"Need two different step counts of at least 1, got {few}.")
    # One untimed call first: a first call's one-off costs (kernels chosen and compiled for the dtype) would land in
    # the short run and shrink the cost per step (float16 on a CPU: 0.19 s estimated for 50 steps, 1.35 s measured).
    # Where the dtype is emulated there are no such kernels to prepare, and ``warmup=False`` saves that call: on an
    # AVX2-only AMD EPYC a first bfloat16 call of `shapes` took 3.97 s and the next 3.89 s (each mostly the decode).
    first = time_it(lambda: generate(short), repeats=1, warmup=1 if warmup else 0)
    second = time_it(lambda: generate(long), repeats=1, warmup=0)
    per_step = max(second.median - first.median, 0.0) / (long - short)
    fixed = max(first.median - short * per_step, 0.0)
    return Timing([fixed + steps * per_step], second.value, label,
                  how=f"estimated for {steps} steps from runs of {short} and {long}")
