"""``python -m helpers.bench --peers``: OpenVINO and ONNX Runtime, the engines a CPU user might pick instead.

Each peer gets the UNet and the VAE decoder of a float32 copy of the bench's pipeline, converted in the run itself:
OpenVINO with ``openvino.convert_model`` (TorchScript tracing), compiled for the CPU in float32 and, where the CPU
computes bfloat16 natively, again in bfloat16 (``INFERENCE_PRECISION_HINT``): one row each, the fastest being the
peer to beat; ONNX Runtime from ``torch.onnx.export`` (the
torch.export based exporter) on its CPU execution provider, in float32. Both use as many threads as PyTorch. A peer
row has the same columns as a rung's: the guided UNet step (a batch of 2), the VAE decode, and end-to-end seconds
per image at the DPM-Solver++ rungs' step count, measured by running the diffusers pipeline with its UNet and VAE
decoder swapped for the peer's (the text encoder stays PyTorch float32) or, when that is too slow, estimated like a
rung's. It adds the conversion time and the largest and mean difference from PyTorch float32 for the same inputs:
of the UNet's output, and of the decoded image in 0-255 pixel levels. Peers are never part of the ``speedup:``
line.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import math
import tempfile
import time
import warnings
from pathlib import Path

import torch

from ..device import cpu_has_fast_bf16
from ..models import load_pipeline, quiet_logs
from ..prompts import GUIDE_PROMPT
from ..timing import time_it
from .profile import breakdown_line, openvino_seconds
from .runner import prompt_embeddings, start_latents

INSTALL = 'pip install -e ".[peers]"'


class OpenVINO:
    """Intel's OpenVINO runtime on the CPU, in float32 and, where the CPU computes bfloat16 natively, in bfloat16."""

    name = "OpenVINO"
    modules = ("openvino",)

    def __init__(self, profiling: bool = False, precision: str = "f32"):
        import openvino as ov

        self.profiling = profiling  # ask the compiled models to time their layers (--profile)
        self.ov, self.core = ov, ov.Core()
        self.precision, self.dtype = precision, {"bf16": "bfloat16", "f32": "float32"}[precision]
        self.label = f"OpenVINO {ov.get_version().split('-')[0]} {self.precision}"

    @staticmethod
    def variants() -> list[dict]:
        """Both precisions where the CPU computes bfloat16 natively, whichever the recipe picked (the fastest peer
        is the fastest of them); float32 alone elsewhere. Under an ISA cap (ONEDNN_MAX_CPU_ISA) OpenVINO still
        reports BF16, so its own report is not enough."""
        import openvino as ov

        bf16 = cpu_has_fast_bf16() and "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        return [{"precision": "bf16"}, {"precision": "f32"}] if bf16 else [{"precision": "f32"}]

    def convert(self, module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], workdir: Path):
        """Trace ``module`` on ``inputs``, fix the input shapes to theirs, compile it for the CPU."""
        model = self.ov.convert_model(module, example_input=inputs)
        model.reshape({port: self.ov.PartialShape(list(x.shape)) for port, x in zip(model.inputs, inputs, strict=True)})
        config = {"INFERENCE_PRECISION_HINT": self.precision, "INFERENCE_NUM_THREADS": torch.get_num_threads(),
                  "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": "YES" if self.profiling else "NO"}
        request = self.core.compile_model(model, "CPU", config).create_infer_request()

        def run(*args):
            return torch.from_numpy(request.infer([_array(x) for x in args])[0])

        run.layers = request.get_profiling_info  # the last inference's layers and their times (PERF_COUNT)
        return run


class OnnxRuntime:
    """Microsoft's ONNX Runtime with its CPU execution provider, in float32 (no per-layer breakdown: its profiler
    writes a trace file, which the bench does not read)."""

    name = "ONNX Runtime"
    modules = ("onnxruntime", "onnx", "onnxscript")

    def __init__(self, profiling: bool = False):
        import onnxruntime as ort

        self.ort, self.dtype = ort, "float32"
        self.label = f"ONNX Runtime {ort.__version__} CPU EP"

    def convert(self, module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], workdir: Path):
        """Export ``module`` to an ONNX file in ``workdir`` and open an inference session on it."""
        path = workdir / f"{type(module).__name__}.onnx"
        names = [f"input{i}" for i in range(len(inputs))]
        # Without torchvision the exporter logs that it skips torchvision's operators: nothing the models use.
        logger = logging.getLogger("torch.onnx._internal.exporter._registration")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            torch.onnx.export(module, inputs, path, input_names=names, dynamo=True, external_data=True,
                              verbose=False)
        finally:
            logger.setLevel(level)
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = self.ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [port.name for port in session.get_inputs()]
        return lambda *args: torch.from_numpy(session.run(None, dict(zip(names, map(_array, args), strict=True)))[0])


