"""Collecting measured rows into a pandas table and a matplotlib chart, with reference figures kept apart."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import TutorialError

# Published figures, quoted from the guide (diffusers "Effective and efficient diffusion",
# SD 1.5 at 512x512 on a Tesla T4). Seconds per image. Reference only: never measured here.
GUIDE_T4 = {
    "float32, PNDM 50 steps": 30.0,
    "half precision, PNDM 50 steps": 11.0,
    "recipe precision, DPM-Solver++ 20 steps": 4.0,  # the recipe on a T4 is float16, as the guide
}
GUIDE_T4_BATCH8_SLICED = 3.5  # seconds per image, batch of 8 with attention slicing (the guide)
REFERENCE_SOURCE = "guide, T4"


class Results:
    """Measured rows (one per step) that turn into a DataFrame and a chart.

    ``metric`` is the main number of each row (lower is better); the first row is the
    baseline for the ``speedup`` column. Reference figures, when given, go in their own
    clearly named columns and their own chart panel.
    """

    def __init__(self, metric: str = "seconds", reference: dict | None = None,
                 reference_name: str = REFERENCE_SOURCE):
        self.metric = metric
        self.reference = reference or {}
        self.reference_name = reference_name
        self.rows: list[dict] = []

    def add(self, step: str, value: float, **extra) -> None:
        """Add one measured row: its name, its main number, and any other measured columns."""
        if any(r["step"] == step for r in self.rows):
            raise ValueError(f"Step {step!r} was already added.")
        self.rows.append({"step": step, self.metric: float(value), **extra})

    def frame(self) -> pd.DataFrame:
        """The measured rows, the speedup over the first row, then the reference columns (if any)."""
        if not self.rows:
            raise ValueError("No rows yet: add() a measurement first.")
        df = pd.DataFrame(self.rows).set_index("step")
        df["speedup"] = (df[self.metric].iloc[0] / df[self.metric]).round(2)
        df[self.metric] = df[self.metric].round(3)
        if self.reference:
            ref = pd.Series(self.reference, dtype=float).reindex(df.index)
            df[f"reference: {self.reference_name}"] = ref
            df["reference speedup"] = (ref.iloc[0] / ref).round(2)
        return df

    def describe(self) -> str:
        """One sentence per row after the first: its speedup over the first row, and the reference's."""
        df = self.frame()
        ref = "reference speedup" in df.columns
        lines = []
        for step, row in df.iloc[1:].iterrows():
            x = row["speedup"]
            notes, base = [], df.index[0]
            if abs(x - 1) < 0.05:
                text = f"{step}: about as fast as {base} here"
                notes.append(f"{x:.2f}x")
            elif x > 1:
                text = f"{step}: {x:.1f}x faster than {base} here"
            else:
                text = f"{step}: {1 / x:.1f}x slower than {base} here"
            if ref and pd.notna(row["reference speedup"]):
                notes.append(f"the reference: {row['reference speedup']:.1f}x")
            lines.append(text + (f" ({'; '.join(notes)})" if notes else "") + ".")
        return "\n".join(lines)

    def chart(self, title: str = "", unit: str = "s"):
        """A bar chart: this machine's measurements, and beside it (its own panel) the reference figures."""
        import matplotlib.pyplot as plt

        df = self.frame()
        panels = 2 if self.reference else 1
        fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 3.2), squeeze=False)
        ax = axes[0][0]
        ax.barh(df.index[::-1], df[self.metric][::-1], color="tab:blue")
        ax.set_xlabel(f"{self.metric} ({unit}), measured on this machine")
        ax.set_title(title or "Measured here")
        if self.reference:
            ref = df[f"reference: {self.reference_name}"][::-1]
            axes[0][1].barh(ref.index, ref.fillna(0), color="lightgray", hatch="//", edgecolor="gray")
            axes[0][1].set_xlabel(f"{self.metric} ({unit}), reference")
            axes[0][1].set_title(f"Reference: {self.reference_name}")
            axes[0][1].set_yticklabels([])
        fig.tight_layout()
        plt.close(fig)
        return fig


