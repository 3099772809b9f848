"""``--profile``: where one guided UNet step and one VAE decode spend their time, grouped into five kinds of work.

PyTorch's operators come from ``torch.profiler`` (one call, after the rung's timing); each operator's own time
counts for the kind of the nearest enclosing operator that has one, so the bookkeeping an operator does inside
(allocations, copies, reshapes) counts where it belongs. A compiled graph's fused C++ kernels are not operators:
their time is the compiled region's own, and counts as ``other``. FLOPs per kind come from the same
``torch.utils.flop_counter`` count as the bench's (attention as the math backend spells it out), so each kind
gets its TFLOP/s as a share of the measured peak. OpenVINO's compiled model reports its layers' times itself
(``PERF_COUNT``), which are grouped by layer type and, for its fused layers, by name.
"""

from __future__ import annotations

import os
import re

KINDS = ("convolution", "attention", "linear", "normalisation", "other")

# Substrings of PyTorch operator names (aten::, mkldnn::, onednn::, or dispatched variants), first match wins.
# Attention is tried first: its math-backend spelling uses batched matrix products (bmm), which no other layer of
# the UNet or VAE uses; linear layers are addmm/mm/linear (mkldnn's _linear_pointwise when compiled).
TORCH_KINDS = (
    ("attention", ("scaled_dot_product", "flash_attention", "efficient_attention", "bmm", "softmax")),
    ("convolution", ("convolution", "conv1d", "conv2d", "conv3d")),
    ("linear", ("linear", "addmm", "::mm", "aten.mm", "matmul")),
    ("normalisation", ("group_norm", "layer_norm", "batch_norm")),
)

# OpenVINO's executed layer types (``ProfilingInfo.node_type``), as its CPU plugin names them.
OPENVINO_KINDS = {
    "convolution": ("Convolution", "Deconvolution", "GroupConvolution"),
    "attention": ("ScaledDotProductAttention", "ScaledAttn", "MatMul", "Softmax", "SoftMax"),
    "linear": ("FullyConnected", "FullyConnectedCompressed", "Gemm"),
    "normalisation": ("MVN", "GroupNormalization", "NormalizeL2", "LayerNorm", "RMSNorm"),
}


def torch_kind(name: str) -> str | None:
    """The kind of work a PyTorch operator (``aten::convolution``, ``aten.bmm``, ...) does; None if none of them."""
    name = name.lower()
    for kind, parts in TORCH_KINDS:
        if any(part in name for part in parts):
            return kind
    return None


def openvino_kind(node_type: str, node_name: str = "") -> str:
    """The kind of work an OpenVINO layer does, from its type, else from its name (``other`` for the rest).

    OpenVINO's CPU plugin fuses attention (matmul, softmax, matmul) and GroupNorm into ``Subgraph`` layers, which
    keep the name of one of their PyTorch operations and module: ``....attn1/aten::transpose/Transpose_3``,
    ``....norm1/aten::group_norm/GroupNormalization``; the VAE's attention module is ``mid_block.attentions.0``.
    """
    for kind, types in OPENVINO_KINDS.items():
        if node_type in types:
            return kind
    name = node_name.lower()
    if "group_norm" in name or "layer_norm" in name:
        return "normalisation"
    in_attention = re.search(r"\.attn\d*/|mid_block\.attentions\.\d+/", name)  # the UNet's; the VAE's
    if "scaled_dot_product" in name or (node_type == "Subgraph" and in_attention):
        return "attention"
    return "other"


def flops_by_kind(counts: dict) -> dict[str, float]:
    """FLOPs per kind from ``FlopCounterMode.get_flop_counts()['Global']`` (operator -> FLOPs)."""
    kinds = dict.fromkeys(KINDS, 0.0)
    for op, flops in counts.items():
        kinds[torch_kind(str(op)) or "other"] += float(flops)
    return kinds


def seconds_by_kind(events, device_type: str = "cpu") -> dict[str, float]:
    """Seconds per kind from a profiler's ``events()``: each event's own time, under its nearest kinded ancestor."""
    from torch.autograd import DeviceType

    kinds = dict.fromkeys(KINDS, 0.0)
    for event in events:
        if getattr(event, "device_type", DeviceType.CPU) != DeviceType.CPU:
            continue  # a GPU kernel: its time is already its launching operator's own device time
        own = event.self_cpu_time_total if device_type == "cpu" else event.self_device_time_total
        node, kind = event, None
        while node is not None and kind is None:
            kind, node = torch_kind(node.name), node.cpu_parent
        kinds[kind or "other"] += own / 1e6  # microseconds
    return kinds


def profile_call(call, device_type: str = "cpu") -> dict[str, float]:
    """Run ``call`` once under ``torch.profiler`` and return its seconds per kind."""
    from torch.profiler import ProfilerActivity, profile

    # Kineto (torch 2.13) logs "USDT: ... profiler_start" and "profiler_stop" to stderr at every profile; its
    # levels run VERBOSE 0 to USDT 5, so 6 silences it (its errors too). A value the user set is kept. Kineto reads
    # it once, at the process's first profile: a profiler started elsewhere before this one keeps the lines.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device_type == "cuda" else [])
    with profile(activities=activities) as prof:
        call()
    return seconds_by_kind(prof.events(), device_type)


def openvino_seconds(profiling_info) -> dict[str, float]:
    """Seconds per kind from an OpenVINO infer request's ``get_profiling_info()`` (executed layers only)."""
    kinds = dict.fromkeys(KINDS, 0.0)
    for layer in profiling_info:
        if str(layer.status).split(".")[-1] == "EXECUTED":  # not NOT_RUN or OPTIMIZED_OUT
            kinds[openvino_kind(layer.node_type, layer.node_name)] += layer.real_time.total_seconds()
    return kinds


def breakdown_rows(rung: str, part: str, seconds: dict[str, float], flops: dict[str, float] | None,
                   peak: float | None) -> list[dict]:
    """One flat row per kind: seconds, share of the call, and TFLOP/s as a percentage of ``peak`` where known."""
    total = sum(seconds.values()) or float("nan")
    rows = []
    for kind in KINDS:
        s = seconds[kind]
        tflops = flops[kind] / s / 1e12 if flops and s > 0 and flops[kind] else None
        rows.append({"rung": rung, "part": part, "kind": kind, "s": s, "share %": 100 * s / total,
                     "TFLOP/s": tflops, "% of peak": 100 * tflops / peak if tflops and peak else None})
    return rows


def breakdown_line(rows: list[dict]) -> str:
    """One printed line for one part of one rung: each kind's seconds, and its share of the peak where known."""
    parts = []
    for row in rows:
        text = f"{row['kind']} {row['s']:.2f} s"
        if row["% of peak"] is not None:
            text += f" ({row['% of peak']:.0f} % of peak)"
        parts.append(text)
    return f"    profile {rows[0]['part']}: " + ", ".join(parts)
