"""The helpers the notebooks import: exactly these names, each tagged with the notebooks that use it.

They do the chores (choosing a model and a dtype for this device, timing, measuring memory, checking and drawing
pictures, tables); the notebooks spell out diffusers' and PyTorch's own calls. The command-line tools live apart:
``python -m helpers.bench`` (helpers/bench/), ``python -m helpers.generate`` (helpers/generate/),
``python -m helpers.shapes train|eval`` (helpers/shapes/, with the shipped weights) and ``python -m helpers info``.

Importing has one side effect: transformers' notice that torchvision is missing, printed when diffusers' pipelines
are imported, is hidden (``models.hide_torchvision_notice``); every other warning still shows.
"""

from .bench_figures import read_bench  # 01
from .checks import (  # 01-04
    avoids,
    judge_of,
    judge_table,
    judged_check,
    names_detail,
    same_layout,
    same_pictures,
    shows_prompt,
)
from .compare import pixel_difference  # 04
from .device import (  # 01-04
    cap_batch,
    device_name,
    half_dtype,
    isa_line,
    native_half,
    pick_device,
    recipe_dtype,
    recipe_dtype_reason,
    remember_half_speedup,
)
from .effects import (  # 04
    compiled_blocks,
    count_runs,
    count_tokens,
    float8_share,
    quantized_linears,
    repeated_blocks,
    weight_bytes,
)
from .explorer import Explorer, ExplorerPanel  # 04
from .frontier import cheapest_within, frontier_chart, pareto_front  # 04
from .images import captioned_grid, check_images, make_image_grid  # 01-04
from .lessons import TWEAK_AREA_RATIO, TWEAK_MOVE_PX, tweak_seed  # 03
from .memory import GiB, MiB, catch_out_of_memory, device_memory, find_max_batch, flush, time_and_memory  # 01 02 04
from .models import (  # 01-05
    choose_flux_model,  # 05
    choose_model,
    choose_vae,
    hide_torchvision_notice,
    model_kind,
)
from .prompts import for_model  # 01-04
from .realsize import (  # 01 02
    attention_tokens,
    first_level,
    first_level_inputs,
    sd15_vae,
    self_attention,
    vae_latents,
)
from .report import GUIDE_T4, GUIDE_T4_BATCH8_SLICED, Results  # 01 02
from .shapes import BACKGROUNDS, COLOURS, analyse, judge  # 03
from .shapes.evaluate import adherence, held_out_pictures, judge_pictures, judge_prompts, prompt_grid  # 03 04
from .timing import time_from_steps, time_it  # 01 03 04

hide_torchvision_notice()

__all__ = [
    "adherence", "analyse", "attention_tokens", "avoids", "BACKGROUNDS", "cap_batch", "captioned_grid",
    "catch_out_of_memory", "cheapest_within", "check_images", "choose_flux_model", "choose_model", "choose_vae",
    "COLOURS",
    "compiled_blocks", "count_runs", "count_tokens", "device_memory", "device_name", "Explorer", "ExplorerPanel",
    "find_max_batch", "first_level", "first_level_inputs", "float8_share", "flush", "for_model", "frontier_chart",
    "GiB", "GUIDE_T4", "GUIDE_T4_BATCH8_SLICED", "half_dtype", "held_out_pictures", "isa_line", "judge", "judge_of",
    "judge_pictures", "judge_prompts", "judge_table", "judged_check", "make_image_grid", "MiB", "model_kind",
    "names_detail", "native_half", "pareto_front", "pick_device", "pixel_difference", "prompt_grid",
    "quantized_linears", "read_bench", "recipe_dtype", "recipe_dtype_reason", "remember_half_speedup",
    "repeated_blocks", "Results",
    "same_layout", "same_pictures", "sd15_vae", "self_attention", "shows_prompt", "time_and_memory",
    "time_from_steps", "time_it", "TWEAK_AREA_RATIO", "TWEAK_MOVE_PX", "tweak_seed",
    "vae_latents", "weight_bytes",
]
