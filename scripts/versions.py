"""The versions of the packages that move under the tutorial, for the weekly drift workflow (.github/workflows/
drift.yml): which ones the tests last passed with, pyproject.toml's floors as pins, and which package moved.

Usage:
  python scripts/versions.py show          the installed versions of the watched packages, one `name==version` a line
  python scripts/versions.py floors        pyproject.toml's floors (`>=`) as pins (`==`): pip constraints for the
                                           oldest versions the project allows
  python scripts/versions.py moved FILE    which watched packages differ from FILE (a `show` saved when the tests
                                           passed: ci/tested-versions.txt); exits 0 either way
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What the notebooks' behaviour depends on: the libraries they call, and the test runner that reads them.
WATCHED = ("torch", "diffusers", "transformers", "accelerate", "huggingface-hub", "safetensors", "numpy", "pillow",
           "pandas", "nbval", "optimum-quanto", "tomesd", "DeepCache")


def installed() -> dict[str, str]:
    """Watched package -> installed version ('missing' where it is not installed)."""
    found = {}
    for name in WATCHED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def floors() -> list[str]:
    """pyproject.toml's dependencies with a floor, as `name==floor` lines."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = []
    for requirement in project["dependencies"] + project["optional-dependencies"]["dev"]:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*>=\s*([\w.]+)", requirement.strip())
        if match:
            pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


def read(path: Path) -> dict[str, str]:
    """A `show` file: name -> version."""
    pairs = (line.split("==", 1) for line in path.read_text().splitlines() if "==" in line)
    return {name.strip(): version.strip() for name, version in pairs}


def main(argv: list[str]) -> int:
    if argv[:1] == ["show"]:
        print("\n".join(f"{name}=={version}" for name, version in installed().items()))
    elif argv[:1] == ["floors"]:
        print("\n".join(floors()))
    elif argv[:1] == ["moved"] and len(argv) == 2:
        before, now = read(Path(argv[1])), installed()
        moved = [f"{name}: {before.get(name, 'not listed')} -> {now[name]}" for name in WATCHED
                 if before.get(name) != now[name]]
        print(f"moved since the tests last passed ({argv[1]}):" if moved else "nothing moved since " + argv[1])
        print("\n".join(f"  {line}" for line in moved))
    else:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