@dataclass
class BenchFigures:
    """What ``make bench`` measured at real size: the machine it ran on, and one row per rung with its lesson."""

    machine: str
    table: pd.DataFrame

    def describe(self) -> str:
        """One sentence per row after the first: a rung's speedup over the best rung before it and its lesson; a
        peer's speed against the best exact rung."""
        lines = []
        for rung, row in self.table.iloc[1:].iterrows():
            if row.get("kind") == "peer":
                lines.append(f"{rung}: {row['seconds']:.1f} s per image, {row['vs best before']:.2f}x the speed of the "
                             f"best exact rung - {row['lesson']}.")
                continue
            if row.get("kept") == "no":
                lines.append(f"{rung}: tried, {row['vs best before']:.1f}x the speed of the best rung before it "
                             f"({row['seconds']:.1f} s per image): slower, so dropped; the next rung builds "
                             "without it.")
                continue
            lines.append(f"{rung}: {row['vs best before']:.1f}x the speed of the best rung before it "
                         f"({row['seconds']:.1f} s per image) - {row['lesson']}.")
        return "\n".join(lines)


def _kept_exact(row: dict) -> bool:
    """Whether a row is an exact rung the bench kept (rows from older bench.json files have neither field)."""
    return row.get("kind", "exact") == "exact" and row.get("kept", "yes") != "no"


def _lessons(rows: list[dict]) -> list[str]:
    """What each rung adds to the one before (rungs are cumulative), named by the notebook step it supports."""
    lessons, before = [], None
    for row in rows:
        if before is None:
            lessons.append("baseline: float32, PNDM 50 steps (steps 1-2)" if row.get("dtype") == "float32"
                           and row.get("solver", "pndm") == "pndm" else "baseline")
        elif row.get("kind") == "approximate":
            lessons.append("beyond the guide: fewer steps than 20, an approximation")
        elif row.get("kind") == "peer":
            lessons.append("another engine on the same machine, for comparison (not a rung)")
        else:
            changes = []
            if row.get("dtype") != before.get("dtype"):
                changes.append("half precision (step 3)")
            if (row.get("solver"), row.get("steps")) != (before.get("solver"), before.get("steps")):
                changes.append("the scheduler and its steps (step 4)")
            lessons.append(" + ".join(changes) or "beyond the guide: same precision and steps, faster execution")
        if _kept_exact(row):
            before = row
    return lessons


def _best_before(rows: list[dict]) -> list[float | None]:
    """For each row, the seconds of the fastest kept exact rung before it (None for the first); for a peer, the
    fastest kept exact rung of all."""
    best, before = None, []
    for row in rows:
        before.append(best)
        if _kept_exact(row):
            best = float(row["e2e s"]) if best is None else min(best, float(row["e2e s"]))
    return [best if row.get("kind") == "peer" else seconds for row, seconds in zip(rows, before, strict=True)]


def read_bench(path: str | Path) -> BenchFigures | None:
    """The figures ``make bench`` wrote to ``path`` (build/bench.json), or None when there are none yet."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        rows = data["rows"]
        if not rows or not all("rung" in r and float(r["e2e s"]) > 0 for r in rows):
            raise ValueError("a rung without its name or seconds")
    except (ValueError, KeyError, TypeError) as err:
        raise TutorialError(f"{path} is not a bench.json that `make bench` wrote ({type(err).__name__}: {err}); "
                            "run `make bench` again to rewrite it.") from None
    table = pd.DataFrame(rows).set_index("rung")
    seconds = table["e2e s"].astype(float)
    best_before = pd.Series(_best_before(rows), index=table.index, dtype=float)
    frame = pd.DataFrame({
        "lesson": _lessons(rows),
        "kind": table.get("kind"),
        "dtype": table.get("dtype"),
        "scheduler": table.get("solver"),
        "steps": table.get("steps"),
        "seconds": seconds.round(2),
        "measured or estimated": table.get("e2e how"),
        "speedup": (seconds.iloc[0] / seconds).round(2),
        "vs best before": (best_before / seconds).round(2),
        "kept": table.get("kept"),
    }, index=table.index).dropna(axis=1, how="all")
    size = f"{data['height']}x{data['width']}" if "height" in data and "width" in data else "its default size"
    named = ", ".join(str(data[key]) for key in ("cpu", "device") if data.get(key))
    where = data.get("machine") or named or "an unnamed device"
    machine = f"{where}, torch {data.get('torch', '?')}: {data.get('model', 'the model')} at {size}"
    return BenchFigures(machine, frame)
