"""Linear layers for the ladder's CPU rung: oneDNN's inner product on weights packed once, as OpenVINO runs them.

In float32 PyTorch runs ``nn.Linear`` on MKL's sgemm, and inductor's freezing on MKL's packed sgemm; in bfloat16
both use oneDNN. On an AMD EPYC (Zen 4) capped to AVX2, oneDNN on a packed weight ran the UNet's largest linear
shapes 5 to 27 % faster than ``nn.Linear`` (docs/benchmark.md); OpenVINO's linear layers are oneDNN's too. PyTorch ships
the two operators inductor itself uses for this, ``mkldnn._reorder_linear_weight`` and ``mkldnn._linear_pointwise``;
the custom operator below calls them, so that eager runs and torch.compile alike call the packed product as it is.
"""

from __future__ import annotations

import functools
import platform

import torch
from torch import nn
from torch.utils.weak import WeakTensorKeyDictionary

_PACKS = WeakTensorKeyDictionary()  # weight -> (its stamp, {rows: the weight packed for that many rows, or None})


def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN on an x86 CPU (measured there only; ARM builds route it elsewhere)."""
    return torch.backends.mkldnn.is_available() and platform.machine().lower() in ("x86_64", "amd64")


def _stamp(weight: torch.Tensor) -> tuple:
    """What changes when ``weight``'s values may have: its dtype, its storage, and its in-place version counter."""
    version = 0 if weight.is_inference() else weight._version  # inference tensors keep no counter (and never change)
    return weight.dtype, weight.data_ptr(), version


def packed(weight: torch.Tensor, rows: int) -> torch.Tensor | None:
    """``weight`` in oneDNN's layout for ``rows`` rows of input, packed at the first call and reused while it is
    unchanged; None where oneDNN cannot pack this dtype on this CPU (bfloat16 under an AVX2 cap, for one)."""
    stamp, packs = _PACKS.get(weight, (None, None))
    if stamp != (now := _stamp(weight)):  # new, moved to another dtype, or written in place: old packs are stale
        packs = {}
        _PACKS[weight] = (now, packs)
    if rows not in packs:
        try:
            packs[rows] = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
        except RuntimeError:  # "bf16 path needs the cpu support avx_ne_convert or avx512bw, ...": half types only
            if weight.dtype == torch.float32:
                raise
            packs[rows] = None
    return packs[rows]


def _packed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` on oneDNN with ``weight`` packed once per number of rows (else ``F.linear``)."""
    pack = packed(weight, x.numel() // max(x.shape[-1], 1))
    if pack is None:
        return torch.nn.functional.linear(x, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x, pack, bias, "none", [], "")


def _output_like(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@functools.cache
def packed_linear_op():
    """``torch.ops.efficient_diffusion.packed_linear``, registered at the first use with its shape rule for tracing."""
    op = torch.library.custom_op("efficient_diffusion::packed_linear", _packed_linear, mutates_args=())
    op.register_fake(_output_like)
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
