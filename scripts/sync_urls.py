"""Write the repository address from pyproject.toml's [project.urls] into the notebooks' badge, install cells and
links to docs/ (absolute, so that they work in Colab, on GitHub and in Jupyter alike).

Usage: python scripts/sync_urls.py [--check]    (--check: exit 1 if a notebook is out of date)
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^)\s\"]+")
INSTALL = re.compile(r"git\+https://github\.com/[^\s\"']+")
DOCS = re.compile(r"https://github\.com/[\w.-]+/[\w.-]+/blob/main/docs/")


def repository() -> str:
    """The repository URL from pyproject.toml, e.g. https://github.com/OWNER/NAME."""
    url = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"].rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise SystemExit(f"[project.urls] Repository must be https://github.com/OWNER/NAME, not {url!r}")
    return url


def expected(nb_path: Path, url: str) -> tuple[str, str]:
    slug = url.removeprefix("https://github.com/")
    return (f"https://colab.research.google.com/github/{slug}/blob/main/notebooks/{nb_path.name}",
            f"git+{url}")


def sync(nb_path: Path, url: str, write: bool) -> bool:
    """Update one notebook; returns whether it was already up to date."""
    nb = nbformat.read(nb_path, as_version=4)
    badge, install = expected(nb_path, url)
    changed = False
    for cell in nb.cells:
        new = BADGE.sub(badge, cell.source)
        new = INSTALL.sub(install, new)
        new = DOCS.sub(f"{url}/blob/main/docs/", new)
        if new != cell.source:
            cell.source, changed = new, True
    if changed and write:
        nbformat.write(nb, nb_path)
    return not changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report notebooks that are out of date")
    args = parser.parse_args(argv)
    url = repository()
    stale = [p.name for p in sorted((ROOT / "notebooks").glob("*.ipynb")) if not sync(p, url, not args.check)]
    if stale:
        print(("out of date: " if args.check else "updated: ") + ", ".join(stale))
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
