"""Which device, CPU kind and dtype to use, seeded generators, device synchronisation, and batch caps per device."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import torch

# On Apple MPS, sliced and classic attention build their scores in float32 (about 1 GiB per image of a batch for
# SD 1.5 at 512x512, so ~8 GiB at batch 8, beyond many Macs), and call baddbmm on uninitialised memory, which
# can give NaN/black images there (diffusers issue #14438). Batches on MPS are capped at this size.
MPS_MAX_BATCH = 4


def pick_device() -> torch.device:
    """The best available device: CUDA, then Apple MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# /proc/cpuinfo flags that decide how fast a CPU multiplies bfloat16 and float32 matrices, and their names.
ISA_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX-512 BF16", "avx512_fp16": "AVX512-FP16", "avx512f": "AVX-512"}
NATIVE_BF16_FLAGS = {"amx_bf16", "avx512_bf16"}


def _cpuinfo() -> str:
    """The text of /proc/cpuinfo, or '' where there is none (not Linux)."""
    path = Path("/proc/cpuinfo")
    if not sys.platform.startswith("linux") or not path.exists():
        return ""
    return path.read_text(errors="replace")


def cpu_model() -> str:
    """The CPU's model name, e.g. 'Intel(R) Xeon(R) Platinum 8480+', or 'unknown'."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _cpu_flags() -> set[str] | None:
    """The CPU's flags from /proc/cpuinfo; None where they are unknown (not Linux)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return None


def cpu_isa() -> dict[str, bool] | None:
    """Which of AMX, AVX-512 BF16 and AVX-512 the CPU has (from /proc/cpuinfo); None where that is unknown."""
    flags = _cpu_flags()
    return None if flags is None else {name: flag in flags for flag, name in ISA_FLAGS.items()}


def isa_line() -> str:
    """The instruction sets as one line, e.g. 'AMX yes, AVX-512 BF16 yes, AVX512-FP16 no, AVX-512 yes', or 'unknown'."""
    isa = cpu_isa()
    if isa is None:
        return "unknown"
    return ", ".join(f"{name} {'yes' if has else 'no'}" for name, has in isa.items())


def _onednn_has_bf16() -> bool:
    """Whether oneDNN reports bfloat16 support on this CPU (it honours ONEDNN_MAX_CPU_ISA)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX-512 BF16), as PyTorch may use it here.

    oneDNN's own check honours ``ONEDNN_MAX_CPU_ISA``, and ``ATEN_CPU_CAPABILITY=avx2`` caps PyTorch's kernels:
    either cap makes this False, as on a CPU with AVX2 only, where PyTorch emulates bfloat16.
    """
    if not _onednn_has_bf16():
        return False
    if platform.machine().lower() in ("x86_64", "amd64"):
        if torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2"):
            return False
        flags = _cpu_flags()
        return flags is None or bool(flags & NATIVE_BF16_FLAGS)
    return True


def half_dtype(device: str | torch.device | None = None) -> torch.dtype:
    """The device's 16-bit dtype, fast or not: float16 on CUDA and MPS, bfloat16 on the CPU (notebook 01, step 3).

    GPUs have fast float16 units, and the guide recommends float16 there. CPUs have no fast float16 path in
    PyTorch, but recent ones (AVX-512 BF16, AMX) run bfloat16 natively; bfloat16 also keeps float32's exponent
    range, so it does not overflow where float16 can. Whether it pays on this device is ``recipe_dtype``'s call.
    """
    device = torch.device(device) if device is not None else pick_device()
    return torch.bfloat16 if device.type == "cpu" else torch.float16


def native_half(device: str | torch.device | None = None) -> bool:
    """Whether the device computes its 16-bit type natively: a GPU always, a CPU with AMX or AVX-512 BF16 (01)."""
    device = torch.device(device) if device is not None else pick_device()
    return device.type != "cpu" or cpu_has_fast_bf16()


def recipe_dtype(device: str | torch.device | None = None) -> torch.dtype:
    """The dtype the tutorial's recipe runs in: the device's 16-bit type where it is faster, else float32.

    float16 on CUDA (as the guide) and MPS. On a CPU, float32 where bfloat16 would be emulated (no AMX or AVX-512
    BF16: many times slower, notebook 01 measures it); where it is native, bfloat16 only if SD 1.5's first level
    runs faster in it than in float32 on this machine (``half_speedup``: measured once per machine, or taken from
    notebook 01's measurement). Some CPUs with AVX-512 BF16 but no AMX run it slower than float32 at real size.
    """
    device = torch.device(device) if device is not None else pick_device()
    if device.type != "cpu":
        return half_dtype(device)
    if not cpu_has_fast_bf16():
        return torch.float32
    return torch.bfloat16 if half_speedup() > 1 else torch.float32


