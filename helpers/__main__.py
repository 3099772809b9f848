"""``python -m helpers info``: one screen about this machine to paste into a bug report."""

from __future__ import annotations

import argparse
import os
import platform
import sys


def info() -> str:
    """The report: device, dtype, default model and why, library versions, hub reachability."""
    import diffusers
    import torch
    import transformers

    from .device import cpu_model, device_name, isa_line, pick_device, recipe_dtype_reason
    from .errors import TutorialError
    from .models import hub_reachable, resolve_model

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
