"""Whether an optimization really took effect on a model (notebook 04): what it changed, counted.

A setting that silently does nothing (a patch that matches no layer, a cache that never reuses) would still time and
draw fine; these counts are what 04's checked cells print, so such a setting fails there.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds, counting a quantized tensor subclass (Quanto, torchao) by the tensors inside it."""
    if hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of all of a module's parameters, quantized ones counted by what they store."""
    return sum(tensor_bytes(p) for p in module.parameters())


def quantized_linears(module: torch.nn.Module) -> tuple[int, int]:
    """(Linear layers whose weight is quantized, all Linear layers) in ``module``.

    Quantized: a weight that is a tensor subclass rather than a plain tensor, as Quanto's ``QLinear`` and torchao's
    ``quantize_`` leave it.
    """
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return sum(type(m.weight) not in (torch.Tensor, torch.nn.Parameter) for m in linears), len(linears)


def float8_share(module: torch.nn.Module) -> float:
    """The share of a module's parameter bytes stored in a float8 dtype (layerwise casting's storage)."""
    total = weight_bytes(module)
    stored = sum(tensor_bytes(p) for p in module.parameters() if p.dtype in (torch.float8_e4m3fn, torch.float8_e5m2))
    return stored / total if total else 0.0


@dataclass
class Runs:
    """How many times a part ran during the block (``ran``), out of how many calls of the whole (``calls``).

    ``contexts`` splits both by the diffusers cache context each call ran in (``"cond"``, ``"uncond"``): a pipeline
    with true classifier-free guidance calls its transformer twice a step, once in each.
    """

    ran: int = 0
    calls: int = 0
    contexts: dict[str, Runs] = field(default_factory=dict)

    @property
    def share(self) -> float:
        return self.ran / self.calls if self.calls else 0.0

    def share_in(self, context: str) -> float:
        """The share of the calls made in ``context`` that ran the part; NaN where no call was made in it."""
        return self.contexts[context].share if context in self.contexts else float("nan")

    def add(self, what: str, context: str | None) -> None:
        """Count one more ``"calls"`` or ``"ran"``, in all and in ``context`` (if any)."""
        for runs in [self] + ([self.contexts.setdefault(context, Runs())] if context else []):
            setattr(runs, what, getattr(runs, what) + 1)

    def __str__(self) -> str:
        return f"ran on {self.ran} of {self.calls} calls ({self.share:.0%})"

    __repr__ = __str__


@contextlib.contextmanager
def count_runs(whole: torch.nn.Module, part: torch.nn.Module):
    """Within the block, count the calls of ``whole`` and how many of them really ran ``part`` (DeepCache skips it).

    ``part`` is counted at its first layer with weights: a cache that swaps the part's ``forward`` for a kept result
    still goes through the part's own call, but never reaches its layers. Where ``whole`` is a diffusers
    ``CacheMixin``, each call is also counted under the cache context the pipeline opened for it (``Runs.contexts``).
    """
    runs, context = Runs(), [None]
    first = next(m for m in part.modules() if not list(m.children()) and list(m.parameters(recurse=False)))
    hooks = [whole.register_forward_pre_hook(lambda *_: runs.add("calls", context[0])),
             first.register_forward_pre_hook(lambda *_: runs.add("ran", context[0]))]
    own = vars(whole).get("cache_context")  # an instance's own method (an outer count_runs'), put back at the end
    if hasattr(whole, "cache_context"):
        opened = whole.cache_context

        @contextlib.contextmanager
        def named(name, **kwargs):  # the pipeline's own cache_context, remembering the name while it is open
            context[0] = name
            try:
                with opened(name, **kwargs):
                    yield
            finally:
                context[0] = None

        whole.cache_context = named
    try:
        yield runs
    finally:
        for hook in hooks:
            hook.remove()
        vars(whole).pop("cache_context", None)
        if own is not None:
            whole.cache_context = own


@dataclass
class Tokens:
    """Tokens entering the UNet's transformer blocks and their self-attention, over every call in the block."""

    into_blocks: int = 0
    into_attention: int = 0

    @property
    def merged(self) -> float:
        """The share of tokens the self-attention did not see: 0 when nothing was merged."""
        return 1 - self.into_attention / self.into_blocks if self.into_blocks else 0.0

    def __str__(self) -> str:
        return f"self-attention saw {self.into_attention:,} of {self.into_blocks:,} tokens ({self.merged:.0%} merged)"

    __repr__ = __str__


@contextlib.contextmanager
def count_tokens(unet: torch.nn.Module):
    """Within the block, count the tokens entering each transformer block and its self-attention (token merging)."""
    from diffusers.models.attention import BasicTransformerBlock

    tokens = Tokens()

    def into_block(_module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        tokens.into_blocks += hidden.shape[0] * hidden.shape[1]

    def into_attention(_module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        tokens.into_attention += hidden.shape[0] * hidden.shape[1]

    hooks = []
    for block in unet.modules():
        if isinstance(block, BasicTransformerBlock):
            hooks.append(block.register_forward_pre_hook(into_block, with_kwargs=True))
            hooks.append(block.attn1.register_forward_pre_hook(into_attention, with_kwargs=True))
    try:
        yield tokens
    finally:
        for hook in hooks:
            hook.remove()


def compiled_blocks(module: torch.nn.Module) -> dict[str, int]:
    """How many submodules of each class ``module.compile``/``compile_repeated_blocks`` marked for compiling."""
    marked: dict[str, int] = {}
    for sub in module.modules():
        if getattr(sub, "_compiled_call_impl", None) is not None:
            marked[type(sub).__name__] = marked.get(type(sub).__name__, 0) + 1
    return marked


def repeated_blocks(model: torch.nn.Module) -> dict[str, int]:
    """How many submodules of each class the model declares as its repeated blocks (04, 05), those that
    ``compile_repeated_blocks`` compiles; diffusers keeps that list in a private attribute, read here only."""
    names = set(getattr(model, "_repeated_blocks", None) or ())
    found: dict[str, int] = dict.fromkeys(sorted(names), 0)
    for sub in model.modules():
        if type(sub).__name__ in names:
            found[type(sub).__name__] += 1
    return found
