import os
import subprocess
import sys

import pytest
import torch

from helpers import device as device_module
from helpers.device import (
    as_dtype,
    cpu_has_fast_bf16,
    device_name,
    half_dtype,
    pick_device,
    recipe_dtype,
    recipe_dtype_reason,
    synchronize,
)


def test_pick_device_is_available():
    device = pick_device()
    assert device.type in {"cuda", "mps", "cpu"}
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert device.type == "cpu"


AMX_CPU = "model name\t: Xeon\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16\n"
AVX512_BF16_CPU = "model name\t: EPYC 9004\nflags\t\t: avx2 avx512f avx512_bf16\n"
AVX512_CPU = "model name\t: Xeon Skylake\nflags\t\t: avx2 avx512f\n"
AVX2_CPU = "model name\t: EPYC 7003\nflags\t\t: avx2 fma f16c\n"


@pytest.fixture
def fake_cpu(monkeypatch):
    """Make the device module see another x86 CPU: its /proc/cpuinfo, oneDNN's answer, ATen's capability, and how
    much faster bfloat16 ran SD 1.5's first level than float32 (``speedup``, the recipe's measurement)."""

    def fake(cpuinfo: str, onednn: bool = True, capability: str = "AVX512", speedup: float = 2.0) -> None:
        monkeypatch.setattr(device_module, "_cpuinfo", lambda: cpuinfo)
        monkeypatch.setattr(device_module, "_onednn_has_bf16", lambda: onednn)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        monkeypatch.setattr(device_module.platform, "machine", lambda: "x86_64")
        monkeypatch.setattr(device_module, "half_speedup", lambda: speedup)

    return fake


@pytest.mark.parametrize(("cpuinfo", "onednn", "capability", "fast"), [
    (AMX_CPU, True, "AVX512", True),
    (AVX512_BF16_CPU, True, "AVX512", True),
    (AVX512_CPU, True, "AVX512", False),  # oneDNN runs bfloat16 on AVX-512 without BF16, but emulates it
    (AVX2_CPU, False, "AVX2", False),
    (AMX_CPU, False, "AVX512", False),  # ONEDNN_MAX_CPU_ISA=AVX2 on an AMX machine
    (AMX_CPU, True, "AVX2", False),  # ATEN_CPU_CAPABILITY=avx2 on an AMX machine
    ("", True, "AVX512", True),  # no /proc/cpuinfo to read: oneDNN's answer stands
])
def test_fast_bfloat16_needs_amx_or_avx512_bf16_uncapped(fake_cpu, cpuinfo, onednn, capability, fast):
    fake_cpu(cpuinfo, onednn, capability)
    assert cpu_has_fast_bf16() is fast


@pytest.mark.parametrize(("kind", "cpuinfo", "onednn", "capability", "expected"), [
    ("cuda", AVX2_CPU, False, "AVX2", torch.float16),
    ("mps", "", False, "DEFAULT", torch.float16),
    ("cpu", AMX_CPU, True, "AVX512", torch.bfloat16),
    ("cpu", AVX512_BF16_CPU, True, "AVX512", torch.bfloat16),
    ("cpu", AVX512_CPU, True, "AVX512", torch.float32),
    ("cpu", AVX2_CPU, False, "AVX2", torch.float32),
    ("cpu", AMX_CPU, False, "AVX512", torch.float32),
])
def test_the_recipe_dtype_per_device_and_cpu_kind(fake_cpu, simulate_device, kind, cpuinfo, onednn, capability,
                                                  expected):
    fake_cpu(cpuinfo, onednn, capability)
    simulate_device(kind)
    assert recipe_dtype() is expected and recipe_dtype(kind) is expected
    assert as_dtype("recipe", kind) is expected
    assert recipe_dtype_reason(kind).startswith(str(expected).removeprefix("torch.") + ": ")


