"""The notebooks' results: measured rows into a pandas table and a matplotlib chart, reference figures kept apart."""

from __future__ import annotations

import pandas as pd

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
        values = [r[self.metric] for r in self.rows]  # unrounded: the table's speedup is rounded
        for (step, row), value in zip(df.iloc[1:].iterrows(), values[1:], strict=True):
            x = values[0] / value
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
