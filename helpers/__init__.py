"""Small helpers for the efficient-diffusion notebooks. Importing this package has no side effects."""

from .device import (
    MPS_MAX_BATCH,
    as_dtype,
    cap_batch,
    cpu_has_fast_bf16,
    device_name,
    half_dtype,
    make_generators,
    pick_device,
    recipe_dtype,
    recipe_dtype_reason,
    synchronize,
)
from .errors import TutorialError
from .images import captioned_grid, check_images, image_problems, make_image_grid
from .memory import GiB, MiB, catch_out_of_memory, find_max_batch, flush, is_out_of_memory, measure, peak_memory
from .pipelines import (
    FINE_TUNED_VAE,
    PRESET_NAMES,
    PROMPT,
    REAL_MODEL,
    default_model,
    get_inputs,
    hide_torchvision_notice,
    load_pipeline,
    load_vae,
    model_name,
    resolve_model,
)
from .report import GUIDE_T4, GUIDE_T4_BATCH8_SLICED, Results
from .timing import Timer, Timing, time_it

__all__ = [
    "FINE_TUNED_VAE", "GiB", "GUIDE_T4", "MiB", "measure", "GUIDE_T4_BATCH8_SLICED", "PRESET_NAMES", "PROMPT",
    "REAL_MODEL",
    "Results", "Timer", "Timing", "TutorialError", "as_dtype", "captioned_grid", "check_images",
    "cpu_has_fast_bf16", "default_model", "device_name", "get_inputs", "find_max_batch", "flush", "half_dtype",
    "image_problems", "is_out_of_memory", "load_pipeline", "load_vae", "make_generators",
    "make_image_grid", "model_name", "peak_memory", "pick_device", "recipe_dtype",
    "recipe_dtype_reason", "resolve_model", "synchronize", "time_it",
    "MPS_MAX_BATCH", "cap_batch", "catch_out_of_memory", "hide_torchvision_notice",
]
