"""DeepCache for a ``UNet2DConditionModel``: reuse the deep blocks' output between steps, with diffusers' own hooks.

DeepCache (Ma, Fang and Wang, CVPR 2024, arXiv:2312.00858) observes that a UNet's deep, low-resolution features change
little from one denoising step to the next. Every ``interval`` steps the whole UNet runs and the output of each block
below the shallowest skip connection is kept; in between, only the outermost down and up blocks run, fed the kept
deep features. diffusers' ready-made caches (FirstBlockCache, FasterCache, TaylorSeer...) look for a transformer's
top-level ``transformer_blocks`` and so find nothing to cache in a UNet; their ``ModelHook`` mechanism fits it as is.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers.hooks import HookRegistry, ModelHook

HOOK = "deep_cache"


@dataclass
class CacheCounts:
    """How many UNet calls ran the deep blocks (``full``) and how many reused them (``reused``)."""

    interval: int
    full: int = 0
    reused: int = 0
    step: int = 0
    last_timestep: float | None = None
    last_shape: tuple | None = None

    @property
    def reuse(self) -> bool:
        return self.step % self.interval != 0

    def __str__(self) -> str:
        return (f"deep blocks ran on {self.full} of {self.full + self.reused} UNet calls "
                f"(reused on {self.reused}; interval {self.interval})")

    __repr__ = __str__


class _Clock(ModelHook):
    """On the UNet: counts the steps of a generation; a new one starts when the timestep rises (PNDM repeats one)."""

    def __init__(self, counts: CacheCounts):
        super().__init__()
        self.counts = counts

    def pre_forward(self, module, *args, **kwargs):
        counts = self.counts
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        t = float(timestep.flatten()[0]) if hasattr(timestep, "flatten") else float(timestep)
        shape = tuple(args[0].shape) if args else None
        new_run = counts.last_timestep is None or t > counts.last_timestep or shape != counts.last_shape
        counts.step = 0 if new_run else counts.step + 1
        counts.last_timestep, counts.last_shape = t, shape
        if counts.reuse:
            counts.reused += 1
        else:
            counts.full += 1
        return args, kwargs


class _Reuse(ModelHook):
    """On a deep block: run it and keep its output on a full step, return the kept output otherwise."""

    def __init__(self, counts: CacheCounts):
        super().__init__()
        self.counts, self.kept = counts, None

    def new_forward(self, module, *args, **kwargs):
        if self.counts.reuse and self.kept is not None:
            return self.kept
        self.kept = self.fn_ref.original_forward(*args, **kwargs)
        return self.kept


def apply_deep_cache(unet, interval: int = 2) -> CacheCounts:
    """Make ``unet`` run its deep blocks only every ``interval`` steps; returns live counts of what ran."""
    if interval < 2:
        raise ValueError(f"interval must be at least 2 (1 would recompute every step), got {interval}.")
    if len(unet.down_blocks) < 2 or len(unet.up_blocks) < 2:
        raise ValueError("DeepCache needs a UNet with at least two down and two up blocks.")
    if HOOK in HookRegistry.check_if_exists_or_initialize(unet).hooks:
        raise ValueError("DeepCache is already on: call remove_deep_cache(unet) first.")
    counts = CacheCounts(interval)
    HookRegistry.check_if_exists_or_initialize(unet).register_hook(_Clock(counts), HOOK)
    for block in [*unet.down_blocks[1:], unet.mid_block, *unet.up_blocks[:-1]]:
        HookRegistry.check_if_exists_or_initialize(block).register_hook(_Reuse(counts), HOOK)
    return counts


def remove_deep_cache(unet) -> None:
    """Take DeepCache's hooks off ``unet`` and its blocks: every step runs the whole UNet again."""
    HookRegistry.check_if_exists_or_initialize(unet).remove_hook(HOOK, recurse=True)
