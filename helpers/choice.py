"""Which model and VAE suit this device, as ids that ``DiffusionPipeline.from_pretrained`` takes as they are.

``choose_model`` returns a hub id or a folder for every choice: the real model, a local folder, the shipped
``shapes`` model, and the presets (``tiny``, ``sd15-random``), which are saved as diffusers folders on first use.
It checks what it can before the load (a bad name, an unreachable Hub), so a learner sees one line, not a traceback.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from .errors import TutorialError
from .pipelines import ENV_VAR, FINE_TUNED_VAE, PRESET_NAMES, REAL_MODEL, quiet_logs, resolve_model

MODELS = Path(__file__).resolve().parents[1] / "models"  # the repository's shipped checkpoints
SHAPES_VAE = "shapes-vae-ft"


def cache_dir() -> Path:
    """Where presets are saved as folders: $EFFICIENT_DIFFUSION_CACHE, else ~/.cache/efficient-diffusion."""
    if os.environ.get("EFFICIENT_DIFFUSION_CACHE"):
        return Path(os.environ["EFFICIENT_DIFFUSION_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "efficient-diffusion"


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


def _cached(repo_id: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename), str)


def check_hub(repo_id: str, filename: str = "model_index.json") -> None:
    """Raise a one-line TutorialError unless ``repo_id`` is in the local cache or the Hub answers."""
    from huggingface_hub import constants

    from .__main__ import hub_reachable

    if _cached(repo_id, filename):
        return
    if constants.HF_HUB_OFFLINE:
        where, then = "HF_HUB_OFFLINE is set and it is not in the local cache", (
            "or unset HF_HUB_OFFLINE where the Hub is reachable to download it once.")
    else:
        answer = hub_reachable(timeout=5)
        if answer.startswith("yes"):
            return
        where, then = f"the Hub is unreachable ({answer}) and it is not cached", (
            "or, once the model is cached, set HF_HUB_OFFLINE=1 to load it without the network.")
    raise TutorialError(f"Could not load {repo_id!r} ({where}). Without the Hub, set {ENV_VAR}=shapes (a small "
                        f"model shipped with this tutorial), {ENV_VAR}=tiny or {ENV_VAR}=sd15-random, {then}")


def choose_model(device: str | torch.device | None = None, model: str | None = None, quiet: bool = False) -> str:
    """The model id for ``DiffusionPipeline.from_pretrained``: ``model``, else $TUTORIAL_MODEL, else by device.

    The default is the real Stable Diffusion 1.5 on a GPU and the small trained ``shapes`` model on a CPU.
    """
    spec, reason = resolve_model(model, device)
    if spec == "shapes":
        model_id = _short(shapes_folder())
    elif spec in PRESET_NAMES:
        model_id = _short(materialise(spec))
    elif Path(spec).expanduser().exists():
        model_id = spec
    else:
        check_hub(spec)
        model_id = spec
    if not quiet:
        print(f"Model: {spec} ({reason}; set {ENV_VAR} to change)")
    return model_id


def shapes_folder(name: str = "shapes") -> Path:
    """The shipped ``models/shapes`` (or ``models/shapes-vae-ft``) folder; a clear error if it is missing."""
    folder = MODELS / name
    if not (folder / ("model_index.json" if name == "shapes" else "config.json")).is_file():
        raise TutorialError(f"{folder} is missing: the shapes model ships with the repository (git clone it), "
                            "or rebuild it with `make shapes`.")
    return folder


def family(model_id: str) -> str:
    """'shapes', 'tiny', 'sd15-random' or 'sd15' (the real model, another hub id, or any other folder)."""
    path = Path(model_id).expanduser()
    if path.exists():
        resolved = path.resolve()
        if resolved == (MODELS / "shapes").resolve():
            return "shapes"
        for name in PRESET_NAMES:
            if resolved == (cache_dir() / name).resolve():
                return name
    return "sd15"


def choose_vae(model_id: str) -> str:
    """The better VAE for a model, as an id for ``AutoencoderKL.from_pretrained``.

    The real model gets ``stabilityai/sd-vae-ft-mse``; ``shapes`` gets its own fine-tuned decoder
    (``models/shapes-vae-ft``); a preset gets a stand-in of the same shape with other random weights.
    """
    kind = family(model_id)
    if kind == "shapes":
        return _short(shapes_folder(SHAPES_VAE))
    if kind in PRESET_NAMES:
        return _short(Path(model_id) / "vae-ft")
    check_hub(FINE_TUNED_VAE, "config.json")
    return FINE_TUNED_VAE


__all__ = ["REAL_MODEL", "cache_dir", "check_hub", "choose_model", "choose_vae", "family", "folder_size",
           "materialise", "shapes_folder"]