def test_native_bfloat16_that_runs_slower_keeps_the_recipe_in_float32(fake_cpu):
    """An Intel Xeon with AVX-512 BF16 and no AMX ran SD 1.5's UNet step 1.4x slower in bfloat16: the recipe acts on
    the measurement, not on the instruction set."""
    fake_cpu(AVX512_BF16_CPU, speedup=0.71)
    assert recipe_dtype("cpu") is torch.float32
    assert recipe_dtype_reason("cpu").startswith("float32: this CPU computes bfloat16 natively, but")
    assert "0.71x as fast" in recipe_dtype_reason("cpu")
    fake_cpu(AVX512_BF16_CPU, speedup=1.8)
    assert recipe_dtype("cpu") is torch.bfloat16 and "1.80x as fast" in recipe_dtype_reason("cpu")
    assert device_module.native_half("cpu") and device_module.native_half("cuda")
    fake_cpu(AVX2_CPU, onednn=False, capability="AVX2", speedup=5.0)  # never read: bfloat16 would be emulated
    assert recipe_dtype("cpu") is torch.float32 and not device_module.native_half("cpu")


def test_the_speed_measurement_is_kept_per_machine(monkeypatch, tmp_path):
    """half_speedup reads what this machine recorded (notebook 01 records one) and measures only when it has none
    for this machine: another CPU, thread count or ISA cap is another machine."""
    monkeypatch.setenv("EFFICIENT_DIFFUSION_CACHE", str(tmp_path))
    measured = []
    monkeypatch.setattr(device_module, "measure_half_speedup", lambda: measured.append(1) or 0.5)
    assert device_module.remember_half_speedup(1.0, 0.8) == pytest.approx(1.25)
    assert device_module.half_speedup() == pytest.approx(1.25) and not measured
    key = device_module.machine_key()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE" if "AVX2" in key else "AVX2")  # an ISA cap changes it
    assert device_module.machine_key() != key
    assert device_module.half_speedup() == 0.5 and measured == [1]
    (tmp_path / device_module.HALF_SPEED_FILE).write_text("not json")
    assert device_module.half_speedup() == 0.5 and measured == [1, 1]


def test_the_reason_names_a_cap_or_a_missing_instruction_set(fake_cpu):
    fake_cpu(AVX2_CPU, onednn=False, capability="AVX2")
    assert "no native bfloat16" in recipe_dtype_reason("cpu")
    fake_cpu(AMX_CPU, onednn=False)
    assert "capped off" in recipe_dtype_reason("cpu")


def test_an_isa_cap_in_the_environment_turns_bfloat16_off():
    """oneDNN's cap works for real on this machine, in a fresh process (it is read when torch starts); the ATen
    cap's effect is faked above (torch.backends.cpu.get_cpu_capability)."""
    code = "from helpers.device import cpu_has_fast_bf16 as f; print(f())"
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")}
    out = subprocess.run([sys.executable, "-c", code], env=env | {"ONEDNN_MAX_CPU_ISA": "AVX2"}, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "False"


def test_half_dtype_per_device():
    assert half_dtype("cpu") is torch.bfloat16
    assert half_dtype("cuda") is torch.float16
    assert half_dtype("mps") is torch.float16


@pytest.mark.parametrize(("name", "expected"), [("float32", torch.float32), ("fp16", torch.float16),
                                                ("bfloat16", torch.bfloat16), (None, torch.float32),
                                                (torch.float16, torch.float16)])
def test_as_dtype(name, expected):
    assert as_dtype(name, "cpu") is expected


def test_as_dtype_half_follows_device():
    assert as_dtype("half", "cpu") is torch.bfloat16
    assert as_dtype("half", "cuda") is torch.float16


def test_as_dtype_rejects_unknown_names():
    with pytest.raises(ValueError, match="Unknown dtype 'float8'"):
        as_dtype("float8")


def test_synchronize_and_name_on_cpu():
    synchronize("cpu")  # must be a harmless no-op
    assert device_name("cpu").startswith("CPU (")


def test_batches_are_capped_on_mps_only(capsys, simulate_device):
    from helpers.device import MPS_MAX_BATCH, cap_batch

    assert cap_batch(8, "cpu") == 8 and cap_batch(8, "cuda") == 8
    assert capsys.readouterr().out == ""
    assert cap_batch(8, "mps") == MPS_MAX_BATCH < 8
    assert f"capped to {MPS_MAX_BATCH} on Apple MPS" in capsys.readouterr().out
    assert cap_batch(2, "mps") == 2
    simulate_device("mps")
    assert cap_batch(8) == MPS_MAX_BATCH
    with pytest.raises(ValueError, match="whole number"):
        cap_batch(0, "mps")
