"""The bench's pipeline: moved from rung to rung, and each rung's parts timed as the pipeline calls them."""

from __future__ import annotations

import contextlib
import time

import torch

from ..device import half_dtype, synchronize
from ..memory import flush
from ..models import load_pipeline, quiet_logs
from ..prompts import GUIDE_PROMPT
from ..timing import time_it
from .attention import pad_attention_heads, use_flash_attention
from .flops import flops_by_operator, totals
from .ladder import PAD_MULTIPLE, UNDONE_BY_RELOADING, Rung
from .linear import use_packed_linear
from .profile import breakdown_rows, flops_by_kind, profile_call
from .winograd import WinogradConv2d, use_winograd, winograd_report


def keep_freed_memory() -> None:
    """Ask glibc never to return freed memory to the system (no mmap for big blocks, no trimming).

    PyTorch's CPU allocator hands every activation back to malloc; large ones are mmapped and unmapped each
    call, so the next call pays page faults and zeroing again. This keeps the pages for reuse instead.
    """
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4
    # mallopt takes a C int: a larger Python int is masked by ctypes (2**62 became 0, "trim at every free")
    if not (libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**31 - 1)):
        raise RuntimeError("glibc's mallopt refused the setting")


def give_back_freed_memory() -> None:
    """glibc's defaults again (big blocks mmapped, the heap trimmed past 128 KiB), and what it kept handed back now.

    The rungs after ``keep_freed_memory`` keep its pages (their memory is already laid out); the peers' conversions,
    which need several GB more for a while, must not: one capped run was killed for memory converting OpenVINO.
    """
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4
    libc.mallopt(m_mmap_max, 65536)  # glibc's DEFAULT_MMAP_MAX
    libc.mallopt(m_trim_threshold, 128 * 1024)  # glibc's DEFAULT_TRIM_THRESHOLD
    libc.malloc_trim(0)


def forget_compiled_modules() -> None:
    """Drop inductor's compiled Python modules. With freezing, a graph's module holds the model's weights as its
    constants, and in PyTorch 2.13 it stays in ``sys.modules`` after ``torch.compiler.reset()``, weights and all."""
    import sys

    from torch._inductor.codecache import PyCodeCache

    PyCodeCache.cache_clear()
    for name in [name for name in sys.modules if name.startswith("torch._inductor.runtime.compile_tasks.")]:
        del sys.modules[name]


def compiled_graphs() -> int:
    """How many graphs torch.compile has made in this process so far (recompiles included)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def prompt_embeddings(pipe, device: torch.device) -> torch.Tensor:
    """The guide's prompt and the empty one, encoded as the pipeline encodes them for guidance (a batch of 2)."""
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(GUIDE_PROMPT, device, 1, True)
    return torch.cat([uncond, cond])


