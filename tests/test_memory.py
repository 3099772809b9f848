import gc
import sys
import time
import weakref

import numpy as np
import pytest
import torch

from helpers import memory
from helpers.memory import MiB, catch_out_of_memory, find_max_batch, flush, is_out_of_memory, peak_memory


@pytest.fixture
def quick_flush(monkeypatch):
    """The finder's search logic without its flush(): a full garbage collection of this test process takes
    about half a second, and the searches below make dozens. flush() itself is tested on its own."""
    monkeypatch.setattr("helpers.memory.flush", lambda full=True: None)


class FakePipeline:
    """Raises CUDA's out-of-memory error above a batch size, like a too-small GPU."""

    def __init__(self, fits_up_to: int):
        self.fits_up_to, self.calls = fits_up_to, []

    def __call__(self, batch: int):
        self.calls.append(batch)
        if batch > self.fits_up_to:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return ["image"] * batch


@pytest.mark.parametrize("fits_up_to", [1, 3, 8, 13, 40])
def test_finder_catches_out_of_memory(fits_up_to, quick_flush):
    fake = FakePipeline(fits_up_to)
    search = find_max_batch(fake, limit=64, device="cpu")
    assert search.max_batch == fits_up_to
    assert search.consistent()
    assert {t["reason"] for t in search.trials if not t["fits"]} == {"out of memory"}
    assert len(fake.calls) <= 2 * 7  # doubling then bisection, not a linear scan


def test_finder_stops_at_the_limit(quick_flush):
    search = find_max_batch(FakePipeline(1000), limit=10, device="cpu")
    assert search.max_batch == 10 and search.consistent()


def test_finder_reports_zero_when_nothing_fits(quick_flush):
    assert find_max_batch(FakePipeline(0), device="cpu").max_batch == 0


def test_finder_respects_a_memory_budget():
    def run(batch):  # about 40 MiB per image, held until the end of the call
        blocks = [np.ones(40 * MiB, dtype=np.uint8) for _ in range(batch)]
        return sum(int(b[0]) for b in blocks)

    search = find_max_batch(run, budget=200 * MiB, limit=16, device="cpu")
    assert 2 <= search.max_batch <= 5
    assert search.consistent()
    assert any(t["reason"] == "over budget" for t in search.trials)
    assert search.frame().loc[search.max_batch, "fits"]


def test_finder_lets_other_errors_through():
    def broken(batch):
        raise KeyError("not memory")

    with pytest.raises(KeyError):
        find_max_batch(broken, device="cpu")


@pytest.mark.parametrize(("kwargs", "match"), [({"start": 0}, "start"), ({"start": 5, "limit": 2}, "start"),
                                               ({"budget": 0}, "budget")])
def test_finder_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        find_max_batch(lambda b: None, device="cpu", **kwargs)


def test_out_of_memory_detection():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_peak_memory_sees_a_cpu_allocation():
    flush()
    with peak_memory("cpu") as small:
        pass
    with peak_memory("cpu") as big:
        block = np.ones(300 * MiB, dtype=np.uint8)
        block.sum()
        del block
    assert big.added > 250 * MiB
    assert small.added < 100 * MiB
    assert "RSS" in big.method and "GiB" in str(big)


kernel_peak = pytest.mark.skipif(not memory._reset_peak_rss()[1], reason="needs Linux's resettable VmHWM")


@kernel_peak
def test_on_linux_the_peak_is_the_kernels_and_a_measurement_inside_another_keeps_the_outer_peak():
    flush()
    with peak_memory("cpu") as outer:
        block = np.ones(200 * MiB, dtype=np.uint8)  # the outer block's peak, freed before the inner one starts
        del block
        flush()
        with peak_memory("cpu") as inner:
            small = np.ones(20 * MiB, dtype=np.uint8)
            del small
    assert "VmHWM" in outer.method and "VmHWM" in inner.method
    assert outer.added > 190 * MiB  # lost if the inner measurement's reset were not carried to the outer one
    assert 15 * MiB < inner.added < 150 * MiB


@kernel_peak
def test_a_measurement_that_raises_is_closed_and_one_whose_reset_did_not_take_samples(monkeypatch):
    with pytest.raises(RuntimeError), peak_memory("cpu") as failed:
        raise RuntimeError("the measured call failed")
    assert failed.peak >= failed.start > 0 and not memory._OPEN
    reset = memory._reset_peak_rss
    with peak_memory("cpu") as outer:
        block = np.ones(200 * MiB, dtype=np.uint8)
        del block
        flush()
        monkeypatch.setattr(memory, "_reset_peak_rss", lambda: (reset()[0], False))  # written, but did not take
        with peak_memory("cpu") as inner:
            pass
    assert "sampled" in inner.method and "VmHWM" in outer.method
    assert outer.added > 190 * MiB  # the write reset the kernel's peak: the outer measurement kept its own