PEERS = (OpenVINO, OnnxRuntime)


def _array(x: torch.Tensor):
    return x.detach().cpu().contiguous().numpy()


class UNetStep(torch.nn.Module):
    """One UNet call, positional in and one tensor out: the form both converters take."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class Decode(torch.nn.Module):
    """The VAE's decode alone (latents already divided by the scaling factor), one tensor out."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latents):
        return self.vae.decode(latents, return_dict=False)[0]


@contextlib.contextmanager
def swapped(pipe, unet_run, decode_run):
    """Inside the block, the pipeline's UNet forward and VAE decode call the peer's compiled models instead."""
    from diffusers.models.autoencoders.vae import DecoderOutput
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    def forward(sample, timestep, encoder_hidden_states, *args, return_dict=True, **kwargs):
        out = unet_run(sample, torch.as_tensor(timestep).to(torch.int64), encoder_hidden_states)
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)

    def decode(latents, return_dict=True, generator=None):
        out = decode_run(latents)
        return DecoderOutput(sample=out) if return_dict else (out,)

    pipe.unet.forward, pipe.vae.decode = forward, decode
    try:
        yield pipe
    finally:
        del pipe.unet.forward, pipe.vae.decode


@contextlib.contextmanager
def quiet_conversion():
    """Hide the tracers' and exporters' warnings about diffusers' internals: notes, not results."""
    with quiet_logs(), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        yield


def installed() -> list:
    """The peers whose packages import; one line naming the others and how to add them."""
    ready, missing = [], []
    for peer in PEERS:
        try:
            for module in peer.modules:
                importlib.import_module(module)
        except ImportError:
            missing.append(peer.name)
        else:
            ready.append(peer)
    if missing:
        print(f"peers: {' and '.join(missing)} not installed; `{INSTALL}` adds "
              + ("it" if len(missing) == 1 else "them") + ("" if ready else ", the bench goes on without peers"))
    return ready


def _pixels(decoded: torch.Tensor) -> torch.Tensor:
    return (decoded.float() / 2 + 0.5).clamp(0, 1) * 255


