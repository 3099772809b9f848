"""Which model and VAE suit this device, as ids ``DiffusionPipeline.from_pretrained`` takes, and loading them.

``choose_model`` returns a hub id or a folder for every choice: the real model, a local folder, the shipped
``shapes`` model (``helpers/shapes/weights``), and the presets (``tiny``, ``sd15-random``), which are saved as
diffusers folders on first use. It checks what it can before the load (a bad name, an unreachable Hub), so a
learner sees one line, not a traceback. ``load_pipeline`` is the same choice plus the load, for scripts and tests:
the notebooks spell ``from_pretrained`` out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .device import as_dtype, pick_device
from .errors import TutorialError

REAL_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
REAL_FLUX = "black-forest-labs/FLUX.1-schnell"  # 05's real model: Apache-2.0, not gated, 4 steps
FLUX_BYTES = 40 * 2**30  # FLUX.1 in bfloat16 is about 33 GB (transformer 24 GB, T5-XXL 9.5 GB): a 40 GiB card
FINE_TUNED_VAE = "stabilityai/sd-vae-ft-mse"
PRESET_NAMES = ("tiny", "sd15-random")
SHIPPED_NAMES = ("shapes", "shapes-flux")  # the project's trained models, in helpers/shapes/weights
MODEL_NAMES = (*SHIPPED_NAMES, *PRESET_NAMES)  # names that need no Hub: the shipped models and the presets
UNET_NAMES = ("shapes", *PRESET_NAMES)  # those 01-04 and the commands take
RENAMED = {"runwayml/stable-diffusion-v1-5": REAL_MODEL}  # hub ids that were removed, and where the model lives now
ENV_VAR = "TUTORIAL_MODEL"
FLUX_ENV_VAR = "TUTORIAL_FLUX_MODEL"  # notebook 05's model, a Flux-class pipeline
WEIGHTS = Path(__file__).resolve().parent / "shapes" / "weights"  # the shipped shapes checkpoints, in the package
SHAPES_VAE = "shapes-vae-ft"


# 1. The choice: by name, $TUTORIAL_MODEL or device


def default_model(device: str | torch.device | None = None) -> tuple[str, str]:
    """The model to use when none is given, and why: $TUTORIAL_MODEL, else by the device the tutorial targets.

    ``device`` is the device the tutorial runs on (default: this machine's best), not where one copy of a
    pipeline is first loaded: a notebook that loads to the CPU before moving to a GPU still gets the GPU's model.
    """
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR], f"from ${ENV_VAR}"
    device = torch.device(device) if device is not None else pick_device()
    if device.type in ("cuda", "mps"):
        return REAL_MODEL, f"default on {device.type}"
    return "shapes", "default on CPU, where the real model takes minutes per image"


def resolve_model(model: str | None = None, device: str | torch.device | None = None,
                  flux: bool = False) -> tuple[str, str]:
    """Normalise a model spec to (spec, reason): an explicit argument, else $TUTORIAL_MODEL, else the default.

    ``flux``: the spec is for notebook 05, which needs a Flux-class pipeline; else for 01-04 and the commands.
    """
    reason = "chosen explicitly"
    if model is None:
        model, reason = default_model(device)
    model = model.strip()
    if model in RENAMED:
        print(f"Note: {model!r} was removed from the Hub; using its new home {RENAMED[model]!r}.")
        model = RENAMED[model]
    if model in MODEL_NAMES:
        if flux != (model == "shapes-flux"):
            raise TutorialError(f"{model!r} is {'not ' if flux else ''}a Flux pipeline: notebook 05 takes shapes-flux "
                                f"or a Flux model (${FLUX_ENV_VAR}); 01-04 and the commands take "
                                f"{', '.join(UNET_NAMES)} (${ENV_VAR}).")
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
    if model.count("/") == 1 and _is_hub_id(model):
        return model, reason
    missing = "no such folder, and not a hub id; " if "/" in model or "\\" in model else ""  # a path, then
    raise TutorialError(
        f"Unknown model {model!r}: {missing}use {'shapes-flux' if flux else ', '.join(UNET_NAMES)}, "
        f"a hub id such as {REAL_FLUX if flux else REAL_MODEL!r}, or a local folder."
    )


def _is_hub_id(model: str) -> bool:
    """Whether ``model`` is spelled as the Hub allows a repository id (``./nope`` and ``a/..`` are not)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        return False
    return True


def choose_model(device: str | torch.device | None = None, model: str | None = None, quiet: bool = False) -> str:
    """The model id for ``DiffusionPipeline.from_pretrained``: ``model``, else $TUTORIAL_MODEL, else by device.

    The default is the real Stable Diffusion 1.5 on a GPU and the small trained ``shapes`` model on a CPU.
    """
    spec, reason = resolve_model(model, device)
    model_id = locate(spec)
    if not quiet:
        print(f"Model: {spec} ({reason}; set {ENV_VAR} to change)")
    return model_id


def choose_flux_model(device: str | torch.device | None = None, model: str | None = None) -> str:
    """Notebook 05's model id: ``model``, else $TUTORIAL_FLUX_MODEL, else FLUX.1-schnell on a CUDA card that can hold
    it where the Hub answers, else the shipped ``shapes-flux``. Prints the choice and why, in one line."""
    if model is None and os.environ.get(FLUX_ENV_VAR):
        model, reason = os.environ[FLUX_ENV_VAR], f"from ${FLUX_ENV_VAR}"
    elif model is None:
        model, reason = _default_flux(torch.device(device) if device is not None else pick_device())
    else:
        reason = "chosen explicitly"
    spec, _ = resolve_model(model, flux=True)
    print(f"Model: {spec} ({reason}; set {FLUX_ENV_VAR} to change)")
    return locate(spec)


def _default_flux(device: torch.device) -> tuple[str, str]:
    """(spec, reason) for 05's default model on ``device``."""
    if device.type != "cuda":
        return "shapes-flux", f"default on {device.type}: FLUX.1 needs a large GPU"
    total = torch.cuda.get_device_properties(device).total_memory
    if total < FLUX_BYTES:
        return "shapes-flux", f"this GPU's {total / 2**30:.0f} GiB cannot hold {REAL_FLUX} (about 33 GB in bfloat16)"
    from huggingface_hub import try_to_load_from_cache

    answer = "cached" if isinstance(try_to_load_from_cache(REAL_FLUX, "model_index.json"), str) else hub_reachable()
    if answer == "cached" or answer.startswith("yes"):
        return REAL_FLUX, f"default on a {total / 2**30:.0f} GiB GPU"
    return "shapes-flux", f"{REAL_FLUX} is not cached and the Hub does not answer: {answer}"


def locate(spec: str) -> str:
    """The id or folder ``from_pretrained`` takes for a spec from ``resolve_model`` (a hub id is checked first)."""
    if spec in SHIPPED_NAMES:
        return _short(shapes_folder(spec))
    if spec in PRESET_NAMES:
        return _short(materialise(spec))
    if not Path(spec).expanduser().exists():
        check_hub(spec)
    return spec


def choose_vae(model_id: str) -> str:
    """The better VAE for a model, as an id for ``AutoencoderKL.from_pretrained``.

    The real model gets ``stabilityai/sd-vae-ft-mse``; ``shapes`` gets its own fine-tuned decoder
    (``shapes-vae-ft``); a preset gets a stand-in of the same shape with other random weights.
    """
    kind = model_kind(model_id)
    if kind == "shapes":
        return _short(shapes_folder(SHAPES_VAE))
    if kind in PRESET_NAMES:
        return _short(Path(model_id) / "vae-ft")
    check_hub(FINE_TUNED_VAE, "config.json")
    return FINE_TUNED_VAE


def model_kind(model_id: str) -> str:
    """'shapes', 'shapes-flux', 'tiny' or 'sd15-random' for the project's own models; 'other' for any other."""
    path = Path(model_id).expanduser()
    if path.exists():
        resolved = path.resolve()
        for name in SHIPPED_NAMES:
            if resolved == (WEIGHTS / name).resolve():
                return name
        for name in PRESET_NAMES:
            if resolved == (cache_dir() / name).resolve():
                return name
    return "other"


# 2. Where the models live: the shipped shapes weights, the presets' cache, the Hub


def shapes_folder(name: str = "shapes") -> Path:
    """A shipped folder in the package (``shapes``, ``shapes-flux``, ``shapes-vae-ft``); a clear error if missing."""
    folder = WEIGHTS / name
    if not (folder / ("config.json" if name == SHAPES_VAE else "model_index.json")).is_file():
        raise TutorialError(f"{folder} is missing: the shapes weights ship inside the package (reinstall it, or "
                            "git clone the repository), or rebuild them with `make shapes`.")
    return folder


def cache_dir() -> Path:
    """Where presets are saved as folders: $EFFICIENT_DIFFUSION_CACHE, else ~/.cache/efficient-diffusion."""
    if os.environ.get("EFFICIENT_DIFFUSION_CACHE"):
        return Path(os.environ["EFFICIENT_DIFFUSION_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "efficient-diffusion"


def _short(path: Path) -> str:
    """A path as short as it can be said: relative to the working directory when it lies near it."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith("../../") else str(path)


def materialise(name: str) -> Path:
    """Save a preset as a diffusers folder (once; later calls reuse it) and return the folder.

    UNet and VAE weights are stored in half precision to save disk (``from_pretrained`` still gives float32);
    the text encoder stays float32, because transformers would otherwise load it in float16.
    """
    from . import presets

    folder = cache_dir() / name
    if (folder / "model_index.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        with quiet_logs():
            pipe = presets.PRESETS[name]()
            pipe.unet.half()
            pipe.vae.half()
            pipe.save_pretrained(staging, safe_serialization=True)
            presets.STAND_IN_VAES[name]().half().save_pretrained(staging / "vae-ft", safe_serialization=True)
        staging.rename(folder)  # atomic: another process sees a whole folder or none
    except OSError:
        if not (folder / "model_index.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def folder_size(folder: str | Path) -> int:
    """Bytes of all weight files (.safetensors) under a model folder."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*.safetensors"))


def hub_reachable(timeout: float = 3.0) -> str:
    """Whether the Hugging Face Hub answers within ``timeout`` seconds (respects HF_ENDPOINT and HF_HUB_OFFLINE)."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "no (HF_HUB_OFFLINE is set)"
    url = f"{constants.ENDPOINT}/api/models/{REAL_MODEL}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return f"yes ({constants.ENDPOINT}, HTTP {response.status})"
    except urllib.error.HTTPError as err:
        return f"answers, but HTTP {err.code} ({constants.ENDPOINT})"
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return f"no ({constants.ENDPOINT}: {reason})"


def hub_error(repo_id: str, why: str) -> TutorialError:
    """The one-line error for a hub model that cannot be had: ``why`` it failed, and what to do instead."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        why, then = "HF_HUB_OFFLINE is set and it is not in the local cache", (
            "or unset HF_HUB_OFFLINE where the Hub is reachable to download it once.")
    else:
        then = "or, once the model is cached, set HF_HUB_OFFLINE=1 to load it without the network."
    return TutorialError(f"Could not load {repo_id!r} ({why}). Without the Hub, use shapes (a small model shipped "
                         f"with this tutorial), tiny or sd15-random: {ENV_VAR}=shapes for the notebooks, --model "
                         f"shapes for the commands; {then}")


