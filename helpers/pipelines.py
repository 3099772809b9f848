"""Choosing a model and loading it as a diffusers pipeline: a hub id, a local folder, or a preset."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch

from .device import as_dtype, pick_device
from .errors import TutorialError

REAL_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
FINE_TUNED_VAE = "stabilityai/sd-vae-ft-mse"
PROMPT = "portrait photo of a old warrior chief"
PRESET_NAMES = ("tiny", "sd15-random")
MODEL_NAMES = ("shapes", *PRESET_NAMES)  # names that need no Hub: the shipped model and the presets
# Hub ids that were removed, and where the model lives now.
RENAMED = {"runwayml/stable-diffusion-v1-5": REAL_MODEL}
ENV_VAR = "TUTORIAL_MODEL"


def default_model(device: str | torch.device | None = None) -> tuple[str, str]:
    """The model to use when none is given, and why: TUTORIAL_MODEL, else by the device the tutorial targets.

    ``device`` is the device the tutorial runs on (default: this machine's best), not where one copy of a
    pipeline is first loaded: a notebook that loads to the CPU before moving to a GPU still gets the GPU's model.
    """
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR], f"from ${ENV_VAR}"
    device = torch.device(device) if device is not None else pick_device()
    if device.type in ("cuda", "mps"):
        return REAL_MODEL, f"default on {device.type}"
    return "shapes", "default on CPU, where the real model takes minutes per image"


def resolve_model(model: str | None = None, device: str | torch.device | None = None) -> tuple[str, str]:
    """Normalise a model spec to (spec, reason): an explicit argument, else TUTORIAL_MODEL, else the default."""
    reason = "chosen explicitly"
    if model is None:
        model, reason = default_model(device)
    model = model.strip()
    if model in RENAMED:
        print(f"Note: {model!r} was removed from the Hub; using its new home {RENAMED[model]!r}.")
        model = RENAMED[model]
    if model in MODEL_NAMES:
        return model, reason
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise TutorialError(f"{model!r} is a file; give the folder that holds model_index.json.")
        if not any(path.rglob("*.safetensors")):
            raise TutorialError(
                f"{model!r} has no .safetensors weights; this tutorial only loads safetensors "
                "(convert the checkpoint, or pick a hub id or a preset such as 'tiny')."
            )
        return str(path), reason
    if model.count("/") == 1 and all(model.split("/")):
        return model, reason
    raise TutorialError(
        f"Unknown model {model!r}: use {', '.join(MODEL_NAMES)}, "
        "a hub id such as 'stable-diffusion-v1-5/stable-diffusion-v1-5', or a local folder."
    )


class _TorchvisionFallbackFilter(logging.Filter):
    """Drops transformers' notice that an image processor falls back to its PIL version without torchvision."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return "requires torchvision (not installed); falling back to" not in text


def hide_torchvision_notice() -> None:
    """Hide transformers' two-line notice, when diffusers' pipelines are imported, that torchvision is missing.

    transformers 5 prefers torchvision for image processors and falls back to PIL with a warning; the tutorial only
    uses the safety checker's feature extractor, which the PIL version serves exactly. torchvision is not a
    dependency because it must match the installed torch build (a PyPI torchvision on a CPU-only torch fails to
    import). Only that notice is dropped; every other warning still shows. Calling it again adds nothing.
    """
    logger = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _TorchvisionFallbackFilter) for f in logger.filters):
        logger.addFilter(_TorchvisionFallbackFilter())


@contextlib.contextmanager
def quiet_logs():
    """Inside the block only, show just errors from transformers and diffusers: no notices, warnings or bars."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libs = (diffusers_logging, transformers_logging)
    levels = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libs]
    for lib in libs:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, level, bars in levels:
            lib.set_verbosity(level)
            if bars:
                lib.enable_progress_bar()


def _hub_error(spec: str, err: Exception) -> TutorialError:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        where = "HF_HUB_OFFLINE is set and it is not in the local cache"
        then = "or unset HF_HUB_OFFLINE where the Hub is reachable to download it once."
    else:
        where = f"the Hub is unreachable or has no such model, and it is not cached; {type(err).__name__}"
        then = "or, once the model is cached, set HF_HUB_OFFLINE=1 to load it without the network."
    return TutorialError(
        f"Could not load {spec!r} ({where}). Without the Hub, set {ENV_VAR}=shapes, {ENV_VAR}=tiny or "
        f"{ENV_VAR}=sd15-random, {then}"
    )


def from_pretrained(cls, spec: str, **kwargs):
    """Call ``cls.from_pretrained`` with safetensors only, turning network failures into a one-line error."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    kwargs.setdefault("use_safetensors", True)
    try:
        with quiet_logs():
            return cls.from_pretrained(spec, **kwargs)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, ConnectionError, TimeoutError) as err:
        raise _hub_error(spec, err) from None
    except OSError as err:
        # diffusers re-raises most download problems as OSError with an explanatory message.
        if Path(spec).exists():
            raise TutorialError(f"Could not load the local model {spec!r}: {err}") from None
        raise _hub_error(spec, err) from None


def load_pipeline(
    model: str | None = None,
    dtype: str | torch.dtype | None = torch.float32,
    device: str | torch.device | None = None,
    quiet: bool = False,
):
    """``DiffusionPipeline.from_pretrained(choose_model(...))`` in ``dtype`` on ``device``, progress bars off.

    For scripts and tests; the notebooks spell these calls out. Turn the bars back on with
    ``pipe.set_progress_bar_config(disable=False)``.
    """
    from diffusers import DiffusionPipeline

    from .choice import choose_model

    device = torch.device(device) if device is not None else pick_device()
    dtype = as_dtype(dtype, device)
    # The default follows the device the tutorial targets, not where this copy is loaded (e.g. the CPU first).
    model_id = choose_model(None, model, quiet=True)
    if not quiet:
        print(f"Model: {resolve_model(model)[0]} on {device.type}, {dtype} (set {ENV_VAR} to change)")
    pipe = from_pretrained(DiffusionPipeline, model_id, dtype=dtype)
    with quiet_logs():
        pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def model_name(pipe) -> str:
    """What a pipeline was loaded from: 'shapes', 'tiny', 'sd15-random', or the hub id or folder."""
    from .choice import family

    source = pipe.config.get("_name_or_path") or "?"
    kind = family(source)
    return source if kind == "sd15" else kind


def load_vae(pipe, model_id: str | None = None):
    """The better VAE for the pipeline's model (``choice.choose_vae``) in the pipeline's dtype and device."""
    from diffusers import AutoencoderKL

    from .choice import choose_vae

    vae = from_pretrained(AutoencoderKL, choose_vae(model_id or pipe.config._name_or_path), dtype=pipe.dtype)
    with quiet_logs():
        return vae.to(device=pipe.device)


def get_inputs(prompt: str | list[str] = PROMPT, batch_size: int = 1, steps: int = 20, seed: int = 0) -> dict:
    """The guide's ``get_inputs``: the prompt repeated, one CPU generator per image (seeds seed..seed+n-1), steps."""
    from .device import make_generators

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps (num_inference_steps) must be a whole number >= 1, got {steps!r}.")
    prompts = [prompt] * batch_size if isinstance(prompt, str) else list(prompt)
    if len(prompts) != batch_size:
        raise ValueError(f"Got {len(prompts)} prompts for a batch of {batch_size}.")
    return {"prompt": prompts, "generator": make_generators(batch_size, seed), "num_inference_steps": steps}
