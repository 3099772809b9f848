"""Time SD 1.5's 3x3 convolution shapes two ways in float32, alone: `python scripts/conv_timings.py` (milliseconds,
best of 3; about 2 minutes on 2 cores of an AVX2 EPYC; run it on an idle machine). PyTorch's own ``F.conv2d`` on
channels-last inputs (oneDNN), and NNPACK's Winograd convolution one picture at a time (the bench's Winograd rung,
``helpers/bench/winograd.py``). The UNet's shapes have a batch of 2 (a guided step), the VAE decoder's of 1.
docs/benchmark.md quotes it."""

import torch
import torch.nn.functional as F

from helpers.bench.winograd import nnpack_available, winograd_op
from helpers.timing import time_it

SHAPES = [  # (where, batch, in, out, side): the input's channels and side, the output's channels
    ("UNet level 1", 2, 320, 320, 64), ("UNet level 2", 2, 640, 640, 32), ("UNet level 3", 2, 1280, 1280, 16),
    ("UNet level 4", 2, 1280, 1280, 8), ("UNet up, level 2", 2, 1920, 640, 32),
    ("decoder, 64x64", 1, 512, 512, 64), ("decoder, 128x128", 1, 512, 512, 128),
    ("decoder, 256x256", 1, 512, 512, 256), ("decoder, 256x256", 1, 256, 256, 256),
    ("decoder, 512x512", 1, 256, 256, 512), ("decoder, 512x512", 1, 128, 128, 512),
]


def main() -> None:
    if not nnpack_available():
        raise SystemExit("this PyTorch has no NNPACK for this CPU: nothing to compare")
    winograd = winograd_op()
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"PyTorch's CPU kernels: {torch.backends.cpu.get_cpu_capability()}")
    torch.manual_seed(0)
    for where, batch, inputs, outputs, side in SHAPES:
        x = torch.randn(batch, inputs, side, side).contiguous(memory_format=torch.channels_last)
        weight, bias = torch.randn(outputs, inputs, 3, 3) * 0.02, torch.randn(outputs)
        with torch.no_grad():
            direct = time_it(lambda: F.conv2d(x, weight, bias, padding=1), repeats=3).min  # noqa: B023
            nnpack = time_it(lambda: winograd(x, weight, bias, [1, 1]), repeats=3).min  # noqa: B023
        flops = 2 * batch * inputs * outputs * 9 * side * side
        print(f"{where:17s} {batch} x {inputs:4d} -> {outputs:4d} at {side:3d}x{side:<3d} | "
              f"oneDNN {direct * 1e3:7.0f} ms ({flops / direct / 1e12:.3f} TFLOP/s) | "
              f"Winograd {nnpack * 1e3:7.0f} ms | {direct / nnpack:.2f}x", flush=True)


if __name__ == "__main__":
    main()
