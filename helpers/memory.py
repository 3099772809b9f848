"""Measuring memory: flush(), a peak-memory context manager, and a largest-batch finder."""

from __future__ import annotations

import ctypes
import gc
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .device import pick_device
from .timing import Timing, time_it

GiB = 1024**3
MiB = 1024**2
SAMPLE_INTERVAL = 0.002  # seconds between samples where memory is sampled (CPU, MPS)


# How many objects the oldest garbage-collector generation held after the last full collection (flush).
_old_objects = 0
# More long-lived objects than that since then, and flush(full=False) collects everything after all: a deleted
# torch.compile'd module leaves thousands of objects in cycles (a pipeline call leaves none).
NEW_OLD_OBJECTS = 1000


def flush(full: bool = True) -> None:
    """Free what can be freed before a measurement: Python garbage, the device cache, peak statistics.

    A full collection walks every object that torch, diffusers and transformers hold: about 0.25 s each time on 2
    cores of an AMD EPYC (Zen 4), where 02 measured about 30 times. ``full=False``, which the measuring helpers use,
    collects the young generations, where a measured call's garbage lies, and everything only where more than
    ``NEW_OLD_OBJECTS`` objects have grown old since the last full collection. Call ``flush()`` yourself after
    deleting a model that lived through an earlier one.
    """
    global _old_objects
    if not full:
        gc.collect(1)
        full = len(gc.get_objects(2)) > _old_objects + NEW_OLD_OBJECTS
    if full:
        gc.collect()
        _old_objects = len(gc.get_objects(2))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if torch.backends.mps.is_available():
        torch.mps.empty_cache()
    if sys.platform.startswith("linux"):
        # Hand freed heap pages back to the OS, so the next resident-memory reading starts low.
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _status() -> dict[str, int]:
    """The memory fields of Linux's /proc/self/status (``VmRSS``, ``VmHWM``, ...), in bytes: read at one moment."""
    with open("/proc/self/status") as status:
        return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in status)
                if k.startswith("Vm") and v.strip().endswith("kB")}


def _reset_peak_rss() -> tuple[int | None, bool]:
    """Set the kernel's record of this process's peak resident memory (Linux's VmHWM) to what it holds now.

    Linux 4.0+ does it on writing 5 to /proc/self/clear_refs (which also lowers the ``ru_maxrss`` that ``time -v``
    reports). Returns the peak before the write (None where nothing was written: macOS, Windows, no /proc) and
    whether the reset took, that is whether the peak now matches what the process holds (within 16 MiB, which a free
    between the reset and the read could open up). Where it did not take, memory is sampled instead.
    """
    try:
        before = _status()["VmHWM"]
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except (OSError, KeyError, ValueError):
        return None, False
    try:
        now = _status()
    except (OSError, KeyError, ValueError):
        return before, False
    return before, now["VmHWM"] <= now["VmRSS"] + 16 * MiB


@dataclass
class MemoryPeak:
    """Peak memory during a block: ``peak`` in bytes, ``added`` = peak minus what was in use at the start."""

    device: str
    start: int = 0
    peak: int = 0
    method: str = ""

    @property
    def added(self) -> int:
        return max(self.peak - self.start, 0)

    def __str__(self) -> str:
        return f"peak {self.peak / GiB:.2f} GiB ({self.added / MiB:,.0f} MiB above the start; {self.method})"

    __repr__ = __str__


_OPEN: list[MemoryPeak] = []  # the CPU measurements in progress that read the kernel's peak, outermost first


class _Sampler(threading.Thread):
    def __init__(self, read: Callable[[], int], interval: float):
        super().__init__(daemon=True)
        self.read, self.interval = read, interval
        self.peak = read()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.peak = max(self.peak, self.read())

    def stop(self) -> int:
        self.done.set()
        self.join()
        return max(self.peak, self.read())


class peak_memory:
    """Context manager measuring peak memory on a device; the result is a ``MemoryPeak``.

    CUDA: exact, from ``torch.cuda.max_memory_allocated`` (tensors only, not the CUDA context).
    MPS: the Metal driver's allocation, sampled every 2 ms.
    CPU: the process's resident memory (RSS): it includes Python and the libraries. On Linux the peak is the
    kernel's own record (VmHWM, reset at the start): nothing is missed (unless pages are swapped out) and it costs
    the measured call nothing. Elsewhere RSS is sampled every 2 ms, which can miss a spike shorter than that and
    takes CPU time from what is measured (about 15 % of a `shapes` pipeline call on 2 cores).
    """

    def __init__(self, device: str | torch.device | None = None, interval: float = SAMPLE_INTERVAL):
        self.device = torch.device(device) if device is not None else pick_device()
        self.interval = interval

    def __enter__(self) -> MemoryPeak:
        kind = self.device.type
        if kind == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            start = torch.cuda.memory_allocated(self.device)
            self.result = MemoryPeak(kind, start, 0, "torch.cuda.max_memory_allocated")
            self._sampler = None
        elif kind == "cpu" and self._kernel_peak():
            self.result = MemoryPeak(kind, _status()["VmRSS"], 0, "process peak RSS, the kernel's VmHWM")
            self._sampler = None
            _OPEN.append(self.result)
        else:
            read = torch.mps.driver_allocated_memory if kind == "mps" else _rss
            what = "Metal driver memory" if kind == "mps" else "process RSS"
            self._sampler = _Sampler(read, self.interval)
            self.result = MemoryPeak(kind, self._sampler.peak, 0, f"{what}, sampled every {self.interval * 1000:g} ms")
            self._sampler.start()
        return self.result

    @staticmethod
    def _kernel_peak() -> bool:
        """Reset the kernel's peak for this measurement; False where it cannot be used (then memory is sampled)."""
        before, took = _reset_peak_rss()
        if before is not None:  # whatever the write did, the measurements around this one keep their peak so far
            for outer in _OPEN:
                outer.peak = max(outer.peak, before)
        return took

    def __exit__(self, *exc) -> None:
        if any(m is self.result for m in _OPEN):
            _OPEN[:] = [m for m in _OPEN if m is not self.result]
            self.result.peak = max(self.result.peak, _status()["VmHWM"])
        elif self._sampler is None:
            torch.cuda.synchronize(self.device)
            self.result.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            if self.device.type == "mps":
                torch.mps.synchronize()
            self.result.peak = self._sampler.stop()