def start_latents(pipe, height: int, width: int) -> torch.Tensor:
    """One picture's starting latents (float32, on the CPU) from seed 0: what the bench and its peers time."""
    shape = (1, pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


class Bench:
    """One pipeline, moved from rung to rung (``apply``) and timed on each (``time_rung``)."""

    def __init__(self, model: str, device: torch.device, height: int | None, width: int | None, repeats: int):
        self.model, self.device, self.repeats = model, device, repeats
        self.pipe = load_pipeline(model, dtype=torch.float32, device=device, quiet=True)
        self.first_scheduler = self.pipe.scheduler  # the model's own (PNDM for SD 1.5), to go back to
        self.height = height or self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        self.width = width or self.height
        ops = flops_by_operator(self.pipe, self.height, self.width)
        self.flops = totals(ops)
        self.flop_kinds = {"UNet step": flops_by_kind(ops["unet"]), "decode": flops_by_kind(ops["vae"])}  # --profile
        self.current = Rung("")  # the settings the pipeline has now
        self.memory_kept = False  # glibc's setting, once made, holds for the rest of the process
        self.compile_s = {}  # seconds of the first calls (compiling included) of each compiled rung, by name
        self.graphs = 0  # graphs torch.compile made, warm-up included
        self.freezing_before = None  # inductor's freezing setting before the compiled rung changed it
        self.cache = None  # DeepCache's helper while a rung uses it
        self.profiles = []  # the breakdown rows of --profile, one per rung, part and kind

    # 1. Settings on and off

    def uncompile(self) -> None:
        """Drop the compiled graphs and give inductor's freezing setting back its value from before."""
        if self.freezing_before is not None:
            import torch._inductor.config as inductor

            torch._dynamo.reset()
            inductor.freezing, self.freezing_before = self.freezing_before, None

    def release(self) -> None:
        """Drop the pipeline, its compiled graphs and packed weights (for the peers); ``reload()`` loads a new one."""
        self.pipe = self.cache = None
        self.current = Rung("")  # no pipeline, no settings: the next ``apply`` loads one
        self.uncompile()
        forget_compiled_modules()
        flush()

    def reload(self) -> None:
        """A freshly loaded pipeline in float32 with PNDM, nothing compiled or patched: the way to take settings off."""
        self.release()
        self.pipe = load_pipeline(self.model, dtype=torch.float32, device=self.device, quiet=True)
        self.current = Rung("")

    def apply(self, rung: Rung) -> None:
        """Move the pipeline from its current settings to the rung's, reloading it when one must come off (or when
        ``release`` dropped it)."""
        undone = any(getattr(self.current, key) and not getattr(rung, key) for key in UNDONE_BY_RELOADING)
        if undone or self.pipe is None:
            self.reload()
        pipe, current = self.pipe, self.current
        with quiet_logs():
            if rung.half and not current.half:
                pipe.to(dtype=half_dtype(self.device))
            if rung.solver != current.solver:
                from diffusers import DPMSolverMultistepScheduler

                scheduler = DPMSolverMultistepScheduler if rung.solver == "dpm" else type(self.first_scheduler)
                pipe.scheduler = scheduler.from_config(self.first_scheduler.config)
            fused = rung.channels_last and not current.channels_last
            if fused:
                pipe.unet.to(memory_format=torch.channels_last)
                pipe.vae.to(memory_format=torch.channels_last)
                pipe.fuse_qkv_projections()  # this also resets the attention processors: pad after it
            if rung.pad_heads and (fused or not current.pad_heads):
                pad_attention_heads(pipe.unet, PAD_MULTIPLE)
            if rung.flash_attention and (fused or not current.flash_attention):
                use_flash_attention(pipe.unet)
                use_flash_attention(pipe.vae)  # its one head of 512: the kernel where bfloat16 pairs run
            if rung.packed_linear and (fused or not current.packed_linear):
                use_packed_linear(pipe.unet)  # after fusing: the fused QKV projections are new linear layers
            if rung.winograd and (fused or not current.winograd):
                use_winograd(pipe.unet)  # each layer chooses at its first call (the rung's warm-up)
                use_winograd(pipe.vae.decoder)
            if rung.compiles_more_than(current):
                import torch._inductor.config as inductor

                # Freezing folds the weights into the graph so that oneDNN can pre-pack them (CPU inference).
                # Inductor reads it when it compiles, which happens at the first call: so it is set for the
                # rest of the process, not only around the warm-up, and any later recompile is frozen too.
                # Not for regional compilation: one graph serves every copy of the block only while the weights
                # are its inputs; frozen, each copy compiles again until dynamo's recompile limit (8) stops it.
                if self.freezing_before is None:
                    self.freezing_before = inductor.freezing
                inductor.freezing = self.device.type == "cpu" and rung.compiled
                if rung.compiled:
                    pipe.unet.compile(fullgraph=True)
                    pipe.vae.decoder.compile(fullgraph=True)
                else:  # the repeated block (the UNet names it), compiled once and reused by every copy
                    pipe.unet.compile_repeated_blocks(fullgraph=True)
            if rung.tome and not current.tome:
                import tomesd

                tomesd.apply_patch(pipe, ratio=rung.tome, use_rand=False)
            if rung.deepcache and not current.deepcache:
                from DeepCache import DeepCacheSDHelper

                self.cache = DeepCacheSDHelper(pipe=pipe)
                self.cache.set_params(cache_interval=rung.deepcache, cache_branch_id=0)
                self.cache.enable()
            if rung.keep_memory and not self.memory_kept:
                keep_freed_memory()
                self.memory_kept = True
        self.current = rung

    # 2. Timing

    @contextlib.contextmanager
    def quiet_compiler(self):
        """Hide dynamo's notes about diffusers' internals (not about the results) while a compiled rung runs."""
        if not self.current.compiles:
            yield
            return
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield

    def calls(self) -> dict:
        """The text encoder, one guided UNet step and the VAE decode, each called exactly as the pipeline calls it.

        Contiguous latents, the prompt's embeddings and a 0-d int64 timestep made outside inference mode,
        no_grad (the pipeline's own mode) and ``return_dict=False``: with torch.compile, a call that differs in
        any of these (say channels-last latents, or inference tensors) would compile and time another graph.
        """
        pipe = self.pipe
        latents = start_latents(pipe, self.height, self.width).to(self.device, pipe.unet.dtype)
        timestep = torch.tensor(999, device=self.device)
        embeds = prompt_embeddings(pipe, self.device)

        @torch.no_grad()
        def unet_call():
            return pipe.unet(torch.cat([latents] * 2), timestep, encoder_hidden_states=embeds, timestep_cond=None,
                             cross_attention_kwargs=None, added_cond_kwargs=None, return_dict=False)[0]

        @torch.no_grad()
        def decode():
            return pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]

        return {"text": lambda: prompt_embeddings(pipe, self.device), "unet": unet_call, "vae": decode}

    def time_rung(self, rung: Rung, direct_limit: float, best_e2e: float | None = None) -> dict:
        """Time the rung's parts; generate a whole image too when its estimate is under ``direct_limit`` s.

        When ``rung.steps`` times one UNet call (on a CPU the first, unless it packs weights or times its
        convolutions; on a GPU the second, see ``second_call_s``) already exceeds twice ``best_e2e``, an exact rung
        cannot be kept: it is timed no further, and its end-to-end time is that lower bound (``e2e how``: 'at
        least'). An approximate rung is never kept, and is timed in full for its pictures' difference (tomesd's first
        call alone can be that slow).
        """
        if rung.deepcache:
            return self.time_whole(rung)
        calls = self.calls()
        compiles = self.current.compiles
        with self.quiet_compiler():
            warm = time.perf_counter()
            if compiles:
                self.generate(2)  # compiles the graphs the pipeline itself uses (the calls below reuse them)
            calls["unet"]()  # these first calls are the warm-up
            if not compiles and best_e2e and rung.exact:
                # kernels chosen, weights packed, or Winograd timed against the direct convolution, layer by layer
                first_is_slow = self.device.type != "cpu" or rung.packed_linear or rung.winograd
                unet_s = self.second_call_s(calls["unet"]) if first_is_slow else time.perf_counter() - warm
                if rung.steps * unet_s > 2 * best_e2e:
                    return self.hopeless(rung, unet_s)
            calls["vae"]()
            if rung.winograd:  # each convolution chose at its first call, just now or on an earlier rung
                layers = [m for part in (self.pipe.unet, self.pipe.vae.decoder) for m in part.modules()
                          if isinstance(m, WinogradConv2d)]
                print("    " + winograd_report(layers), flush=True)
            first = time.perf_counter() - warm
            graphs = compiled_graphs() if compiles else None
            text, unet, vae = (time_it(calls[key], repeats=self.repeats, warmup=0) for key in ("text", "unet", "vae"))
        row = self.row(rung, unet.median, vae.median, text.median)
        if compiles and rung.exact:
            row["compile s"] = self.compile_s[rung.name] = first
        if row["e2e s"] <= direct_limit:
            with self.quiet_compiler():
                run = time_it(lambda: self.generate(rung.steps), repeats=1, warmup=0)
            row["e2e s"], row["e2e how"] = run.median, "measured"
            row["image"] = run.value
        if graphs is not None:  # the warm-up compiled what the pipeline runs: timing should compile nothing more
            self.graphs = compiled_graphs()
            if self.graphs != graphs:
                print(f"    note: torch.compile made {self.graphs - graphs} more graph(s) while timing")
        self.add_rates(row, rung.steps)
        return row

    def time_whole(self, rung: Rung) -> dict:
        """A rung whose UNet step cannot be timed alone (DeepCache reuses features across steps): whole pictures.

        The text encoder and the decode are timed apart; the UNet's seconds per step are what is left, shared out.
        """
        calls = self.calls()
        self.generate(2)  # warm-up
        text, vae = (time_it(calls[key], repeats=self.repeats, warmup=0) for key in ("text", "vae"))
        run = time_it(lambda: self.generate(rung.steps), repeats=1, warmup=0)
        unet_s = max(run.median - text.median - vae.median, 1e-9) / rung.steps
        row = self.row(rung, unet_s, vae.median, text.median)
        row["e2e s"], row["e2e how"], row["image"] = run.median, "measured", run.value
        self.add_rates(row, rung.steps)
        return row

    def profile(self, row: dict, peak: dict[str, float]) -> list[list[dict]]:
        """One more guided UNet call and decode under torch.profiler: per part, each kind's seconds and share of the
        peak."""
        calls = self.calls()
        rows = []
        with self.quiet_compiler():
            for part, name in (("unet", "UNet step"), ("vae", "decode")):
                seconds = profile_call(calls[part], self.device.type)
                rows.append(self.add_profile(row, name, seconds, peak))
        return rows

    def add_profile(self, row: dict, part: str, seconds: dict[str, float], peak: dict[str, float]) -> list[dict]:
        """Keep and return the breakdown of one part ('UNet step' or 'decode') of a rung's or peer's ``row``."""
        rows = breakdown_rows(row["rung"], part, seconds, self.flop_kinds[part], peak.get(row["dtype"]))
        self.profiles += rows
        return rows

    def row(self, rung: Rung, unet_s: float, vae_s: float, text_s: float) -> dict:
        """A rung's row from its parts' seconds, end to end estimated as text + steps x UNet + decode."""
        return {"rung": rung.name, "kind": "exact" if rung.exact else "approximate",
                "dtype": str(self.pipe.unet.dtype).split(".")[-1], "solver": rung.solver, "steps": rung.steps,
                "unet s/step": unet_s, "it/s": 1 / unet_s, "vae decode s": vae_s, "text s": text_s,
                "e2e s": text_s + rung.steps * unet_s + vae_s, "e2e how": "estimated"}

    def second_call_s(self, call) -> float:
        """Seconds of one more call, synchronized. On a GPU the first call after a change of dtype or memory layout
        also selects and loads its kernels (cuDNN's for channels-last), so it says little about the calls after."""
        synchronize(self.device)
        start = time.perf_counter()
        call()
        synchronize(self.device)
        return time.perf_counter() - start

    def hopeless(self, rung: Rung, unet_s: float) -> dict:
        """The row of a rung timed by one UNet call only (``time_rung``): its steps times that call are far too slow."""
        row = self.row(rung, unet_s, float("nan"), float("nan"))
        row["e2e s"], row["e2e how"] = rung.steps * unet_s, "at least"
        self.add_rates(row, rung.steps)
        return row

    def add_rates(self, row: dict, steps: int) -> None:
        """Add achieved TFLOP/s (whole image and UNet) and, on a CPU, core-seconds per image to a measured row."""
        total = steps * self.flops["unet"] + self.flops["vae"] + self.flops["text"]
        row["TFLOP/s"] = total / row["e2e s"] / 1e12
        row["unet TFLOP/s"] = self.flops["unet"] / row["unet s/step"] / 1e12
        if self.device.type == "cpu":
            row["core-s/image"] = row["e2e s"] * torch.get_num_threads()

    def generate(self, steps: int):
        """One whole picture from the guide's prompt and seed 0, as a float array."""
        return self.pipe(GUIDE_PROMPT, height=self.height, width=self.width, num_inference_steps=steps,
                         generator=torch.Generator().manual_seed(0), output_type="np").images[0]
