"""reports/report.md with its figures: metrics tables, DET curves, CM score histograms, training curves,
pruned structures."""
from __future__ import annotations

import json
from pathlib import Path
from statistics import NormalDist

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hp import metrics  # noqa: E402
from hp.metrics import CM_C_FA, CM_C_MISS, CM_P_TARGET  # noqa: E402
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


def structure_figure(metas: dict[str, dict], path: Path) -> None:
    """Kept fraction per layer (of each task's own dense front end): CNN channels, attention heads, FFN units;
    removed blocks at 0."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.4))
    width = 0.8 / len(metas)
    for k, (task, meta) in enumerate(metas.items()):
        s, dense = meta["structure"], meta["frontend"]
        parts = (
            [c / d for c, d in zip(s["conv_channels"], dense["conv_dim"])],
            [len(l["heads"]) / dense["num_attention_heads"] for l in s["layers"]],
            [l["ffn_dim"] / dense["intermediate_size"] for l in s["layers"]],
        )
        for ax, values in zip(axes, parts):
            x = np.arange(len(values)) + (k - (len(metas) - 1) / 2) * width
            ax.bar(x, values, width, label=TASK_NAMES[task])
    for ax, title in zip(axes, ("CNN channels kept", "attention heads kept (0 = block removed)",
                                "FFN units kept (0 = block removed)")):
        ax.set_title(title)
        ax.set_xlabel("layer")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    _save(fig, path)


def score_histograms(scores: pd.DataFrame, threshold: float, path: Path) -> None:
    """Calibrated CM LLRs per class, one panel per split, with the Bayes decision threshold of the DCF."""
    splits = list(dict.fromkeys(scores["split"]))
    fig, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 3.4), squeeze=False)
    for ax, split in zip(axes[0], splits):
        rows = scores[scores["split"] == split]
        bins = np.histogram_bin_edges(rows["score_llr"], bins=40)
        for label, colour in (("bonafide", "tab:green"), ("spoof", "tab:red")):
            values = rows.loc[rows["label"] == label, "score_llr"]
            ax.hist(values, bins=bins, alpha=0.55, color=colour, density=True, label=f"{label} ({len(values):,})")
        ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.2f}")
        ax.set_title(f"{split}: calibrated LLR per class")
        ax.set_xlabel("LLR (natural log; bona fide positive)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _cm_row(m: dict) -> str:
    """EER (%), minDCF, actDCF, Cllr of one CM group; '–' where the group holds one class."""
    if "eer" not in m:
        return "– | – | – | –"
    return f"{_pct(m['eer'])} | {m['min_dcf']:.4f} | {m['act_dcf']:.4f} | {m['cllr']:.4f}"


def _cm_section(r: dict, corpus: str) -> list[str]:
    shown = {"mini": "mini corpus, ASVspoof5 layout", "asvspoof5": "ASVspoof5 track 1",
             "asvspoof2019la": "ASVspoof 2019 LA"}.get(corpus, corpus)
    lines = ["", f"## Anti-spoofing ({shown}; bona fide = positive)", "",
             "Scores are natural-log LLRs from a logistic regression fitted on dev (so dev's actDCF and Cllr are "
             "optimistic; eval's are not). minDCF and actDCF use P_spoof = 0.05, C_miss = 1, C_fa = 10 "
             "(ASVspoof5); *raw* is the uncalibrated logit difference.", "",
             "| split | bona fide | spoof | EER (%) | minDCF | actDCF | Cllr (bits) | raw actDCF | raw Cllr |",
             "|---|---|---|---|---|---|---|---|---|"]
    splits = [s for s in ("dev", "eval") if s in r]
    for split in splits:
        m = r[split]
        lines.append(f"| {split} | {m['bonafide']:,} | {m['spoof']:,} | {_cm_row(m)} | "
                     f"{m['raw']['act_dcf']:.4f} | {m['raw']['cllr']:.4f} |")
    lines += ["", "Per attack (all bona fide utterances of the split against one attack's spoofs):", "",
              "| split | attack | spoofs | EER (%) | minDCF | actDCF | Cllr |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {split} | {attack} | {m['spoofs']:,} | {_cm_row(m)} |"
              for split in splits for attack, m in r[split]["attacks"].items()]
    lines += ["", "Per codec (the utterances coded with it; `-`: none):", "",
              "| split | codec | bona fide | spoof | EER (%) | minDCF | actDCF | Cllr |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {split} | {codec} | {m['bonafide']:,} | {m['spoof']:,} | {_cm_row(m)} |"
              for split in splits for codec, m in r[split]["codecs"].items()]
    lines += ["", "![CM score histograms](figures/cm_scores.png)"]
    return lines


def write_report(tasks: list[str], metrics_dir: Path, plots_dir: Path, live_dir: Path, models_dir: Path,
                 scores_dir: Path, out: Path, pretrained: dict[str, str], corpora: dict[str, str]) -> None:
    """`pretrained` and `corpora`: per task, model.pretrained.<task> and prepare.<task>.corpus."""
    figures = out / "figures"
    results = {t: json.loads((metrics_dir / f"{t}.json").read_text()) for t in tasks}
    metas = {t: json.loads((models_dir / t / "compact" / "task.json").read_text()) for t in tasks}
    det_figure({t: pd.read_csv(plots_dir / t / "det.csv") for t in tasks}, figures / "det.png")
    training_figure({t: read_curves(live_dir / t) for t in tasks}, figures / "training.png")
    structure_figure(metas, figures / "structure.png")
    if "cm" in tasks:
        score_histograms(pd.read_parquet(scores_dir / "cm" / "scores.parquet"),
                         metrics.bayes_threshold(CM_P_TARGET, CM_C_MISS, CM_C_FA), figures / "cm_scores.png")

    lines = ["# hp report", ""]
    tiny = [t for t in tasks if pretrained[t] == "tiny"]
    if tiny:
        on = ", ".join(f"{t} on the {'built-in synthetic mini' if corpora[t] == 'mini' else corpora[t]} corpus"
                       for t in tiny)
        lines += [f"> **Smoke run ({on}).** The front end is `tiny`, a small WavLM-shaped model with *random* "
                  "weights. The numbers show that the pipeline works end to end; they say nothing about WavLM's "
                  "accuracy.", ""]
    lines += ["Front end: " + ", ".join(f"{t} `{pretrained[t]}`" for t in tasks) + ".", "", "## Size", "",
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
            shown = TRIAL_NAMES[name] if corpora["sv"] == "voxceleb" else f"{name} ({corpora['sv']} corpus)"
            lines += [f"| {shown} | {names[kind]} | {m['trials']:,} | {_pct(m[kind]['eer'])} | "
                      f"{m[kind]['min_dcf_0.01']:.4f} | {m[kind]['min_dcf_0.05']:.4f} |" for kind in names if kind in m]
    if "cm" in results:
        lines += _cm_section(results["cm"], corpora["cm"])
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
