"""The bench's figures: its table written to bench.csv and bench.json, and read back for notebook 01."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import TutorialError


def format_table(rows: list[dict]) -> pd.DataFrame:
    """The rows as a pandas DataFrame, rounded for printing."""
    df = pd.DataFrame([{k: v for k, v in r.items() if k != "image"} for r in rows]).set_index("rung")
    return df.round({"unet s/step": 3, "it/s": 2, "vae decode s": 3, "text s": 3, "e2e s": 2, "speedup": 2,
                     "TFLOP/s": 2, "unet TFLOP/s": 2, "unet % peak": 1, "core-s/image": 1, "max diff": 1,
                     "mean diff": 2, "compile s": 1})


def write_figures(table: pd.DataFrame, out: Path, meta: dict) -> None:
    """Write ``table`` to ``out``/bench.csv, and it with ``meta`` (the machine, the model) to ``out``/bench.json."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "bench.csv")
    rows = json.loads(table.reset_index().to_json(orient="records"))
    (out / "bench.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))


def profile_table(rows: list[dict]) -> pd.DataFrame:
    """``--profile``'s rows as one line per rung and part: each kind's seconds and % of peak, and the total
    (unrounded: a toy model's calls take milliseconds)."""
    df = pd.DataFrame(rows)
    order = list(dict.fromkeys(zip(df["rung"], df["part"], strict=True)))
    table = df.pivot_table(index=["rung", "part"], columns="kind", values=["s", "% of peak"], aggfunc="first",
                           sort=False, dropna=False)
    table.columns = [f"{kind} {'s' if value == 's' else '% peak'}" for value, kind in table.columns]
    kinds = list(dict.fromkeys(df["kind"]))
    columns = [f"{kind} {what}" for kind in kinds for what in ("s", "% peak")]
    table = table.reindex(index=pd.MultiIndex.from_tuples(order, names=["rung", "part"]), columns=columns)
    table["total s"] = table[[f"{kind} s" for kind in kinds]].sum(axis=1)
    return table.astype(float)


def profile_chart(rows: list[dict], path: Path, title: str) -> None:
    """``--profile``'s seconds per kind as stacked bars, one per rung, the UNet step and the decode side by side."""
    from matplotlib.figure import Figure  # no pyplot: a file, not a window, whatever the backend

    df = pd.DataFrame(rows)
    parts = list(dict.fromkeys(df["part"]))
    rungs = list(dict.fromkeys(df["rung"]))
    fig = Figure(figsize=(6 * len(parts), 0.45 * len(rungs) + 1.6))
    axes = fig.subplots(1, len(parts), sharey=True, squeeze=False)
    for ax, part in zip(axes[0], parts, strict=True):
        seconds = df[df["part"] == part].pivot_table(index="rung", columns="kind", values="s", sort=False)
        seconds = seconds.reindex(index=[r for r in rungs if r in seconds.index][::-1],
                                  columns=list(dict.fromkeys(df["kind"])))
        seconds.plot.barh(stacked=True, ax=ax, legend=False, width=0.7)
        ax.set_title(f"{part}: seconds by kind of work")
        ax.set_xlabel("seconds")
        ax.set_ylabel("")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


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
            how = ("token merging" if "token merging" in str(row.get("rung")) else
                   "step caching (DeepCache)" if "DeepCache" in str(row.get("rung")) else "fewer steps than 20")
            lessons.append(f"beyond the guide: {how}, an approximation")
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