class Cycle:
    """An object that refers to itself: only the garbage collector frees it."""

    def __init__(self):
        self.me = self


def test_a_quick_flush_frees_young_garbage_and_a_full_one_old_garbage_too():
    old = Cycle()
    gc.disable()  # no automatic collection in between
    try:
        flush()  # a full collection moves what survives it, old included, to the oldest generation
        old_ref = weakref.ref(old)
        del old
        young = weakref.ref(Cycle())  # garbage made after that collection
        flush(full=False)
        assert young() is None  # the quick one frees what the last calls left
        if sys.version_info < (3, 14):  # 3.14's incremental collector also takes a slice of the old generation
            assert old_ref() is not None  # but not what lived through a full collection
        flush()
        assert old_ref() is None
    finally:
        gc.enable()


def test_a_quick_flush_collects_everything_where_many_objects_grew_old():
    gc.disable()
    try:
        flush()
        many = [Cycle() for _ in range(2 * memory.NEW_OLD_OBJECTS)]  # as a compiled module's graph, say
        gc.collect(1)  # they live through a collection of the young generations: now they are old
        ref = weakref.ref(many[0])
        del many
        flush(full=False)
        assert ref() is None
    finally:
        gc.enable()


def test_the_measuring_helpers_take_the_quick_collection(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "flush", lambda full=True: calls.append(full))
    memory.time_and_memory(lambda: None, "cpu")
    find_max_batch(lambda batch: None, limit=2, device="cpu")
    assert calls and not any(calls)


def test_where_the_kernel_keeps_no_peak_memory_is_sampled(monkeypatch):
    monkeypatch.setattr(memory, "_reset_peak_rss", lambda: (None, False))  # as on macOS, Windows or without /proc
    flush()
    with peak_memory("cpu") as big:
        block = np.ones(300 * MiB, dtype=np.uint8)
        block.sum()
        time.sleep(0.05)  # sampling sees what lasts longer than its interval
        del block
    assert "sampled every 2 ms" in big.method and big.added > 250 * MiB


def test_measure_times_and_records_peak():
    from helpers.memory import time_and_memory

    calls = []

    def work():
        calls.append(1)
        block = np.ones(200 * MiB, dtype=np.uint8)
        return int(block[0])

    timing, peak = time_and_memory(work, device="cpu", repeats=2, warmup=1)
    assert len(calls) == 3 and len(timing.times) == 2 and timing.value == 1
    assert peak.added > 150 * MiB



@pytest.mark.parametrize("message", [
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    "Invalid buffer size: 9.50 GB",
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB",
])
def test_out_of_memory_errors_that_do_not_say_so(message, quick_flush):
    assert is_out_of_memory(RuntimeError(message))
    search = find_max_batch(lambda b: (_ for _ in ()).throw(RuntimeError(message)) if b > 2 else None,
                            limit=8, device="cpu")
    assert search.max_batch == 2 and search.consistent()


def test_is_out_of_memory_without_torch_out_of_memory_error(monkeypatch):
    """torch 2.4 has torch.cuda.OutOfMemoryError but not torch.OutOfMemoryError: no AttributeError there."""
    monkeypatch.delattr(torch, "OutOfMemoryError")
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(ValueError("shape mismatch"))


def _fails_holding_a_tensor(refs):
    big = torch.ones(1024, 1024)  # a local of the failing call: kept alive by the exception's traceback
    refs.append(weakref.ref(big))
    raise torch.cuda.OutOfMemoryError("CUDA out of memory.")


def test_catch_out_of_memory_frees_the_failed_calls_tensors_before_flushing(monkeypatch):
    from helpers import memory

    refs, alive_at_flush = [], []
    monkeypatch.setattr(memory, "flush", lambda: alive_at_flush.append(bool(refs) and refs[-1]() is not None))
    with catch_out_of_memory() as oom:
        _fails_holding_a_tensor(refs)
    assert oom.hit and "CUDA out of memory" in oom.message
    assert alive_at_flush == [False]  # the tensor was already gone when flush() ran


def test_catch_out_of_memory_lets_other_errors_through():
    with pytest.raises(ValueError, match="bad"), catch_out_of_memory() as oom:
        raise ValueError("bad")
    assert not oom.hit


def test_a_naive_flush_inside_except_would_not_free(monkeypatch):
    """The problem catch_out_of_memory solves: inside `except`, the traceback still holds the tensor."""
    refs = []
    try:
        _fails_holding_a_tensor(refs)
    except torch.cuda.OutOfMemoryError:
        assert refs[-1]() is not None
