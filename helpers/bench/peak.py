"""This machine's limit, measured: matrix-multiply throughput at UNet-like sizes (the CPU's name and ISA: device.py)."""

from __future__ import annotations

import torch

from ..device import half_dtype

# (tokens, in features, out features) of linear layers in SD 1.5's UNet at 64x64 latents, batch 2 (guidance):
# the first level's attention projections and feed-forward, and the second level's projections.
UNET_GEMMS = ((8192, 320, 320), (8192, 320, 1280), (8192, 1280, 320), (2048, 640, 640))


def gemm_tflops(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device, seconds: float = 0.25) -> float:
    """TFLOP/s of one linear layer's product, (m x k) by a (n x k) weight, timed with torch.utils.benchmark."""
    from torch.utils import benchmark

    x = torch.randn(m, k, device=device).to(dtype)
    w = torch.randn(n, k, device=device).to(dtype)
    timer = benchmark.Timer("linear(x, w)", globals={"linear": torch.nn.functional.linear, "x": x, "w": w},
                            num_threads=torch.get_num_threads())
    timer.timeit(1)  # the first call picks and packs kernels (oneDNN, cuBLAS)
    return 2 * m * k * n / timer.blocked_autorange(min_run_time=seconds).median / 1e12


def measure_peak(device: torch.device, shapes=UNET_GEMMS, seconds: float = 0.25,
                 half: bool = True) -> dict[str, float]:
    """The best TFLOP/s over UNet-like products in float32 and (``half``) this device's 16-bit type, by dtype name."""
    peak = {}
    for dtype in (torch.float32, half_dtype(device)) if half else (torch.float32,):
        with torch.inference_mode():
            peak[str(dtype).split(".")[-1]] = max(gemm_tflops(*shape, dtype, device, seconds) for shape in shapes)
    return peak


def percent_of_peak(tflops: float, dtype: str, peak: dict[str, float]) -> float | None:
    """``tflops`` as a percentage of the measured peak for ``dtype`` ('float32', 'bfloat16', ...); None if unknown."""
    limit = peak.get(dtype)
    return 100 * tflops / limit if limit else None
