"""The speed-quality frontier: which settings no other setting beats on both time and adherence, and a plot of it."""

from __future__ import annotations

import pandas as pd


def pareto_front(table: pd.DataFrame, cost: str = "s/image", gain: str = "both %") -> pd.Series:
    """True for each row that no other row beats: none is at least as fast and as good, and strictly one of them."""
    for column in (cost, gain):
        if column not in table.columns:
            raise KeyError(f"The table has no {column!r} column (it has {', '.join(map(str, table.columns))}).")
    costs, gains = table[cost].to_numpy(), table[gain].to_numpy()
    on_front = []
    for c, g in zip(costs, gains, strict=True):
        dominated = ((costs <= c) & (gains >= g) & ((costs < c) | (gains > g))).any()
        on_front.append(not dominated)
    return pd.Series(on_front, index=table.index, name="on front")


def cheapest_within(table: pd.DataFrame, points: float = 2.0, cost: str = "s/image", gain: str = "both %") -> pd.Series:
    """The cheapest row whose ``gain`` is within ``points`` of the best row's."""
    if table.empty:
        raise ValueError("The table is empty: run the sweep first.")
    good = table[table[gain] >= table[gain].max() - points]
    return good.loc[good[cost].idxmin()]


def frontier_chart(table: pd.DataFrame, cost: str = "s/image", gain: str = "both %", by: str = "scheduler",
                   label: str = "steps", title: str = ""):
    """Adherence against seconds per image, one colour per ``by``, each point labelled, the Pareto front as a line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, group in table.groupby(by, sort=True):
        ax.scatter(group[cost], group[gain], label=name, s=28)
        for _, row in group.iterrows():
            ax.annotate(str(row[label]), (row[cost], row[gain]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = table[pareto_front(table, cost, gain)].sort_values(cost)
    ax.step(front[cost], front[gain], where="post", color="black", linewidth=1, label="Pareto front")
    ax.scatter(front[cost], front[gain], facecolors="none", edgecolors="black", s=90)
    ax.set_xscale("log")
    ax.set_xlabel(f"{cost} (log scale; labels: {label})")
    ax.set_ylabel(gain)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    plt.close(fig)
    return fig
