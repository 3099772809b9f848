"""Linear layers for the ladder's CPU rung: oneDNN's inner product on weights packed once, as OpenVINO runs them.

In float32 PyTorch runs ``nn.Linear`` on MKL's sgemm, and inductor's freezing on MKL's packed sgemm; in bfloat16
both use oneDNN. On an AMD EPYC (Zen 4) capped to AVX2, oneDNN on a packed weight ran the UNet's largest linear
shapes about 10 % faster than either (docs/benchmark.md); OpenVINO's linear layers are oneDNN's too. PyTorch ships
the two operators inductor itself uses for this, ``mkldnn._reorder_linear_weight`` and ``mkldnn._linear_pointwise``;
the custom operator below calls them, so that eager runs and torch.compile alike call the packed product as it is.
"""

from __future__ import annotations

import functools
import platform

import torch
from torch import nn
from torch.utils.weak import WeakTensorKeyDictionary

_PACKS = WeakTensorKeyDictionary()  # weight -> {(rows, dtype, data pointer): the weight packed for that many rows}


def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN on an x86 CPU (measured there only; ARM builds route it elsewhere)."""
    return torch.backends.mkldnn.is_available() and platform.machine().lower() in ("x86_64", "amd64")


def packed(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """``weight`` in oneDNN's layout for ``rows`` rows of input: packed at the first call (a copy), then reused."""
    packs = _PACKS.setdefault(weight, {})
    key = (rows, weight.dtype, weight.data_ptr())  # a weight moved to another dtype in place is packed again
    if key not in packs:
        packs[key] = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
    return packs[key]


def _packed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` on oneDNN, with ``weight`` packed once per number of rows."""
    return torch.ops.mkldnn._linear_pointwise(x, packed(weight, x.numel() // x.shape[-1]), bias, "none", [], "")


def _output_shape(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@functools.cache
def packed_linear_op():
    """``torch.ops.efficient_diffusion.packed_linear``, registered at the first use with its shape rule for tracing."""
    op = torch.library.custom_op("efficient_diffusion::packed_linear", _packed_linear, mutates_args=())
    op.register_fake(_output_shape)
    return torch.ops.efficient_diffusion.packed_linear


class PackedLinear(nn.Linear):
    """An ``nn.Linear`` that runs on oneDNN with its weight packed (``use_packed_linear`` makes them)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.efficient_diffusion.packed_linear(x, self.weight, self.bias)


def use_packed_linear(model: nn.Module) -> int:
    """Run every ``nn.Linear`` of ``model`` on oneDNN with packed weights, in place; how many layers changed."""
    packed_linear_op()
    layers = [layer for layer in model.modules() if type(layer) is nn.Linear]
    for layer in layers:
        layer.__class__ = PackedLinear  # the same parameters and attributes, another forward
    return len(layers)
