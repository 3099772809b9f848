"""The front page stays short, and every relative link in it, in docs/, CONTRIBUTING.md and the notebooks resolves."""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(text: str) -> list[str]:
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target) and not target.startswith("#")]


def test_the_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


@pytest.mark.parametrize("page", PAGES + NOTEBOOKS, ids=[p.name for p in PAGES + NOTEBOOKS])
def test_every_relative_link_resolves(page):
    if page.suffix == ".ipynb":
        text = "\n".join(c.source for c in nbformat.read(page, as_version=4).cells if c.cell_type == "markdown")
    else:
        text = page.read_text()
    broken = [t for t in relative_links(text) if not (page.parent / t.split("#")[0]).exists()]
    assert not broken, f"{page.name} links to missing files: {broken}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {Path(t).name for t in relative_links((ROOT / "README.md").read_text())}
    assert {p.name for p in (ROOT / "docs").glob("*.md")} <= linked
