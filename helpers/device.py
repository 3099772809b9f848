"""Which device and dtype to use, seeded generators, device synchronisation, and batch caps per device."""

from __future__ import annotations

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


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX-512 BF16 or AMX), as oneDNN reports it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def half_dtype(device: str | torch.device | None = None) -> torch.dtype:
    """The 16-bit dtype to use on a device: float16 on CUDA and MPS, bfloat16 on the CPU.

    GPUs have fast float16 units, and the guide recommends float16 there. CPUs have no
    fast float16 path in PyTorch, but recent ones (AVX-512 BF16, AMX) run bfloat16
    natively; bfloat16 also keeps float32's exponent range, so it does not overflow
    where float16 can. On a CPU without native bfloat16 it is emulated and may be slower
    than float32: `cpu_has_fast_bf16()` tells, and the notebooks measure it.
    """
    device = torch.device(device) if device is not None else pick_device()
    return torch.bfloat16 if device.type == "cpu" else torch.float16


def as_dtype(dtype: str | torch.dtype | None, device: str | torch.device | None = None) -> torch.dtype:
    """Turn 'float32', 'float16', 'bfloat16', 'half' (this device's 16-bit type) or a torch.dtype into a dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype == "half":
        return half_dtype(device)
    if dtype not in names:
        raise ValueError(f"Unknown dtype {dtype!r}: use one of {', '.join(names)} or 'half'.")
    return names[dtype]


def make_generators(n: int = 1, seed: int = 0) -> list[torch.Generator]:
    """One CPU generator per image, seeded seed, seed+1, ... (a CPU seed gives the same image on any device)."""
    if n < 1:
        raise ValueError(f"Need at least one generator, got n={n}.")
    return [torch.Generator("cpu").manual_seed(seed + i) for i in range(n)]


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
