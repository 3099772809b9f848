"""``python -m helpers info``: one screen about this machine to paste into a bug report."""

from __future__ import annotations

import argparse
import os
import platform
import sys


def hub_reachable(timeout: float = 3.0) -> str:
    """Whether the Hugging Face Hub answers within ``timeout`` seconds (respects HF_ENDPOINT and HF_HUB_OFFLINE)."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "no (HF_HUB_OFFLINE is set)"
    url = f"{constants.ENDPOINT}/api/models/{_real_model()}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return f"yes ({constants.ENDPOINT}, HTTP {response.status})"
    except urllib.error.HTTPError as err:
        return f"answers, but HTTP {err.code} ({constants.ENDPOINT})"
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return f"no ({constants.ENDPOINT}: {reason})"


def _real_model() -> str:
    from .pipelines import REAL_MODEL

    return REAL_MODEL


def info() -> str:
    """The report: device, dtype, default model and why, library versions, hub reachability."""
    import diffusers
    import torch
    import transformers

    from .device import cpu_model, device_name, isa_line, pick_device, recipe_dtype_reason
    from .errors import TutorialError
    from .pipelines import resolve_model

    device = pick_device()
    try:
        model, why = resolve_model(None, device)
    except TutorialError as err:  # a bad TUTORIAL_MODEL: say so here rather than fail
        model, why = os.environ.get("TUTORIAL_MODEL", ""), f"INVALID: {err}"
    lines = [
        f"python        {sys.version.split()[0]} ({platform.platform()})",
        f"device        {device.type}: {device_name(device)}",
        f"cpu           {cpu_model()} ({isa_line()})",
        f"recipe dtype  {recipe_dtype_reason(device)}",
        f"default model {model} ({why})",
        f"TUTORIAL_MODEL={os.environ.get('TUTORIAL_MODEL', '')}",
        f"torch         {torch.__version__} (CUDA {torch.version.cuda or 'none'})",
        f"diffusers     {diffusers.__version__}",
        f"transformers  {transformers.__version__}",
        f"hub reachable {hub_reachable()}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__)
    parser.add_argument("command", choices=["info"], help="info: print this machine's set-up")
    parser.parse_args(argv)
    print(info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