def check_hub(repo_id: str, filename: str = "model_index.json") -> None:
    """Raise a one-line TutorialError unless ``repo_id`` is in the local cache or the Hub answers."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, filename), str):
        return
    if constants.HF_HUB_OFFLINE:
        raise hub_error(repo_id, "offline")
    answer = hub_reachable(timeout=5)
    if not answer.startswith("yes"):
        detail = answer.removeprefix("no (").removesuffix(")") if answer.startswith("no (") else answer
        raise hub_error(repo_id, f"it is not cached and the Hub does not answer: {detail}")


# 3. Loading, for scripts and tests


class _TorchvisionFallbackFilter(logging.Filter):
    """Drops transformers' notice that an image processor falls back to its PIL version without torchvision."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back to" not in record.getMessage()


def hide_torchvision_notice() -> None:
    """Hide transformers' notice, when diffusers' pipelines are imported, that torchvision is missing.

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


def from_pretrained(cls, spec: str, **kwargs):
    """Call ``cls.from_pretrained`` with safetensors only, turning network failures into a one-line error."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    kwargs.setdefault("use_safetensors", True)
    try:
        with quiet_logs():
            return cls.from_pretrained(spec, **kwargs)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, ConnectionError, TimeoutError) as err:
        raise hub_error(spec, f"the Hub is unreachable or has no such model, and it is not cached; "
                              f"{type(err).__name__}") from None
    except OSError as err:
        # diffusers re-raises most download problems as OSError with an explanatory message.
        if Path(spec).exists():
            raise TutorialError(f"Could not load the local model {spec!r}: {err}") from None
        raise hub_error(spec, f"the Hub is unreachable or has no such model, and it is not cached; "
                              f"{type(err).__name__}") from None


def load_pipeline(model: str | None = None, dtype: str | torch.dtype | None = torch.float32,
                  device: str | torch.device | None = None, quiet: bool = False):
    """``DiffusionPipeline.from_pretrained(choose_model(...))`` in ``dtype`` on ``device``, progress bars off.

    For scripts and tests; the notebooks spell these calls out. Turn the bars back on with
    ``pipe.set_progress_bar_config(disable=False)``.
    """
    from diffusers import DiffusionPipeline

    device = torch.device(device) if device is not None else pick_device()
    dtype = as_dtype(dtype, device)
    # The default follows the device the tutorial targets, not where this copy is loaded (e.g. the CPU first).
    spec, _ = resolve_model(model)
    if not quiet:
        print(f"Model: {spec} on {device.type}, {dtype} (--model or ${ENV_VAR} to change)")
    pipe = from_pretrained(DiffusionPipeline, locate(spec), dtype=dtype)
    with quiet_logs():
        pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
