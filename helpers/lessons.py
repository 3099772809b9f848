"""The seeds and tolerances of the notebooks' checks that depend on the shipped `shapes` weights (03), defined once.

``scripts/check_shapes_seeds.py`` imports them too and checks, after a retraining, whether they still hold.
"""

from __future__ import annotations

import torch

# 03's tweak: the seed whose circle keeps its place when only the colour word changes; 03 shows seeds 8-15, both of
# these among them. No seed of 0-95 holds both on a CPU and on a CUDA GPU (docs/shapes.md): on a CPU 11 holds in
# float32, bfloat16 and float16 alike; CUDA's float16, the notebooks' precision there, moves its circle 12 px, and
# 15 holds there instead (measured on an H200). MPS is unmeasured and takes the CPU's.
TWEAK_SEEDS = {"cpu": 11, "cuda": 15}
TWEAK_MOVE_PX = 9  # the tweak's circle is about 40 px across: its centroids stay within 9 px of each other,
TWEAK_AREA_RATIO = 1.25  # and its areas within 25 %


def tweak_seed(device: str | torch.device) -> int:
    """03's tweak seed on ``device``: 11 on a CPU, 15 on a CUDA GPU."""
    return TWEAK_SEEDS.get(torch.device(device).type, TWEAK_SEEDS["cpu"])