def recipe_dtype_reason(device: str | torch.device | None = None) -> str:
    """One line: the recipe's dtype on this device, and why."""
    device = torch.device(device) if device is not None else pick_device()
    dtype = str(recipe_dtype(device)).removeprefix("torch.")
    if device.type != "cpu":
        return f"{dtype}: the 16-bit type {device.type.upper()} computes fast, as the guide recommends"
    if cpu_has_fast_bf16():
        speed = f"SD 1.5's first level ran {half_speedup():.2f}x as fast in bfloat16 as in float32 here (measured)"
        if dtype == "bfloat16":
            return f"bfloat16: this CPU computes it natively (AMX or AVX-512 BF16), and {speed}"
        return f"float32: this CPU computes bfloat16 natively, but {speed}"
    flags = _cpu_flags() or set()
    why = ("its AMX / AVX-512 BF16 is capped off here (ONEDNN_MAX_CPU_ISA or ATEN_CPU_CAPABILITY)"
           if flags & NATIVE_BF16_FLAGS else "this CPU has no native bfloat16 (no AMX or AVX-512 BF16)")
    return f"float32: {why}, so PyTorch would emulate bfloat16, many times slower than float32"


# The measured half of the policy: how much faster bfloat16 runs SD 1.5's first level than float32 on this machine.
HALF_SPEED_FILE = "half-speed.json"


def machine_key() -> str:
    """What a speed measurement depends on: CPU model and kind, caps, threads, torch version."""
    import os

    flags = sorted((_cpu_flags() or set()) & {"avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16"})
    caps = [os.environ.get(name, "") for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")]
    return "|".join([cpu_model(), *flags, *caps, str(torch.get_num_threads()), torch.__version__])


def _half_speed_path() -> Path:
    from .models import cache_dir

    return cache_dir() / HALF_SPEED_FILE


def remember_half_speedup(float32_s: float, half_s: float) -> float:
    """Record a measured float32 / bfloat16 time of SD 1.5's first level on this CPU (01); returns the speedup."""
    import json
    import os
    import tempfile

    speedup = float32_s / half_s
    path = _half_speed_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".partial") as out:
        json.dump({"machine": machine_key(), "speedup": speedup, "float32 s": float32_s, "bfloat16 s": half_s}, out)
    os.replace(out.name, path)  # another process reads a whole file or the previous one
    return speedup


def half_speedup() -> float:
    """How many times faster SD 1.5's first level runs in bfloat16 than in float32 on this CPU (below 1: slower).

    Read from the last measurement on this machine (notebook 01 records one), else measured now at real size: the
    fastest of two timed runs after a warm-up, per precision (the fastest, since a busy machine only adds time);
    about 6 s on 2 cores where bfloat16 is native.
    """
    import json

    path = _half_speed_path()
    try:
        record = json.loads(path.read_text())
        if record["machine"] == machine_key():
            return float(record["speedup"])
    except (OSError, ValueError, KeyError):
        pass
    return measure_half_speedup()


def measure_half_speedup() -> float:
    """Time SD 1.5's first level in float32 and bfloat16 on the CPU, record the speedup and return it."""
    from .realsize import first_level, first_level_inputs
    from .timing import time_it

    layer, seconds = first_level(), {}
    for dtype in (torch.float32, torch.bfloat16):
        layer = layer.to(dtype)
        inputs = first_level_inputs(dtype=dtype)
        with torch.inference_mode():
            seconds[dtype] = time_it(lambda: layer(**inputs), repeats=2, warmup=1).min  # noqa: B023
    return remember_half_speedup(seconds[torch.float32], seconds[torch.bfloat16])


def as_dtype(dtype: str | torch.dtype | None, device: str | torch.device | None = None) -> torch.dtype:
    """A dtype from 'float32', 'float16', 'bfloat16', 'half' (the device's 16-bit type), 'recipe' or a dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype == "half":
        return half_dtype(device)
    if dtype == "recipe":
        return recipe_dtype(device)
    if dtype not in names:
        raise ValueError(f"Unknown dtype {dtype!r}: use one of {', '.join(names)}, 'half' or 'recipe'.")
    return names[dtype]


def synchronize(device: str | torch.device | None = None) -> None:
    """Wait until the device has finished its queued work (a no-op on the CPU)."""
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def device_name(device: str | torch.device | None = None) -> str:
    """A human-readable name for the device, e.g. 'Tesla T4' or 'CPU (2 threads)'."""
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


def cap_batch(batch: int, device: str | torch.device | None = None) -> int:
    """The batch size to run on a device: ``batch``, except on Apple MPS where it is capped (with a one-line note)."""
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a whole number >= 1, got {batch!r}.")
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "mps" and batch > MPS_MAX_BATCH:
        print(f"Note: batch {batch} capped to {MPS_MAX_BATCH} on Apple MPS: larger batches need about 1 GiB of "
              "attention scores per image there, beyond many Macs.")
        return MPS_MAX_BATCH
    return batch
