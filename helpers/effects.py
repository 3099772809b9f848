"""Whether an optimization really took effect on a model (notebook 04): the layers it changed, counted."""

from __future__ import annotations

import torch


def quantized_linears(module: torch.nn.Module) -> tuple[int, int]:
    """(quantized Linear layers, all Linear layers) in ``module``.

    Quantized: PyTorch's dynamic int8 ``Linear`` (from ``torch.ao.quantization.quantize_dynamic``), or an
    ``nn.Linear`` whose weight is a quantized tensor subclass (torchao's ``quantize_``).
    """
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    plain = (torch.Tensor, torch.nn.Parameter)
    quantized = total = 0
    for m in module.modules():
        if isinstance(m, DynamicInt8Linear):
            quantized, total = quantized + 1, total + 1
        elif isinstance(m, torch.nn.Linear):
            quantized, total = quantized + (type(m.weight) not in plain), total + 1
    return quantized, total
