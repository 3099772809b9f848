"""Time PyTorch's SDPA against the project's attention kernel at SD 1.5's sizes, alone: `python
scripts/attention_timings.py` (best of 5 per cell, in ms; run it on an idle machine). docs/benchmark.md quotes it."""

import torch

from helpers.bench.attention import flash_attention, flash_kernel, kernel_isa
from helpers.timing import time_it

SIZES = {  # name: (batch, queries, keys, heads, head size)
    "4096 tokens, heads of 40": (2, 4096, 4096, 8, 40),
    "4096 x 77 text tokens, heads of 40": (2, 4096, 77, 8, 40),
    "1024 tokens, heads of 80": (2, 1024, 1024, 8, 80),
    "256 tokens, heads of 160": (2, 256, 256, 8, 160),
    "VAE: 4096 tokens, 1 head of 512": (1, 4096, 4096, 1, 512),
}


def sdpa(q, k, v, scale):
    """PyTorch's attention on (batch, tokens, heads, head size), laid out as the kernel's output."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2)


def main() -> None:
    flash_kernel()
    print(f"kernel build: {kernel_isa()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    torch.manual_seed(0)
    for name, (batch, queries, keys, heads, head) in SIZES.items():
        q, k, v = (torch.randn(batch, n, heads, head) for n in (queries, keys, keys))
        scale, cells = head**-0.5, []
        for dtype in (torch.float32, torch.bfloat16):
            args = (*(t.to(dtype) for t in (q, k, v)), scale)
            cells.append(f"{str(dtype)[6:]}: SDPA {time_it(lambda: sdpa(*args), repeats=5).min * 1e3:7.1f}, "  # noqa: B023 (called now)
                         f"kernel {time_it(lambda: flash_attention(*args), repeats=5).min * 1e3:7.1f}")  # noqa: B023
        print(f"{name:36s} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