def time_and_memory(fn: Callable[[], object], device: str | torch.device | None = None, repeats: int = 1,
            warmup: int = 0, label: str = "", pipe=None) -> tuple[Timing, MemoryPeak]:
    """Time ``fn`` like ``time_it`` and record the peak memory of the timed runs (warm-up runs come first)."""
    for _ in range(warmup):
        fn()
    flush(full=False)
    with peak_memory(device) as peak:
        timing = time_it(fn, repeats=repeats, warmup=0, label=label, pipe=pipe)
    return timing, peak


# Out-of-memory errors that do not say "out of memory": cuBLAS/cuDNN failing to allocate a workspace, MPS asked
# for a buffer larger than Metal allows, and the CPU allocator.
OOM_MARKERS = ("out of memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed", "invalid buffer size",
               "can't allocate memory")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether an exception is an out-of-memory error (CUDA, cuBLAS, MPS or the CPU allocator)."""
    # torch.OutOfMemoryError exists from torch 2.5; torch.cuda's name for the same class is older.
    kinds = tuple(k for k in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
                  if isinstance(k, type))
    if kinds and isinstance(err, kinds):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err).lower() for m in OOM_MARKERS)


class catch_out_of_memory:
    """Context manager that swallows an out-of-memory error, frees its memory, and records it (``.hit``).

    ``flush()`` inside an ``except`` block frees nothing while the exception's traceback still holds the
    failed call's tensors; this clears those frames first, then flushes. Any other error propagates.
    """

    def __init__(self):
        self.hit = False
        self.message = ""

    def __enter__(self) -> catch_out_of_memory:
        return self

    def __exit__(self, kind, err, tb) -> bool:
        if err is None or not is_out_of_memory(err):
            return False
        self.hit = True
        self.message = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
        traceback.clear_frames(tb)  # drop the locals (tensors) of the frames that raised
        del err, tb
        flush()
        return True


@dataclass
class BatchSearch:
    """The largest batch that fitted, with every trial: batch, fits, memory added (bytes), reason."""

    max_batch: int
    budget: int | None
    trials: list[dict] = field(default_factory=list)

    def frame(self):
        """The trials as a pandas DataFrame."""
        import pandas as pd

        df = pd.DataFrame(self.trials).set_index("batch").sort_index()
        df["added MiB"] = (df.pop("added") / MiB).round(1)
        return df

    def consistent(self) -> bool:
        """Every trial up to ``max_batch`` fitted (within the budget), and every larger one did not."""
        return all(
            t["fits"] == (t["batch"] <= self.max_batch)
            and (not t["fits"] or self.budget is None or t["added"] <= self.budget)
            for t in self.trials
        )

    def __str__(self) -> str:
        budget = f"a budget of {self.budget / MiB:,.0f} MiB" if self.budget else "the device's memory"
        return f"largest batch that fits {budget}: {self.max_batch} ({len(self.trials)} trials)"

    __repr__ = __str__


def find_max_batch(
    run: Callable[[int], object],
    budget: int | None = None,
    start: int = 1,
    limit: int = 64,
    device: str | torch.device | None = None,
) -> BatchSearch:
    """Largest batch size ``b`` for which ``run(b)`` neither runs out of memory nor adds more than ``budget`` bytes.

    Doubles the batch from ``start`` until a failure or ``limit``, then bisects. Out-of-memory
    errors (also those that do not say so, such as cuBLAS failing to allocate) are caught and the memory
    freed; any other error is raised.
    """
    if start < 1 or limit < start:
        raise ValueError(f"Need 1 <= start <= limit, got start={start}, limit={limit}.")
    if budget is not None and budget <= 0:
        raise ValueError(f"The memory budget must be positive, got {budget}.")
    search = BatchSearch(0, budget)

    def fits(batch: int) -> bool:
        flush(full=False)
        measured = None
        with catch_out_of_memory() as oom:
            with peak_memory(device) as measured:
                run(batch)
        flush(full=False)
        ok, reason = not oom.hit, "out of memory" if oom.hit else "ok"
        if ok and budget is not None and measured.added > budget:
            ok, reason = False, "over budget"
        added = measured.added if measured is not None else 0
        search.trials.append({"batch": batch, "fits": ok, "added": added, "reason": reason})
        return ok

    good, top = 0, None
    batch = start
    while batch <= limit:
        if not fits(batch):
            top = batch
            break
        good = batch
        batch *= 2
    if good == 0:
        return search
    if top is None:  # every doubling up to the limit fitted: try the limit itself
        if good == limit:
            top = limit + 1
        elif fits(limit):
            good, top = limit, limit + 1
        else:
            top = limit
    while top - good > 1:
        mid = (good + top) // 2
        if fits(mid):
            good = mid
        else:
            top = mid
    search.max_batch = good
    return search


def device_memory(device: str | torch.device | None = None) -> int:
    """Bytes of memory the device has: a GPU's own (CUDA), else the machine's RAM (CPU, and Apple's shared memory)."""
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    import psutil

    return psutil.virtual_memory().total
