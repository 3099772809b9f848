import math
import sys

import pytest
import torch

from helpers import device
from helpers.bench import peak


def test_the_probe_gives_a_positive_finite_peak_per_dtype():
    result = peak.measure_peak(torch.device("cpu"), shapes=((256, 64, 128), (128, 64, 64)), seconds=0.01)
    assert set(result) == {"float32", "bfloat16"}
    assert all(math.isfinite(v) and v > 0 for v in result.values())
    # Without the 16-bit type (the bench, where the CPU emulates bfloat16 and no rung runs in it): float32 alone.
    only = peak.measure_peak(torch.device("cpu"), shapes=((128, 64, 64),), seconds=0.01, half=False)
    assert set(only) == {"float32"} and math.isfinite(only["float32"]) and only["float32"] > 0


def test_percent_of_peak_is_looked_up_by_the_rung_dtype():
    limit = {"float32": 2.0, "bfloat16": 8.0}
    assert peak.percent_of_peak(1.0, "float32", limit) == pytest.approx(50.0)
    assert peak.percent_of_peak(1.0, "bfloat16", limit) == pytest.approx(12.5)
    assert peak.percent_of_peak(1.0, "float16", limit) is None


def test_the_cpu_is_described_with_its_instruction_sets(monkeypatch):
    assert device.cpu_model()
    if sys.platform.startswith("linux"):
        assert set(device.cpu_isa()) == {"AMX", "AVX-512 BF16", "AVX512-FP16", "AVX-512"}
    fake = "model name\t: Example CPU 9000\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n"
    monkeypatch.setattr(device, "_cpuinfo", lambda: fake)
    assert device.cpu_model() == "Example CPU 9000"
    assert device.isa_line() == "AMX no, AVX-512 BF16 yes, AVX512-FP16 no, AVX-512 yes"
    monkeypatch.setattr(device, "_cpuinfo", lambda: "")  # not Linux: nothing to read
    assert device.cpu_isa() is None and device.isa_line() == "unknown"
