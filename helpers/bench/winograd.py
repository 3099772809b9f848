"""3×3 convolutions by Winograd's algorithm, for the ladder's CPU rung: NNPACK, which PyTorch's x86 builds ship.

A 3×3 convolution done directly costs 9 multiply-adds per input channel, output channel and pixel. Winograd's
minimal filtering (Lavin and Gray, 2015, arXiv:1509.09308) transforms tiles of the input and the kernel so that
most of that becomes elementwise products: NNPACK's F(6×6, 3×3) needs about a fifth as many multiplications, at the
cost of the transforms and a little rounding. PyTorch carries NNPACK and exposes its inference path as
``torch._nnpack_spatial_convolution``, one picture at a time (a batch goes to NNPACK's training path, slower here).
It pays where pictures are large and channels few, as in the VAE's decoder and the UNet's outer blocks, and loses
on the UNet's inner blocks (16×16 and 8×8 latents, 1,280 channels): so each layer is timed both ways on its own
input shape once, and keeps the faster. Float32 only (NNPACK has no bfloat16).
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable

import torch
from torch import nn

from ..timing import time_it

CHOSEN: dict[tuple, bool] = {}  # choice_key(...) -> Winograd measured faster


def nnpack_available() -> bool:
    """Whether this PyTorch build has NNPACK and it starts on this x86 CPU (the call initialises it)."""
    return platform.machine().lower() in ("x86_64", "amd64") and torch.backends.nnpack.is_available()


def _winograd_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     padding: list[int]) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1) by NNPACK, picture by picture, in ``x``'s layout."""
    weight = weight.contiguous()  # once, not per picture (the bench's weights are channels-last)
    outs = [torch._nnpack_spatial_convolution(x[i:i + 1].contiguous(), weight, bias, padding, [1, 1])
            for i in range(x.shape[0])]
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return out.contiguous(memory_format=torch.channels_last) if channels_last(x) else out


def _output_like(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 padding: list[int]) -> torch.Tensor:
    height = x.shape[2] + 2 * padding[0] - weight.shape[2] + 1
    width = x.shape[3] + 2 * padding[1] - weight.shape[3] + 1
    out = x.new_empty((x.shape[0], weight.shape[0], height, width))
    return out.contiguous(memory_format=torch.channels_last) if channels_last(x) else out


@functools.cache
def winograd_op():
    """``torch.ops.efficient_diffusion.winograd_conv2d``, registered at the first use with its shape rule for
    tracing (torch.compile calls it as one operator)."""
    torch.backends.nnpack.is_available()  # NNPACK must be initialised before its first convolution
    op = torch.library.custom_op("efficient_diffusion::winograd_conv2d", _winograd_conv2d, mutates_args=())
    op.register_fake(_output_like)
    return torch.ops.efficient_diffusion.winograd_conv2d


def channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is a picture batch laid out channels-last (and not also plain contiguous, as 1×1 pictures are)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def candidate(layer: nn.Module) -> bool:
    """Whether NNPACK can run ``layer``: a plain float32 3×3 ``nn.Conv2d`` on the CPU, stride 1, padding under 3."""
    return (type(layer) is nn.Conv2d and layer.kernel_size == (3, 3) and layer.stride == (1, 1)
            and layer.dilation == (1, 1) and layer.groups == 1 and layer.padding_mode == "zeros"
            and isinstance(layer.padding, tuple) and max(layer.padding) < 3
            and layer.weight.dtype == torch.float32 and layer.weight.device.type == "cpu")


def _seconds(fn: Callable[[], object]) -> float:
    """The faster of two timed calls after one untimed call."""
    return time_it(fn, repeats=2, warmup=1).min


def choice_key(layer: nn.Conv2d, shape: tuple, laid_out_channels_last: bool) -> tuple:
    """What a layer's choice depends on: its weight's shape, its padding, its input's shape and layout."""
    return tuple(layer.weight.shape), tuple(layer.padding), shape, laid_out_channels_last


@torch.no_grad()
def winograd_faster(layer: nn.Conv2d, shape: tuple, laid_out_channels_last: bool, margin: float = 0.9) -> bool:
    """Whether Winograd runs ``layer`` on inputs of ``shape`` in under ``margin`` times the direct convolution's
    time (oneDNN's, as PyTorch picks it). Timed once per weight shape, input shape and layout, on a random input
    cut to 64×64 pixels at most (both ways scale with the pixels from there; a 512×512 input would take seconds)."""
    if len(shape) != 4:  # an unbatched picture: left to PyTorch
        return False
    key = choice_key(layer, shape, laid_out_channels_last)
    if key not in CHOSEN:
        op = winograd_op()
        x = torch.randn(*shape[:2], min(shape[2], 64), min(shape[3], 64))
        if laid_out_channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        direct = _seconds(lambda: layer._conv_forward(x, layer.weight, layer.bias))
        winograd = _seconds(lambda: op(x, layer.weight, layer.bias, list(layer.padding)))
        CHOSEN[key] = winograd < margin * direct
    return CHOSEN[key]


class WinogradConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (3×3, stride 1) that runs on NNPACK's Winograd convolution where that measured faster.

    The choice is made at the layer's first call outside torch.compile (``winograd_faster``) and kept. A layer
    first called inside torch.compile (after the bench reloaded the pipeline, say) takes the choice an earlier layer
    of the same shapes measured, and the direct convolution if none did; the compiled graph holds it as a constant.
    """

    winograd: bool | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use = self.winograd
        if use is None:
            if torch.compiler.is_compiling():
                use = CHOSEN.get(choice_key(self, tuple(x.shape), channels_last(x)), False)
            else:
                use = self.winograd = winograd_faster(self, tuple(x.shape), channels_last(x))
        if use:
            return torch.ops.efficient_diffusion.winograd_conv2d(x, self.weight, self.bias, list(self.padding))
        return self._conv_forward(x, self.weight, self.bias)


def use_winograd(model: nn.Module) -> int:
    """Let each of ``model``'s float32 3×3 convolutions run on Winograd where, at its first call, that measures
    faster; in place. How many layers may."""
    winograd_op()
    layers = [layer for layer in model.modules() if candidate(layer)]
    for layer in layers:
        layer.__class__ = WinogradConv2d  # the same parameters and attributes, another forward
        layer.winograd = None
    return len(layers)


def winograd_report(layers: list[WinogradConv2d]) -> str:
    """One line: how many of ``layers`` chose Winograd and how many the direct convolution at their first eager
    call, and how many were first called inside torch.compile (those hold no choice of their own: they took the one
    measured, in this process, for their shapes)."""
    kept, direct = (sum(layer.winograd is choice for layer in layers) for choice in (True, False))
    line = (f"Winograd kept by {kept} of {len(layers)} float32 3x3 convolutions, {direct} measured faster direct")
    compiled = sum(layer.winograd is None for layer in layers)
    if not compiled:
        return line
    return (line + f"; {compiled} first ran compiled and took the choice measured for their shapes in this process "
            f"(Winograd for {sum(CHOSEN.values())} of the {len(CHOSEN)} shapes measured; direct for any other)")
