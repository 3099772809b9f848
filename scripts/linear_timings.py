"""Time SD 1.5's linear-layer shapes three ways in float32, alone: `python scripts/linear_timings.py` (TFLOP/s, best
of 5; run it on an idle machine). PyTorch's own ``nn.Linear`` (MKL's sgemm), MKL on a packed weight (what inductor's
freezing uses in float32) and oneDNN on a packed weight (the bench's packed-linear rung). glibc's allocator keeps
freed memory here, as on the bench's last rung: without it every call faults its output's pages in again, which
cost the 8192 x 320 -> 2560 shape a fifth of its speed on an AMD EPYC. docs/benchmark.md quotes it."""

import sys

import torch

from helpers.bench.linear import packed_linear_op
from helpers.bench.runner import keep_freed_memory
from helpers.timing import time_it

SHAPES = [  # (rows, in, out): a guided step's batch of 2 times the tokens of each level; attention and feed-forward
    (8192, 320, 320), (8192, 320, 2560), (8192, 1280, 320),
    (2048, 640, 5120), (2048, 2560, 640),
    (512, 1280, 10240), (512, 5120, 1280),
]


def main() -> None:
    if sys.platform.startswith("linux"):
        keep_freed_memory()
    packed = packed_linear_op()
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"PyTorch's CPU kernels: {torch.backends.cpu.get_cpu_capability()}")
    torch.manual_seed(0)
    for rows, inputs, outputs in SHAPES:
        x, layer = torch.randn(rows, inputs), torch.nn.Linear(inputs, outputs)
        mkl_weight = torch.ops.mkl._mkl_reorder_linear_weight(layer.weight.detach(), rows)
        calls = {
            "nn.Linear": lambda: layer(x),  # noqa: B023 (called now)
            "MKL packed": lambda: torch.ops.mkl._mkl_linear(x, mkl_weight, layer.weight, layer.bias, rows),  # noqa: B023
            "oneDNN packed": lambda: packed(x, layer.weight, layer.bias),  # noqa: B023
        }
        with torch.no_grad():
            rates = {name: 2 * rows * inputs * outputs / time_it(call, repeats=5).min / 1e12
                     for name, call in calls.items()}
        print(f"{rows:5d} x {inputs:4d} -> {outputs:5d} | " + " | ".join(f"{k} {v:.3f}" for k, v in rates.items()),
              flush=True)


if __name__ == "__main__":
    main()
