"""The report's matplotlib figures: DET curves, training curves, the pruned architecture and each task's score
histograms; and `save`, the PNG writer the sweep's Pareto figure shares."""
from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hp.reporting.outputs import GATE_CURVES  # noqa: E402
from hp.utils.files import atomic_path  # noqa: E402

TASK_NAMES = {"sv": "Speaker verification", "cm": "Anti-spoofing (CM)"}
SCORE_KINDS = ("cosine", "asnorm", "qmf")


def save(fig, path: Path) -> None:
    """`fig` as a PNG at `path` (written atomically), then closed."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def det_figure(dets: dict[str, pd.DataFrame], path: Path) -> None:
    """DET curves on normal-deviate axes (the convention of NIST and ASVspoof)."""
    ppf = np.vectorize(NormalDist().inv_cdf)
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8])
    lo, hi = 5e-4, 0.95
    fig, ax = plt.subplots(figsize=(5, 5))
    for task, det in dets.items():
        ax.plot(ppf(det["p_fa"].clip(lo, hi)), ppf(det["p_miss"].clip(lo, hi)), label=TASK_NAMES[task])
    ax.plot(ppf([lo, hi]), ppf([lo, hi]), ":", color="grey", lw=0.8, label="EER line")
    ax.set_xticks(ppf(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(ppf(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_xlabel("false alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.set_title("DET curves of the compacted models")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)  # the corner no DET curve reaches (low miss and low false alarm)
    save(fig, path)


def training_figure(curves: dict[str, pd.DataFrame], path: Path) -> None:
    """One row per task (their losses differ in scale: AAM-softmax over speakers vs a two-class CE): task loss,
    sparsity, Lagrange multipliers, learning rate; legends below each panel, so that no curve hides behind one."""
    tasks = list(curves)
    fig, rows = plt.subplots(len(tasks), 4, figsize=(17, 3.6 * len(tasks)), squeeze=False,
                             gridspec_kw={"wspace": 0.32, "hspace": 0.75})
    for task, axes in zip(tasks, rows):
        c = curves[task]
        axes[0].plot(c["step"], c["task_loss"], label="task loss")
        if all(name in c for name in GATE_CURVES):
            axes[1].plot(c["step"], c["expected_sparsity"], label="expected")
            axes[1].plot(c["step"], c["deterministic_sparsity"], ":", label="deterministic")
            axes[1].plot(c["step"], c["target_sparsity"], "--", color="black", lw=0.8, label="target")
            axes[2].plot(c["step"], c["lambda1"], label="λ1")
            axes[2].plot(c["step"], c["lambda2"], ":", label="λ2")
        else:  # a dense run has no gates: no sparsity, no multipliers to show
            for ax in axes[1:3]:
                ax.text(0.5, 0.5, "dense, no gates", ha="center", va="center", transform=ax.transAxes, color="grey")
        axes[3].plot(c["step"], c["lr"], label="learning rate")
        axes[3].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        for ax, title in zip(axes, ("task loss", "sparsity", "Lagrange multipliers", "learning rate")):
            ax.set_title(f"{TASK_NAMES.get(task, task)}: {title}", fontsize=9, pad=14)  # above the ×1e-3
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            if len(ax.get_legend_handles_labels()[0]) > 1:
                ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
    save(fig, path)


def architecture_figure(models: dict[str, dict], path: Path) -> None:
    """One column per task: CNN channels kept per conv layer; a layer x head grid (removed attention blocks
    marked); FFN units kept per layer (removed FFN blocks marked). Fractions are of each task's dense model."""
    fig, axes = plt.subplots(3, len(models), figsize=(6.5 * len(models), 11), squeeze=False,
                             gridspec_kw={"height_ratios": [1, 2, 2]})
    kept, gone = "tab:blue", "#e6e6e6"
    for column, (task, model) in zip(axes.T, models.items()):
        s, dense = model["structure"], model["frontend"]
        layers, heads = len(s["layers"]), dense["num_attention_heads"]
        ax = column[0]
        x = np.arange(len(s["conv_channels"]))
        ax.bar(x, dense["conv_dim"], color=gone, label="pruned")
        ax.bar(x, s["conv_channels"], color=kept, label="kept")
        for i, c in enumerate(s["conv_channels"]):
            ax.text(i, c, f"{c}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, [str(i) for i in x])
        ax.set(title=f"{TASK_NAMES[task]}: CNN channels kept", xlabel="conv layer", ylabel="channels")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax = column[1]
        grid = np.zeros((layers, heads))
        for i, layer in enumerate(s["layers"]):
            grid[i, layer["heads"]] = 1
        ax.imshow(grid, cmap=matplotlib.colors.ListedColormap([gone, kept]), vmin=0, vmax=1, aspect="auto")
        for i, layer in enumerate(s["layers"]):
            if not layer["heads"]:
                ax.text((heads - 1) / 2, i, "attention block removed", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(heads), [str(h) for h in range(heads)], fontsize=7)
        ax.set_xticks(np.arange(-0.5, heads), minor=True)  # white lines between the cells
        ax.set_yticks(np.arange(-0.5, layers), minor=True)
        ax.grid(which="minor", color="white", lw=1.5)
        ax.tick_params(which="minor", length=0)
        ax.set_yticks(range(layers), [str(i) for i in range(layers)], fontsize=7)
        ax.set(title=f"attention heads kept ({sum(len(l['heads']) for l in s['layers'])}/{layers * heads})",
               xlabel="head (original index)", ylabel="transformer layer")
        ax = column[2]
        units = [l["ffn_dim"] for l in s["layers"]]
        ax.barh(range(layers), [dense["intermediate_size"]] * layers, color=gone)
        ax.barh(range(layers), units, color=kept)
        for i, u in enumerate(units):
            ax.text(dense["intermediate_size"] * 0.01 + u, i, f"{u}" if u else "FFN block removed", va="center",
                    fontsize=7)
        ax.set_yticks(range(layers), [str(i) for i in range(layers)], fontsize=7)
        ax.invert_yaxis()  # layer 0 on top, as in the head grid
        ax.set(title=f"FFN units kept (of {dense['intermediate_size']})", xlabel="units", ylabel="transformer layer")
    fig.tight_layout()
    save(fig, path)


def sv_histograms(scores: pd.DataFrame, path: Path) -> None:
    """Target vs non-target score distributions of the first trial list, one panel per scoring."""
    rows = scores[scores["list"] == scores["list"].iat[0]]
    kinds = [k for k in SCORE_KINDS if f"score_{k}" in rows]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        values = rows[f"score_{kind}"]
        bins = np.histogram_bin_edges(values, bins=40)
        for label, name, colour in ((1, "target", "tab:green"), (0, "non-target", "tab:red")):
            part = values[rows["label"] == label]
            if len(part):  # a density of no scores is 0/0
                ax.hist(part, bins=bins, alpha=0.55, color=colour, density=True, label=f"{name} ({len(part):,})")
        ax.set_title(f"list {rows['list'].iat[0]}: {kind} scores")
        ax.set_xlabel(f"{kind} score" + (" (log-likelihood ratio)" if kind == "qmf" else ""))
        ax.set_ylabel("density")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save(fig, path)


def cm_histograms(scores: pd.DataFrame, threshold: float, path: Path) -> None:
    """Calibrated CM LLRs per class, one panel per split, with the Bayes decision threshold of the DCF."""
    splits = list(dict.fromkeys(scores["split"]))
    fig, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 3.4), squeeze=False)
    for ax, split in zip(axes[0], splits):
        rows = scores[scores["split"] == split]
        bins = np.histogram_bin_edges(rows["score_llr"], bins=40)
        for label, colour in (("bonafide", "tab:green"), ("spoof", "tab:red")):
            values = rows.loc[rows["label"] == label, "score_llr"]
            if len(values):  # a split may hold one class only; a density of no scores is 0/0
                ax.hist(values, bins=bins, alpha=0.55, color=colour, density=True, label=f"{label} ({len(values):,})")
        ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.2f}")
        ax.set_title(f"{split}: calibrated LLR per class")
        ax.set_xlabel("LLR (natural log; bona fide positive)")
        ax.set_ylabel("density")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save(fig, path)