def _difference(out: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    diff = (out.float() - reference.float()).abs()
    return float(f"{diff.max().item():.3g}"), float(f"{diff.mean().item():.3g}")


class Reference:
    """The inputs every peer gets, and PyTorch float32's outputs for them: the bench's latents, prompt, timestep."""

    def __init__(self, pipe, height: int, width: int):
        latents = start_latents(pipe, height, width)
        self.unet_in = (torch.cat([latents] * 2), torch.tensor(999), prompt_embeddings(pipe, torch.device("cpu")))
        self.decode_in = (latents / pipe.vae.config.scaling_factor,)
        with torch.no_grad():
            self.unet_out = UNetStep(pipe.unet)(*self.unet_in)
            self.image = _pixels(Decode(pipe.vae)(*self.decode_in))


def ready_on(device: torch.device) -> list:
    """The peers the bench will measure on ``device``, said before the rungs start (CPU engines only)."""
    if device.type != "cpu":
        print(f"peers: OpenVINO and ONNX Runtime are CPU engines; not compared with PyTorch on {device.type}")
        return []
    return installed()


def run_peers(bench, model: str, steps: int, direct_limit: float, ready: list,
              peak: dict[str, float] | None = None) -> list[dict]:
    """Convert and measure the ``ready`` peers on a float32 copy of ``model``: one row per peer that ran; with
    ``peak`` (--profile), the per-layer breakdown of each peer that times its layers too."""
    if not ready:
        return []
    from diffusers import DPMSolverMultistepScheduler

    pipe = load_pipeline(model, dtype=torch.float32, device="cpu", quiet=True)
    with quiet_logs():
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    print("peers: UNet and VAE decoder converted from a float32 copy of the pipeline; the text encoder stays "
          "PyTorch float32", flush=True)
    ref = Reference(pipe, bench.height, bench.width)
    text = time_it(lambda: prompt_embeddings(pipe, torch.device("cpu")), repeats=bench.repeats, warmup=1).median
    rows = []
    engines = [(peer, options) for peer in ready for options in getattr(peer, "variants", lambda: [{}])()]
    for number, (peer, options) in enumerate(engines, 1):
        print(f"[peer {number}/{len(engines)}] {' '.join([peer.name, *options.values()])} ...", flush=True)
        stage, layers = "conversion", []
        try:
            with tempfile.TemporaryDirectory(prefix="peers-") as workdir:
                engine = peer(profiling=peak is not None, **options)
                started = time.perf_counter()
                with quiet_conversion():
                    unet_run = engine.convert(UNetStep(pipe.unet), ref.unet_in, Path(workdir))
                    decode_run = engine.convert(Decode(pipe.vae), ref.decode_in, Path(workdir))
                converted = time.perf_counter() - started
                stage = "run"
                row = run_peer(bench, pipe, ref, engine, unet_run, decode_run, steps, text, direct_limit)
                row["convert s"] = round(converted, 1)
                add_output_difference(row, ref, unet_run(*ref.unet_in), decode_run(*ref.decode_in))
                stage = "profile"
                if peak is not None and hasattr(unet_run, "layers"):  # the layers of the two calls just made
                    for part, run in (("UNet step", unet_run), ("decode", decode_run)):
                        layers.append(bench.add_profile(row, part, openvino_seconds(run.layers()), peak))
        except Exception as err:  # a peer that cannot convert (or run) this model is skipped, with its reason
            reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
            if stage != "profile":
                print(f"    skipped: {peer.name} {stage} failed ({reason})", flush=True)
                continue
            print(f"    {peer.name}: no per-layer breakdown ({reason})", flush=True)  # its row stays
        finally:
            unet_run = decode_run = None
            gc.collect()
        rows.append(row)
        print(f"    converted in {converted:.1f} s; unet {row['unet s/step']:.3f} s/step, decode "
              f"{row['vae decode s']:.3f} s, e2e {row['e2e s']:.2f} s ({row['e2e how']}); difference from PyTorch "
              f"float32: UNet max {row['unet max diff']:.3g} / mean {row['unet mean diff']:.3g}, decoded image max "
              f"{row['decode max diff']:.3g} / mean {row['decode mean diff']:.3g} pixel levels", flush=True)
        for part in layers:
            print(breakdown_line(part), flush=True)
    return rows


def run_peer(bench, pipe, ref: Reference, engine, unet_run, decode_run, steps: int, text: float,
             direct_limit: float) -> dict:
    """Time a converted peer's parts like a rung's; end to end through the pipeline when that is quick enough."""
    unet = time_it(lambda: unet_run(*ref.unet_in), repeats=bench.repeats, warmup=1)
    vae = time_it(lambda: decode_run(*ref.decode_in), repeats=bench.repeats, warmup=1)
    estimate = text + steps * unet.median + vae.median
    row = {"rung": f"peer: {engine.label}", "kind": "peer", "dtype": engine.dtype, "solver": "dpm", "steps": steps,
           "unet s/step": unet.median, "it/s": 1 / unet.median, "vae decode s": vae.median, "text s": text,
           "e2e s": estimate, "e2e how": "estimated"}
    if estimate <= direct_limit:
        with swapped(pipe, unet_run, decode_run):
            run = time_it(lambda: pipe(GUIDE_PROMPT, height=bench.height, width=bench.width, num_inference_steps=steps,
                                       generator=torch.Generator().manual_seed(0), output_type="np").images[0],
                          repeats=1, warmup=0)
        row["e2e s"], row["e2e how"], row["image"] = run.median, "measured", run.value
    bench.add_rates(row, steps)
    return row


def add_output_difference(row: dict, ref: Reference, unet_out: torch.Tensor, decoded: torch.Tensor) -> None:
    """Add the peer's largest and mean differences from PyTorch float32 to its row."""
    row["unet max diff"], row["unet mean diff"] = _difference(unet_out, ref.unet_out)
    row["decode max diff"], row["decode mean diff"] = _difference(_pixels(decoded), ref.image)


def summary(rows: list[dict]) -> str | None:
    """``vs peers: ...``: the fastest peer's seconds per image over the best exact rung's (above 1: PyTorch wins)."""
    peers = [r for r in rows if r["kind"] == "peer" and math.isfinite(r["e2e s"])]
    exact = [r for r in rows if r["kind"] == "exact"]
    if not peers or not exact:
        return None
    fastest = min(peers, key=lambda r: r["e2e s"])
    best = min(r["e2e s"] for r in exact)
    return (f"vs peers: best exact rung is {fastest['e2e s'] / best:.2f}x the fastest peer "
            f"({fastest['rung'].removeprefix('peer: ')})")
