"""reports/report.md and the self-contained reports/report.html: run summary, metrics tables, the cost of
compaction (dense vs compact), DET curves, score histograms, training curves and the pruned architectures."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from hp.reporting import published
from hp.evaluation import metrics  # noqa: E402
from hp.evaluation.bootstrap import MIN_SPOOFS_FOR_INTERVAL  # noqa: E402
from hp.data.manifest import shrunk_lists  # noqa: E402
from hp.data.voxceleb import TRIAL_NAMES  # noqa: E402
from hp.reporting.document import Document  # noqa: E402
from hp.evaluation.metrics import CM_C_FA, CM_C_MISS, CM_P_TARGET  # noqa: E402
from hp.params import REPORT_TOLERANCE, misses_target  # noqa: E402
from hp.training.pretraining import is_hp_pretrained, pretraining_summary  # noqa: E402
from hp.utils.files import atomic_path  # noqa: E402

TASK_NAMES = {"sv": "Speaker verification", "cm": "Anti-spoofing (CM)"}
CORPUS_NAMES = {"mini": "built-in mini corpus", "voxceleb": "VoxCeleb", "asvspoof5": "ASVspoof5 track 1",
                "asvspoof2019la": "ASVspoof 2019 LA"}
SCORE_KINDS = ("cosine", "asnorm", "qmf")
BASELINE_LTAS = "baseline: LTAS cosine (no training)"
CURVES = ("task_loss", "expected_sparsity", "deterministic_sparsity", "target_sparsity", "lambda1", "lambda2", "lr")
GATE_CURVES = CURVES[1:6]  # logged only when the front end has gates (none at target_sparsity 0: the dense run)
LATENCIES = {"torch_cpu": "PyTorch CPU", "onnxruntime_cpu": "onnxruntime CPU", "torch_cuda": "PyTorch CUDA"}


@dataclass
class TaskOutputs:
    """What the pipeline wrote for one task, read from the workspace's fixed layout."""
    scored: dict  # metrics/<task>.json
    finetune: dict  # metrics/<task>/finetune.json
    export: dict  # metrics/<task>/export.json
    model: dict  # models/<task>/compact/task.json
    data: dict  # data/<task>/manifests/summary.json
    det: pd.DataFrame
    curves: pd.DataFrame
    scores: pd.DataFrame

    @classmethod
    def read(cls, root: Path, task: str) -> TaskOutputs:
        def load(path: str) -> dict:
            return json.loads((root / path).read_text())
        return cls(load(f"metrics/{task}.json"), load(f"metrics/{task}/finetune.json"),
                   load(f"metrics/{task}/export.json"), load(f"models/{task}/compact/task.json"),
                   load(f"data/{task}/manifests/summary.json"), pd.read_csv(root / "plots" / task / "det.csv"),
                   read_curves(root / "dvclive" / task), pd.read_parquet(root / "scores" / task / "scores.parquet"))


def read_curves(live_dir: Path) -> pd.DataFrame:
    """The DVCLive TSVs of one training run joined on step; a dense run (no gates) has no GATE_CURVES."""
    tsv = live_dir / "plots" / "metrics"
    frames = [pd.read_csv(tsv / f"{name}.tsv", sep="\t")[["step", name]]
              for name in CURVES if name not in GATE_CURVES or (tsv / f"{name}.tsv").is_file()]
    out = frames[0]
    for f in frames[1:]:
        out = out.merge(f, on="step")
    return out


# ---- figures ----------------------------------------------------------------------------------------------
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


