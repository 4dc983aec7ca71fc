"""Pareto fronts of the sweep: which points no other point of their task beats on both cost and error, and the
figure of error against each cost with the fronts drawn."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hp.reporting.figures import save  # noqa: E402
from hp.reporting.headlines import TASKS  # noqa: E402

COSTS = {"params_compact": "parameters (millions, compact model)", "macs_compact": "MACs (millions, inference model)",
         "latency_ms": "CPU latency (ms, torch, batch 1)"}
SCALE = {"params_compact": 1e-6, "macs_compact": 1e-6, "latency_ms": 1.0}
FRONTS = {"params_compact": "front_params", "macs_compact": "front_macs", "latency_ms": "front_latency"}


def mark_fronts(table: pd.DataFrame) -> pd.DataFrame:
    """front_params / front_macs / front_latency per task; <NA> where fewer than 2 points have that cost (no front)."""
    table = table.copy()
    for cost, column in FRONTS.items():
        table[column] = pd.array([pd.NA] * len(table), dtype="boolean")
        for task in TASKS:
            rows = table.index[table["task"] == task]
            values = table.loc[rows, cost].astype(float).to_numpy()
            if np.isfinite(values).sum() >= 2:
                front = pareto_front(values, table.loc[rows, "eer"].astype(float).to_numpy())
                table.loc[rows, column] = pd.array(np.where(np.isfinite(values), front, pd.NA), dtype="boolean")
    return table


def pareto_front(cost, error) -> np.ndarray:
    """True where no other point has cost <= and error <= with one of them strictly lower; NaN points are never on
    the front and dominate nothing. Equal points are all on it."""
    cost, error = np.asarray(cost, dtype=float), np.asarray(error, dtype=float)
    valid = np.isfinite(cost) & np.isfinite(error)
    c, e = cost[:, None], error[:, None]  # row i: the point tested; column j: a possible dominator
    dominated = (cost[None, :] <= c) & (error[None, :] <= e) & ((cost[None, :] < c) | (error[None, :] < e))
    dominated &= valid[None, :]
    return valid & ~dominated.any(axis=1)


def error_bars(points: pd.DataFrame) -> np.ndarray:
    """[2, rows]: how far each EER's 95 % interval reaches below and above it, in EER points (matplotlib's yerr);
    NaN for runs scored without intervals."""
    eer = points["eer"].astype(float).to_numpy()
    bounds = points[["eer_ci95_lo", "eer_ci95_hi"]].astype(float).to_numpy().T
    return 100 * np.abs(bounds - eer)


def pareto_figure(table: pd.DataFrame, path: Path) -> None:
    """2x3: rows SV / CM, columns EER vs parameters / vs MACs / vs CPU latency; every point labelled with its target,
    its 95 % interval as an error bar, the front drawn as the staircase of what is attainable."""
    fig, axes = plt.subplots(2, len(COSTS), figsize=(15, 8.5), squeeze=False)
    for r, task in enumerate(TASKS):
        rows = table[table["task"] == task]
        for c, cost in enumerate(COSTS):
            ax = axes[r][c]
            ax.set_title(f"{task.upper()}: EER vs {COSTS[cost].split(' (')[0]}", fontsize=10)
            points = rows[np.isfinite(rows[cost].astype(float))]
            if points.empty:
                why = f"no {task.upper()} results" if rows.empty else \
                    f"not measured\n(no metrics/{task}/export.json)"
                ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="grey")
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            x = SCALE[cost] * points[cost].astype(float).to_numpy()
            y = 100 * points["eer"].astype(float).to_numpy()
            spread = error_bars(points)
            if np.isfinite(spread).any():  # 95 % intervals, where the runs were scored with them
                ax.errorbar(x, y, yerr=np.nan_to_num(spread), fmt="none", ecolor="grey", elinewidth=0.8, capsize=2)
            front = points[FRONTS[cost]].fillna(False).to_numpy(dtype=bool)
            if (~front).any():
                ax.scatter(x[~front], y[~front], facecolors="none", edgecolors="tab:blue",
                           label="dominated" if front.any() else "fewer than 2 points: no front")
            if front.any():
                ax.scatter(x[front], y[front], color="tab:red", zorder=3, label="Pareto front")
                order = np.argsort(x[front], kind="stable")
                ax.step(x[front][order], y[front][order], where="post", color="tab:red", lw=1.2)
            for xi, yi, target in zip(x, y, points["target_sparsity"]):
                ax.annotate(f"{target:g}", (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize=8)
            ax.set_xlabel(COSTS[cost])
            ax.set_ylabel("EER (%)" + (f", {points['scored'].iloc[0]}" if points["scored"].nunique() == 1 else ""))
            ax.margins(0.12)  # room for the labels at the edges
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle("Sweep: error against cost (labels: target sparsity; lower left is better)")
    fig.tight_layout()
    save(fig, path)
