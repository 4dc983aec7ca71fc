"""reports/report.md with its figures: metrics tables, DET curves, training curves, pruned structures."""
from __future__ import annotations

import json
from pathlib import Path
from statistics import NormalDist

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hp.utils.files import atomic_path  # noqa: E402

TASK_NAMES = {"sv": "Speaker verification", "cm": "Anti-spoofing (CM)"}
TRIAL_NAMES = {"O": "Vox1-O", "E": "Vox1-E", "H": "Vox1-H"}
CURVES = ("task_loss", "expected_sparsity", "deterministic_sparsity", "target_sparsity", "lambda1", "lambda2", "lr")


def _save(fig, path: Path) -> None:
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
    ax.legend()
    _save(fig, path)


def read_curves(live_dir: Path) -> pd.DataFrame:
    """The DVCLive TSVs of one training run joined on step."""
    frames = [pd.read_csv(live_dir / "plots" / "metrics" / f"{name}.tsv", sep="\t")[["step", name]]
              for name in CURVES]
    out = frames[0]
    for f in frames[1:]:
        out = out.merge(f, on="step")
    return out


def training_figure(curves: dict[str, pd.DataFrame], path: Path) -> None:
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    for task, c in curves.items():
        axes[0].plot(c["step"], c["task_loss"], label=task)
        line, = axes[1].plot(c["step"], c["expected_sparsity"], label=f"{task} expected")
        axes[1].plot(c["step"], c["deterministic_sparsity"], ":", color=line.get_color(), label=f"{task} deterministic")
        axes[1].plot(c["step"], c["target_sparsity"], "--", color=line.get_color(), label=f"{task} target")
        axes[2].plot(c["step"], c["lambda1"], label=f"{task} λ1")
        axes[2].plot(c["step"], c["lambda2"], ":", label=f"{task} λ2")
        axes[3].plot(c["step"], c["lr"], label=task)
    for ax, title in zip(axes, ("task loss", "sparsity", "Lagrange multipliers", "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


def structure_figure(structures: dict[str, dict], dense: dict, path: Path) -> None:
    """Kept fraction per layer: CNN channels, attention heads, FFN units; removed blocks at 0."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.4))
    width = 0.8 / len(structures)
    for k, (task, s) in enumerate(structures.items()):
        parts = (
            [c / d for c, d in zip(s["conv_channels"], dense["conv_dim"])],
            [len(l["heads"]) / dense["num_attention_heads"] for l in s["layers"]],
            [l["ffn_dim"] / dense["intermediate_size"] for l in s["layers"]],
        )
        for ax, values in zip(axes, parts):
            x = np.arange(len(values)) + (k - (len(structures) - 1) / 2) * width
            ax.bar(x, values, width, label=TASK_NAMES[task])
    for ax, title in zip(axes, ("CNN channels kept", "attention heads kept (0 = block removed)",
                                "FFN units kept (0 = block removed)")):
        ax.set_title(title)
        ax.set_xlabel("layer")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    _save(fig, path)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def write_report(tasks: list[str], metrics_dir: Path, plots_dir: Path, live_dir: Path, models_dir: Path,
                 out: Path, pretrained: str, sv_corpus: str) -> None:
    figures = out / "figures"
    results = {t: json.loads((metrics_dir / f"{t}.json").read_text()) for t in tasks}
    metas = {t: json.loads((models_dir / t / "compact" / "task.json").read_text()) for t in tasks}
    det_figure({t: pd.read_csv(plots_dir / t / "det.csv") for t in tasks}, figures / "det.png")
    training_figure({t: read_curves(live_dir / t) for t in tasks}, figures / "training.png")
    structure_figure({t: metas[t]["structure"] for t in tasks}, metas[tasks[0]]["frontend"], figures / "structure.png")

    lines = ["# hp report", ""]
    if pretrained == "tiny":
        lines += ["> **Smoke run.** The front end is `tiny`, a small WavLM-shaped model with *random* weights, "
                  "trained for a minute on the built-in synthetic mini corpus. The numbers show that the pipeline "
                  "works end to end; they say nothing about WavLM's accuracy.", ""]
    lines += [f"Front end: `{pretrained}`.", "", "## Size", "",
              "| task | target sparsity | achieved sparsity | params dense | params compact |", "|---|---|---|---|---|"]
    for t, r in results.items():
        lines.append(f"| {t} | {r['target_sparsity']:.3f} | {r['achieved_sparsity']:.4f} | "
                     f"{r['params_dense']:,} | {r['params_compact']:,} |")
    if "sv" in results:
        r = results["sv"]
        names = {"cosine": "cosine", "asnorm": f"AS-norm (top {r.get('asnorm_top_n')})",
                 "qmf": f"QMF ({r.get('qmf_trials')} training trials)"}
        lines += ["", "## Speaker verification", "",
                  "| trial list | scoring | trials | EER (%) | minDCF (p=0.01) | minDCF (p=0.05) |",
                  "|---|---|---|---|---|---|"]
        for name, m in r["lists"].items():
            shown = TRIAL_NAMES[name] if sv_corpus == "voxceleb" else f"{name} ({sv_corpus} corpus)"
            lines += [f"| {shown} | {names[kind]} | {m['trials']:,} | {_pct(m[kind]['eer'])} | "
                      f"{m[kind]['min_dcf_0.01']:.4f} | {m[kind]['min_dcf_0.05']:.4f} |" for kind in names if kind in m]
    if "cm" in results:
        r = results["cm"]
        lines += ["", "## Anti-spoofing (eval split; bona fide = positive)", "",
                  "| utterances | EER (%) | minDCF (P_spoof=0.05, C_fa=10) |", "|---|---|---|",
                  f"| {r['utterances']:,} | {_pct(r['eer'])} | {r['min_dcf']:.4f} |"]
    lines += ["", "## DET curves", "", "![DET curves](figures/det.png)", "",
              "## Training", "", "![training curves](figures/training.png)", "",
              "## Pruned structure", "", "![kept structure per layer](figures/structure.png)", ""]
    for t, m in metas.items():
        s = m["structure"]
        att = sum(bool(l["heads"]) for l in s["layers"])
        ffn = sum(l["ffn_dim"] > 0 for l in s["layers"])
        lines.append(f"- {t}: CNN channels {s['conv_channels']}; attention blocks kept {att}/{len(s['layers'])}, "
                     f"heads per layer {[len(l['heads']) for l in s['layers']]}; FFN blocks kept "
                     f"{ffn}/{len(s['layers'])}, units per layer {[l['ffn_dim'] for l in s['layers']]}")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