def training_figure(curves: dict[str, pd.DataFrame], path: Path) -> None:
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    for task, c in curves.items():
        axes[0].plot(c["step"], c["task_loss"], label=task)
        if all(name in c for name in GATE_CURVES):
            line, = axes[1].plot(c["step"], c["expected_sparsity"], label=f"{task} expected")
            axes[1].plot(c["step"], c["deterministic_sparsity"], ":", color=line.get_color(),
                         label=f"{task} deterministic")
            axes[1].plot(c["step"], c["target_sparsity"], "--", color=line.get_color(), label=f"{task} target")
            axes[2].plot(c["step"], c["lambda1"], label=f"{task} λ1")
            axes[2].plot(c["step"], c["lambda2"], ":", label=f"{task} λ2")
        axes[3].plot(c["step"], c["lr"], label=task)
    dense = [task for task, c in curves.items() if not all(name in c for name in GATE_CURVES)]
    for ax in axes[1:3]:  # a dense run has no gates: no sparsity, no multipliers to show
        if dense:
            ax.text(0.5, 0.5, f"{', '.join(dense)}: dense, no gates", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
    for ax, title in zip(axes, ("task loss", "sparsity", "Lagrange multipliers", "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    _save(fig, path)


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
    _save(fig, path)


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
            ax.hist(part, bins=bins, alpha=0.55, color=colour, density=True, label=f"{name} ({len(part):,})")
        ax.set_title(f"list {rows['list'].iat[0]}: {kind} scores")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


def cm_histograms(scores: pd.DataFrame, threshold: float, path: Path) -> None:
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


# ---- sections ---------------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _dcf(x: float) -> str:
    return f"{x:.4f}"


def _interval_note(doc: Document, r: dict, more: str = "") -> None:
    """What the brackets are, where the score stage bootstrapped; `more`: a sentence on what has none."""
    b = r.get("bootstrap")
    if b is None:
        return
    speakers = ", ".join(f"{name}: {n}" for name, n in b["speakers"].items())
    doc.paragraph(f"Brackets: the {b['confidence']:.0%} {b['interval']} interval over {b['resamples']:,} resamples of "
                  f"the test speakers ({speakers}; seed {b['seed']}), each trial or utterance counted once per copy "
                  "of its speakers (`hp/evaluation/bootstrap.py`). Speakers, not trials, are resampled: trials sharing a "
                  "speaker err together." + more)


def _ci(m: dict, name: str, fmt=_pct) -> str:
    """`m[name]` formatted by `fmt`, with its 95 % interval where the score stage bootstrapped it (hp.evaluation.bootstrap):
    "17.90 [15.21, 20.84]"."""
    ci = m.get(f"{name}_ci95")
    return fmt(m[name]) if ci is None else f"{fmt(m[name])} [{fmt(ci['lo'])}, {fmt(ci['hi'])}]"


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a.b.c": leaf}; lists are leaves."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(flatten(value, f"{name}.") if isinstance(value, dict) and value else {name: value})
    return out


ABSENT = object()  # a param one side does not have


def changed_params(params: dict, baseline: dict) -> list[tuple[str, object, object]]:
    """(key, baseline value, this run's value) of every param that differs; ABSENT where a side lacks it."""
    now, before = flatten(params), flatten(baseline)
    return [(key, before.get(key, ABSENT), now.get(key, ABSENT)) for key in sorted(now.keys() | before.keys())
            if now.get(key, ABSENT) != before.get(key, ABSENT)]


def _hardware(h: dict) -> str:
    where = h.get("gpu") if h.get("device", "cuda" if h.get("gpu") else "cpu") == "cuda" else None
    threads = h["torch_threads"]
    cpu = f"{h['cpu']}, {h['cores']} cores, {threads} torch thread{'s' * (threads != 1)}"
    return f"{where} ({cpu})" if where else cpu


def _data(task: str, corpus: str, out: TaskOutputs) -> str:
    """One line on the task's data: manifests' summary.json counts, training classes, the corpus's name."""
    describe = {"sv": sv_data, "cm": cm_data}[task]
    return describe(out.data, out.finetune["classes"], CORPUS_NAMES.get(corpus, corpus))


def sv_data(d: dict, classes: int, shown: str) -> str:
    lists = ", ".join(f"{name} {n:,}" for name, n in d["trials_per_list"].items())
    return (f"{shown}: {d['train']:,} training utterances of {classes} speakers; "
            f"{d['test']:,} test utterances, trials {lists}{_shrunk(d)}")


def cm_data(d: dict, classes: int, shown: str) -> str:
    return f"{shown}: train {d['train']:,}, dev {d['dev']:,}, eval {d['eval']:,} utterances{_shrunk(d)}"


def _shrunk(d: dict) -> str:
    """A mark for official lists that manifests.drop_invalid shrank: their numbers are not the official lists'."""
    lines = shrunk_lists(d.get("kept", {}))  # runs from before summary.json counted them have none
    return f" — **not the official lists** (drop_invalid): {'; '.join(lines)}" if lines else ""


def _loss(finetune: dict) -> str:
    """The last step's task loss beside the loss of a model that learned nothing (e.g. an AAM head whose
    embeddings are orthogonal to every class): a run that ends at its chance value learned nothing."""
    if finetune.get("final_task_loss") is None:
        return "not recorded"
    return f"{finetune['final_task_loss']:.3f} / {finetune['chance_task_loss']:.3f}"


def _sparsity(scored: dict) -> str:
    """Target / achieved, and a mark when the run missed its target by more than its tolerance (a run with the
    check off, sparsity_tolerance null, is held to REPORT_TOLERANCE)."""
    target, achieved = scored["target_sparsity"], scored["achieved_sparsity"]
    tolerance = scored.get("sparsity_tolerance")  # absent in runs from before the check
    text = f"{target:.3f} / {achieved:.4f} ({scored.get('target_measure', 'params')})"
    if misses_target(target, achieved, tolerance):
        held = f"{tolerance:g}" if tolerance is not None else f"{REPORT_TOLERANCE:g}; the check was off"
        text += f" — **misses the target by {achieved - target:+.4f}** (tolerance {held})"
    return text


def _measures(scored: dict) -> str:
    """The compact front end's sparsity in both measures (runs from before the MAC target recorded params only)."""
    if "macs_sparsity" not in scored:
        return f"{scored['achieved_sparsity']:.4f} / not recorded"
    return (f"{scored['params_sparsity']:.4f} / {scored['macs_sparsity']:.4f} "
            f"({scored['macs_reference_seconds']:g} s utterance)")


def _summary(doc: Document, outs: dict[str, TaskOutputs], pretrained: dict, corpora: dict, code: dict,
             changed: list | None) -> None:
    doc.heading("Run")
    tasks = list(outs)
    rows = [["front end", *(f"`{pretrained[t]}`" for t in tasks)],
            ["data", *(_data(t, corpora[t], outs[t]) for t in tasks)],
            ["sparsity (target / achieved, in target_measure)", *(_sparsity(o.scored) for o in outs.values())],
            ["front-end sparsity: params / MACs", *(_measures(o.scored) for o in outs.values())],
            ["training", *(f"{o.finetune['steps']:,} steps in {o.finetune['train_seconds']:,} s on "
                           f"{o.finetune['processes']} process{'es' * (o.finetune['processes'] != 1)}; "
                           + (f"gates frozen at step {o.finetune['gates_frozen_at_step']}"
                              if o.finetune.get("gates", True) else "dense fine-tuning, no gates")
                           for o in outs.values())],
            ["task loss: last step / chance", *(_loss(o.finetune) for o in outs.values())],
            ["training hardware", *(_hardware(o.finetune["hardware"]) if "hardware" in o.finetune else "not recorded"
                                    for o in outs.values())],
            ["timing hardware", *(_hardware(o.export["hardware"]) for o in outs.values())]]
    doc.table(["", *tasks], rows)
    git = code.get("git") or "not a git checkout"
    doc.paragraph(f"Report written by hp {code.get('hp')}, source digest `{code.get('source')}`, git `{git}`.")
    if changed is None:
        doc.paragraph("Parameters: no baseline params.yaml to compare with (not a git checkout); all are listed below.")
    elif not changed:
        doc.paragraph("Parameters: the committed defaults (params.yaml at git HEAD), none changed.")
    else:
        doc.table(["parameter", "committed (git HEAD)", "this run"],
                  [[f"`{k}`", *("(absent)" if v is ABSENT else f"`{json.dumps(v)}`" for v in (a, b))]
                   for k, a, b in changed],
                  caption="Parameters that differ from params.yaml at git HEAD when the report was written:")


def _cost(doc: Document, outs: dict[str, TaskOutputs]) -> None:
    doc.heading("Dense vs compact")
    kinds = [k for k in LATENCIES if any(k in o.export[m]["latency_ms"] for o in outs.values()
                                         for m in ("dense", "compact"))]
    rows = []
    for task, o in outs.items():
        for name in ("dense", "compact"):
            m = o.export[name]
            rows.append([task, name, f"{m['params']:,}", f"{m['params_inference']:,}", f"{m['macs'] / 1e6:,.1f}",
                         *(f"{m['latency_ms'][k]:.2f}" if k in m["latency_ms"] else "–" for k in kinds)])
    seconds = next(iter(outs.values())).export["input"]["seconds"]
    doc.table(["task", "model", "params (front end)", "params (inference)", f"MMACs ({seconds:g} s)",
               *(f"{LATENCIES[k]} (ms)" for k in kinds)], rows,
              caption=f"One {seconds:g}-second utterance, batch 1, float32; latency is the median of timed runs "
                      "(the dense model is the unpruned front end of the same shape with the same back-end). "
                      "Inference parameters: front end and back-end (CM: and the classifier that gives the "
                      "score; SV's training-only AAM head is left out). onnxruntime runs the exported compact "
                      "graph.")
    doc.bullets([f"{t}: ONNX export (`models/{t}/export/model.onnx`, {o.export['onnx']['bytes'] / 2**20:.1f} MiB) "
                 "matches PyTorch to " + ", ".join(f"{name} {p['abs']:.1e} (scaled {p['scaled']:.1e})"
                                                   for name, p in o.export["onnx"]["parity"].items())
                 + f" on random utterances of {o.export['onnx']['parity_seconds']} s" for t, o in outs.items()])


def _authors_sv(doc: Document, r: dict, frontend: dict) -> None:
    """The authors' EER per list at their pruning ratio nearest our target (Base+ or Large front ends only)."""
    anchor = published.sv_anchor(frontend, r["target_sparsity"], list(r["lists"]))
    if anchor is None:
        return
    kinds = [k for k in ("cosine", "asnorm") if all(k in m for m in r["lists"].values())]
    doc.table(["trial list", *(f"hp {k} EER (%)" for k in kinds), f"theirs at {anchor.ratio:.0%} EER (%)"],
              [[TRIAL_NAMES[name], *(_ci(m[k], "eer") for k in kinds), f"{anchor.eer[name]:.3f}"]
               for name, m in r["lists"].items() if name in anchor.eer],
              caption=f"The authors' published {anchor.front_end} result at the pruning ratio nearest this run's target "
                      f"{r['target_sparsity']:g} ({anchor.ratio:.0%} removed, {anchor.params_m:.2f}M parameters "
                      f"with MHFA; theirs, not hp's: {anchor.source}):")


def sv_section(doc: Document, r: dict, corpus: str, figures: Path, scores: pd.DataFrame, frontend: dict) -> None:
    names = {"cosine": "cosine", "asnorm": f"AS-norm (top {r.get('asnorm_top_n')})",
             "qmf": f"QMF ({r.get('qmf_trials')} training trials)"}
    doc.heading("Speaker verification")
    rows = []
    for name, m in r["lists"].items():
        shown = TRIAL_NAMES[name] if corpus == "voxceleb" else f"{name} ({CORPUS_NAMES.get(corpus, corpus)})"
        rows += [[shown, names[kind], f"{m['trials']:,}", _ci(m[kind], "eer"), _ci(m[kind], "min_dcf_0.01", _dcf),
                  _ci(m[kind], "min_dcf_0.05", _dcf)] for kind in names if kind in m]
        b = r.get("baseline_ltas", {}).get(name)
        if b is not None:
            rows.append([shown, BASELINE_LTAS, f"{m['trials']:,}", _pct(b["eer"]), f"{b['min_dcf_0.01']:.4f}",
                         f"{b['min_dcf_0.05']:.4f}"])
    doc.table(["trial list", "scoring", "trials", "EER (%)", "minDCF (p=0.01)", "minDCF (p=0.05)"], rows)
    _interval_note(doc, r)
    if r.get("baseline_ltas"):
        doc.paragraph(f"*{BASELINE_LTAS}*: a reference row, not this model: cosine of each utterance's long-term "
                      "average log power spectrum (25 ms Hann frames, 512-point FFT) minus the mean over (at most "
                      "2,000) training utterances, on the same trials (`hp.evaluation.baselines`).")
    if corpus == "voxceleb":
        _authors_sv(doc, r, frontend)
    sv_histograms(scores, figures / "sv_scores.png")
    doc.figure(figures / "sv_scores.png", "SV score histograms (first trial list)")


def _cm_row(m: dict) -> list[str]:
    """EER (%), minDCF, actDCF, Cllr of one CM group; '–' where the group holds one class."""
    if "eer" not in m:
        return ["–"] * 4
    return [_ci(m, "eer"), _ci(m, "min_dcf", _dcf), f"{m['act_dcf']:.4f}", f"{m['cllr']:.4f}"]


def _authors_cm(doc: Document, r: dict, splits: list[str]) -> None:
    """The authors' ASVspoof5 EER per split at their ratio nearest our target, and their single system."""
    anchor = published.cm_anchor(r["target_sparsity"], splits)
    rows = [[s, _ci(r[s], "eer"), _ci(r[s], "min_dcf", _dcf),
             f"{anchor.eer[s]:.3f}" if anchor is not None and s in anchor.eer else "–",
             f"{published.CM_SYSTEM[s]['eer']:.3f}", f"{published.CM_SYSTEM[s]['min_dcf']:.4f}"] for s in splits]
    ratio = published.nearest_ratio(r["target_sparsity"])
    doc.table(["split", "hp EER (%)", "hp minDCF", f"theirs at {ratio:.0%} EER (%)", "their HP system EER (%)",
               "their HP system minDCF"], rows,
              caption=f"The authors' published WavLM Base results (theirs, not hp's): EER at the pruning ratio "
                      f"nearest this run's target {r['target_sparsity']:g} ({published.CM_SOURCE}; the curve their "
                      f"plot labels 'Proposed'), and the single system of {published.CM_SYSTEM_SOURCE} (its "
                      "pruning ratio not stated):")


def cm_section(doc: Document, r: dict, corpus: str, figures: Path, scores: pd.DataFrame, frontend: dict) -> None:
    shown = {"mini": "mini corpus, ASVspoof5 layout"}.get(corpus, CORPUS_NAMES.get(corpus, corpus))
    doc.heading(f"Anti-spoofing ({shown}; bona fide = positive)")
    doc.paragraph("Scores are natural-log LLRs from a logistic regression fitted on dev (so dev's actDCF and Cllr "
                  "are optimistic; eval's are not). minDCF and actDCF use P_spoof = 0.05, C_miss = 1, C_fa = 10 "
                  "(ASVspoof5); *raw* is the uncalibrated logit difference.")
    splits = [s for s in ("dev", "eval") if s in r]
    doc.table(["split", "bona fide", "spoof", "EER (%)", "minDCF", "actDCF", "Cllr (bits)", "raw actDCF", "raw Cllr"],
              [[s, f"{r[s]['bonafide']:,}", f"{r[s]['spoof']:,}", *_cm_row(r[s]), f"{r[s]['raw']['act_dcf']:.4f}",
                f"{r[s]['raw']['cllr']:.4f}"] for s in splits])
    _interval_note(doc, r, f" An attack with fewer than {MIN_SPOOFS_FOR_INTERVAL} spoofs, and a codec, get none.")
    seen = {True: "unseen", False: "seen"}
    doc.table(["split", "attack", "spoofs", "in training", "EER (%)", "minDCF", "actDCF", "Cllr"],
              [[s, attack, f"{m['spoofs']:,}", seen.get(m.get("unseen"), "–"), *_cm_row(m)]
               for s in splits for attack, m in r[s]["attacks"].items()],
              caption="Per attack (all bona fide utterances of the split against one attack's spoofs; *unseen*: "
                      "no training utterance carries it):")
    pooled = [s for s in splits if r[s].get("unseen", {}).get("spoofs")]
    if pooled:
        doc.table(["split", "unseen attacks", "bona fide", "spoof", "EER (%)", "minDCF", "actDCF", "Cllr"],
                  [[s, ", ".join(r[s]["unseen"]["attacks"]), f"{r[s]['unseen']['bonafide']:,}",
                    f"{r[s]['unseen']['spoofs']:,}", *_cm_row(r[s]["unseen"])] for s in pooled],
                  caption="Attacks unseen in training, pooled (all bona fide utterances of the split against the "
                          "spoofs of every attack no training utterance carries):")
    elif any("unseen" in r[s] for s in splits):
        doc.paragraph("Attacks unseen in training: none; every dev and eval attack is in the training set.")
    doc.table(["split", "codec", "bona fide", "spoof", "EER (%)", "minDCF", "actDCF", "Cllr"],
              [[s, codec, f"{m['bonafide']:,}", f"{m['spoof']:,}", *_cm_row(m)]
               for s in splits for codec, m in r[s]["codecs"].items()],
              caption="Per codec (the utterances coded with it; `-`: none):")
    if corpus == "asvspoof5" and published.shape_of(frontend) == "base-plus":  # their CM front end: WavLM Base
        _authors_cm(doc, r, splits)
    cm_histograms(scores, metrics.bayes_threshold(CM_P_TARGET, CM_C_MISS, CM_C_FA), figures / "cm_scores.png")
    doc.figure(figures / "cm_scores.png", "CM score histograms")


def _structure_bullets(models: dict[str, dict]) -> list[str]:
    out = []
    for t, m in models.items():
        s = m["structure"]
        att = sum(bool(l["heads"]) for l in s["layers"])
        ffn = sum(l["ffn_dim"] > 0 for l in s["layers"])
        out.append(f"{t}: CNN channels {s['conv_channels']}; attention blocks kept {att}/{len(s['layers'])}, heads "
                   f"per layer {[len(l['heads']) for l in s['layers']]}; FFN blocks kept {ffn}/{len(s['layers'])}, "
                   f"units per layer {[l['ffn_dim'] for l in s['layers']]}")
    return out


def write_report(tasks: list[str], params: dict, root: Path, out: Path, code: dict,
                 baseline: dict | None = None) -> Document:
    """Read every task's outputs under `root` (the workspace) and write out/report.md, out/report.html and
    out/figures/. `code`: hp.version.code_version(); `baseline`: the committed params.yaml to list changes
    against (None: unknown)."""
    figures = out / "figures"
    outs = {t: TaskOutputs.read(root, t) for t in tasks}
    pretrained = {t: params["model"]["pretrained"][t] for t in tasks}
    corpora = {t: params["prepare"][t]["corpus"] for t in tasks}
    doc = Document("hp report")
    tiny = [t for t in tasks if pretrained[t] == "tiny"]
    if tiny:
        on = ", ".join(f"{t} on the {CORPUS_NAMES.get(corpora[t], corpora[t])}" for t in tiny)
        doc.note(f"**Smoke run ({on}).** The front end is `tiny`, a small WavLM-shaped model with *random* weights. "
                 "The numbers show that the pipeline works end to end; they say nothing about WavLM's accuracy.")
    own = [t for t in tasks if is_hp_pretrained(root / pretrained[t])]
    if own:
        doc.note(f"**Toy scale ({', '.join(own)}).** The front end is hp's own tiny WavLM, pretrained by masked "
                 "prediction on unlabeled synthetic speech (`python -m stages.pretrain`, metrics/pretrain.json). "
                 "The numbers show the method at work on a pretrained model; they say nothing about WavLM's accuracy. "
                 + " ".join(pretraining_summary(root / p, p) for p in sorted({pretrained[t] for t in own})))
    _summary(doc, outs, pretrained, corpora, code, None if baseline is None else changed_params(params, baseline))
    _cost(doc, outs)
    for t, o in outs.items():  # each task's own section: SV's trial lists, CM's splits and attacks
        section = {"sv": sv_section, "cm": cm_section}[t]
        section(doc, o.scored, corpora[t], figures, o.scores, o.model["frontend"])
    doc.heading("DET curves")
    det_figure({t: o.det for t, o in outs.items()}, figures / "det.png")
    doc.figure(figures / "det.png", "DET curves")
    doc.paragraph("; ".join(f"{t}: {o.scored['det']}" for t, o in outs.items() if "det" in o.scored) + ".")
    doc.heading("Training")
    training_figure({t: o.curves for t, o in outs.items()}, figures / "training.png")
    doc.figure(figures / "training.png", "training curves: task loss, expected / deterministic / target sparsity, "
                                         "Lagrange multipliers, learning rate")
    doc.heading("Pruned architecture")
    models = {t: o.model for t, o in outs.items()}
    architecture_figure(models, figures / "architecture.png")
    doc.figure(figures / "architecture.png", "kept structure per layer, " + " and ".join(tasks) + " side by side")
    doc.bullets(_structure_bullets(models))
    doc.details("All parameters of this run (params.yaml)", yaml.safe_dump(params, sort_keys=False))
    doc.write(out / "report.md", out / "report.html")
    return doc
