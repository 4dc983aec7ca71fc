"""The sweep report: every DVC experiment's error against its cost (parameters, measured CPU latency), with the
Pareto fronts, from `dvc exp show --json`.

    dvc exp run --queue -S 'target_sparsity=0,0.3,0.5,0.9' -S sparsity_tolerance=null && dvc queue start
    python -m hp.reporting.sweep                     # reports/sweep/{sweep.md,sweep.html,sweep.csv,figures/pareto.png}
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hp.evaluation.bootstrap import Bootstrap, Trials, compare  # noqa: E402
from hp.reporting.document import Document  # noqa: E402
from hp.errors import HPError  # noqa: E402
from hp.params import REPORT_TOLERANCE, misses_target  # noqa: E402
from hp.data.voxceleb import TRIAL_NAMES  # noqa: E402
from hp.evaluation.metrics import CM_COSTS, SV_COSTS  # noqa: E402
from hp.utils.files import atomic_path, read_json  # noqa: E402

NAME = "hp.reporting.sweep"
TrialsLoader = Callable[[dict, str], "Trials | None"]  # (an experiment of dvc exp show, task) -> its scored trials
TASKS = ("sv", "cm")
TASK_NAMES = {"sv": "Speaker verification (SV)", "cm": "Anti-spoofing (CM)"}
SCORING_NAMES = {"qmf": "QMF", "asnorm": "AS-norm", "cosine": "cosine"}


# ---- the point a sweep plots per task: (its metrics from metrics/<task>.json, "eer" and the minDCF named next with
# their intervals where scored with them; that minDCF's name; what was scored), and its trials for paired intervals
def sv_headline(scored: dict, corpus: str | None) -> tuple[dict, str, str]:
    """The first trial list, final scoring: QMF, else AS-norm, else cosine; minDCF at p = 0.01."""
    lists = scored.get("lists") or {}
    if not lists:
        raise KeyError("no trial lists")
    name, scores = next(iter(lists.items()))
    kind = next((k for k in SCORING_NAMES if k in scores), None)
    if kind is None:
        raise KeyError(f"a scoring ({', '.join(SCORING_NAMES)}) of list {name}")
    shown = TRIAL_NAMES.get(name, name) if corpus == "voxceleb" else f"list {name}"
    return scores[kind], "min_dcf_0.01", f"{shown}, {SCORING_NAMES[kind]}"


def cm_headline(scored: dict, corpus: str | None) -> tuple[dict, str, str]:
    """The eval split, minDCF as ASVspoof5 defines it."""
    return scored["eval"], "min_dcf", "eval"


def sv_headline_trials(table: pd.DataFrame) -> Trials:
    """The headline's trials in the score stage's scores.parquet (first list, final scoring), for a paired
    comparison (hp.evaluation.bootstrap.compare); KeyError for a table written before trials carried their speakers."""
    rows = table[table["list"] == table["list"].iat[0]]
    kind = next(k for k in SCORING_NAMES if f"score_{k}" in rows)
    return Trials((rows["enroll"] + " " + rows["test"]).to_numpy(), rows[f"score_{kind}"].to_numpy(),
                  rows["label"].to_numpy(), (rows["enroll_speaker"].to_numpy(), rows["test_speaker"].to_numpy()),
                  {"min_dcf_0.01": SV_COSTS["min_dcf_0.01"]})


def cm_headline_trials(table: pd.DataFrame) -> Trials:
    """The eval split's utterances in the score stage's scores.parquet, LLRs, for a paired comparison; KeyError for
    a table written before utterances carried their speakers."""
    rows = table[table["split"] == "eval"]
    return Trials(rows["utt"].to_numpy(), rows["score_llr"].to_numpy(), (rows["label"] == "bonafide").to_numpy(),
                  (rows["speaker"].to_numpy(),), CM_COSTS)


HEADLINES = {"sv": sv_headline, "cm": cm_headline}
HEADLINE_TRIALS = {"sv": sv_headline_trials, "cm": cm_headline_trials}
COSTS = {"params_compact": "parameters (millions, compact model)", "macs_compact": "MACs (millions, inference model)",
         "latency_ms": "CPU latency (ms, torch, batch 1)"}
SCALE = {"params_compact": 1e-6, "macs_compact": 1e-6, "latency_ms": 1.0}
FRONTS = {"params_compact": "front_params", "macs_compact": "front_macs", "latency_ms": "front_latency"}
COLUMNS = ["experiment", "kind", "rev", "task", "target_sparsity", "target_measure", "achieved_sparsity", "off_target",
           "params_sparsity", "macs_sparsity", "params_dense", "params_compact", "macs_compact", "latency_ms",
           "latency_onnx_ms", "latency_input_s", "eer", "eer_ci95_lo", "eer_ci95_hi", "min_dcf", "scored", "pretrained",
           "eer_vs_dense", "eer_vs_dense_lo", "eer_vs_dense_hi", *FRONTS.values()]


class SweepError(HPError, ValueError):
    """The experiments cannot be read or none of them is usable."""


# ---- reading --------------------------------------------------------------------------------------------
def _entries(shown: list) -> list[dict]:
    """Flatten `dvc exp show --json` to one dict per workspace, commit and experiment, in its order."""
    entries = []
    for commit in shown:
        if not isinstance(commit, dict):
            continue
        kind = "workspace" if commit.get("rev") == "workspace" else "commit"
        label = "workspace" if kind == "workspace" else str(commit.get("rev", "?"))[:7]
        entries.append({"label": label, "kind": kind, "rev": commit.get("rev"), "data": commit.get("data"),
                        "error": commit.get("error"), "state": None})
        for exp in commit.get("experiments") or []:
            if not isinstance(exp, dict):
                continue
            rev = (exp.get("revs") or [{}])[0]
            entries.append({"label": exp.get("name") or rev.get("name") or str(rev.get("rev", "?"))[:7],
                            "kind": "experiment", "rev": rev.get("rev"), "data": rev.get("data"),
                            "error": rev.get("error"), "state": (exp.get("executor") or {}).get("state")})
    return entries


def _signature(data: dict) -> str:
    """What a row's numbers come from: a workspace with the same signature as a commit is that commit."""
    return json.dumps([data.get("params"), data.get("metrics")], sort_keys=True, default=str)


def _file(data: dict, group: str, path: str) -> tuple[dict | None, str | None]:
    """One params or metrics file of an experiment: (content, None), (None, None) if absent, (None, why) if broken."""
    entry = (data.get(group) or {}).get(path)
    if entry is None:
        return None, None
    if not isinstance(entry, dict):
        return None, f"{path}: unreadable"
    if entry.get("error"):
        error = entry["error"]
        return None, f"{path}: {error.get('msg') or error.get('type') or 'unreadable'}" if isinstance(error, dict) \
            else f"{path}: {error}"
    content = entry.get("data")
    return (content, None) if isinstance(content, dict) else (None, f"{path}: not a JSON object")


def _dig(obj, *keys, default=math.nan):
    for key in keys:
        if not isinstance(obj, dict) or key not in obj:
            return default
        obj = obj[key]
    return default if obj is None else obj


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _row(entry: dict, task: str, metrics: dict, export: dict | None, params: dict) -> dict:
    point, dcf, scored = HEADLINES[task](metrics, _dig(params, "prepare", task, "corpus", default=None))
    eer, min_dcf = float(point["eer"]), float(point[dcf])
    ci = point.get("eer_ci95") or {"lo": math.nan, "hi": math.nan}  # runs scored before the intervals: none
    export = export or {}
    target = float(_dig(params, "target_sparsity", default=metrics.get("target_sparsity")))
    achieved = float(metrics["achieved_sparsity"])
    measure = metrics.get("target_measure", "params")  # runs from before the MAC target held parameters
    return {"experiment": entry["label"], "kind": entry["kind"], "rev": entry["rev"], "task": task,
            "target_sparsity": target, "target_measure": measure, "achieved_sparsity": achieved,
            "off_target": misses_target(target, achieved, metrics.get("sparsity_tolerance")),
            "params_sparsity": float(metrics.get("params_sparsity", achieved if measure == "params" else math.nan)),
            "macs_sparsity": float(metrics.get("macs_sparsity", math.nan)),  # older runs: not recorded
            "params_dense": int(metrics["params_dense"]), "params_compact": int(metrics["params_compact"]),
            "macs_compact": float(_dig(export, "compact", "macs")),
            "latency_ms": float(_dig(export, "compact", "latency_ms", "torch_cpu")),
            "latency_onnx_ms": float(_dig(export, "compact", "latency_ms", "onnxruntime_cpu")),
            "latency_input_s": float(_dig(export, "input", "seconds")), "eer": eer, "eer_ci95_lo": float(ci["lo"]),
            "eer_ci95_hi": float(ci["hi"]), "min_dcf": min_dcf,
            "scored": scored, "pretrained": str(_dig(params, "model", "pretrained", task, default=""))}


def collect(shown: list, notes: list[str] | None = None, trials: TrialsLoader | None = None) -> pd.DataFrame:
    """One row per usable experiment and task (COLUMNS), sorted by task and target, Pareto fronts marked.

    Queued, running and failed experiments, broken metrics files and metrics older than their params are skipped,
    each with a line in `notes` (and on stderr), never an exception. The workspace is kept only when its numbers
    differ from every commit's and experiment's (results not committed yet). With `trials` (reading an
    experiment's scored trials, e.g. cached_trials), each row is compared with the dense fine-tune (target 0) of its
    task on the same trials: eer_vs_dense and its paired interval (hp.evaluation.bootstrap.compare)."""
    notes = [] if notes is None else notes

    def skip(label: str, why: str) -> None:
        notes.append(f"{label}: {why}")
        print(f"{NAME}: skipped {label}: {why}", file=sys.stderr)

    usable = []
    for entry in _entries(shown):
        label, error = entry["label"], entry["error"]
        if entry["state"] not in (None, "success"):  # a queued or failed run may carry its checkout's old files
            skip(label, f"experiment {entry['state']}")
        elif error:
            skip(label, error.get("msg", str(error)) if isinstance(error, dict) else str(error))
        elif not isinstance(entry["data"], dict):
            skip(label, "no data")
        else:
            usable.append(entry)
    others = {_signature(e["data"]) for e in usable if e["kind"] != "workspace"}
    rows, sources = [], []  # sources: each row's (entry, params)
    for entry in usable:
        label, data = entry["label"], entry["data"]
        if entry["kind"] == "workspace" and _signature(data) in others:
            continue  # the workspace holds a commit's or an experiment's results: it is that row
        params, why = _file(data, "params", "params.yaml")
        if why:
            skip(label, why)
            continue
        params = params or {}
        for task in TASKS:
            metrics, why = _file(data, "metrics", f"metrics/{task}.json")
            if why or metrics is None:
                if why:
                    skip(f"{label} {task}", why)
                continue
            target, ran = _dig(params, "target_sparsity", default=None), metrics.get("target_sparsity")
            if target is not None and not (_number(target) and _number(ran) and math.isclose(target, ran)):
                skip(f"{label} {task}", f"metrics/{task}.json is for target_sparsity {ran}, params.yaml says "
                                        f"{target} (not reproduced)")
                continue
            export, why = _file(data, "metrics", f"metrics/{task}/export.json")
            if why:
                skip(f"{label} {task}", f"{why} (latency left out)")
                export = None
            try:
                rows.append(_row(entry, task, metrics, export, params))
            except (KeyError, TypeError, ValueError, StopIteration) as e:
                skip(f"{label} {task}", f"metrics/{task}.json lacks {e}")
                continue
            sources.append((entry, params))
    table = pd.DataFrame(rows, columns=COLUMNS)
    if trials is not None:
        _pair_with_dense(table, sources, trials, skip)
    table["macs_compact"] = table["macs_compact"].astype(float).round().astype("Int64")  # NA: no export.json
    table = table.sort_values(["task", "target_sparsity", "experiment"], key=_task_order, kind="stable")
    return _mark_fronts(table.reset_index(drop=True))


def _pair_with_dense(table: pd.DataFrame, sources: list[tuple[dict, dict]], trials: TrialsLoader, skip) -> None:
    """eer_vs_dense (and its interval) of each row in place: its EER minus that of its task's dense fine-tune on the
    same trials, paired over the same speaker resamples (the dense run's score.bootstrap_* settings)."""
    for task in TASKS:
        rows = table.index[table["task"] == task]
        dense = [i for i in rows if table.at[i, "target_sparsity"] == 0]
        if not dense:
            continue
        entry, params = sources[dense[0]]
        reference = trials(entry, task)
        if reference is None:
            skip(f"{entry['label']} {task}", "no scored trials in the DVC cache (no paired comparison with dense)")
            continue
        bootstrap = Bootstrap(int(_dig(params, "score", "bootstrap_resamples", default=1000)),
                              int(_dig(params, "score", "bootstrap_seed", default=0)))
        for i in rows:
            mine = reference if i == dense[0] else trials(sources[i][0], task)
            paired = None if mine is None else compare(bootstrap, mine, reference)
            if paired is None or paired["eer_ci95"] is None:
                skip(f"{table.at[i, 'experiment']} {task}", "no scored trials shared with the dense run (no paired "
                                                           "comparison)")
                continue
            table.loc[i, ["eer_vs_dense", "eer_vs_dense_lo", "eer_vs_dense_hi"]] = [paired["eer"],
                                                                                   paired["eer_ci95"]["lo"],
                                                                                   paired["eer_ci95"]["hi"]]


def error_bars(points: pd.DataFrame) -> np.ndarray:
    """[2, rows]: how far each EER's 95 % interval reaches below and above it, in EER points (matplotlib's yerr);
    NaN for runs scored without intervals."""
    eer = points["eer"].astype(float).to_numpy()
    bounds = points[["eer_ci95_lo", "eer_ci95_hi"]].astype(float).to_numpy().T
    return 100 * np.abs(bounds - eer)


def _task_order(column: pd.Series) -> pd.Series:
    """SV before CM, as everywhere else in hp; other columns sort as they are."""
    return column.map({t: i for i, t in enumerate(TASKS)}) if column.name == "task" else column


def _mark_fronts(table: pd.DataFrame) -> pd.DataFrame:
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


# ---- figure ---------------------------------------------------------------------------------------------
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


# ---- report ---------------------------------------------------------------------------------------------
def _cell(value, fmt: str) -> str:
    return "–" if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) \
        else format(value, fmt)


def _yes(value) -> str:
    return "–" if value is pd.NA or value is None else ("yes" if value else "no")


def _eer_cell(r) -> str:
    """EER (%) with its 95 % interval where the run was scored with one."""
    interval = "" if math.isnan(r.eer_ci95_lo) else f" [{100 * r.eer_ci95_lo:.2f}, {100 * r.eer_ci95_hi:.2f}]"
    return f"{100 * r.eer:.2f}{interval}"


def _vs_dense_cell(r) -> str:
    if math.isnan(r.eer_vs_dense):
        return "–"
    return f"{100 * r.eer_vs_dense:+.2f} [{100 * r.eer_vs_dense_lo:+.2f}, {100 * r.eer_vs_dense_hi:+.2f}]"


def vs_dense_sentence(r) -> str:
    """The paired comparison of one row with its task's dense fine-tune, in a sentence a reviewer can quote."""
    if r.eer_vs_dense_lo > 0:
        verdict = "higher than dense at 95 %"
    elif r.eer_vs_dense_hi < 0:
        verdict = "lower than dense at 95 %"
    else:
        verdict = "not distinguishable at 95 %"
    return (f"at {r.target_sparsity:g}, {r.task.upper()} EER {100 * r.eer_vs_dense:+.2f} points "
            f"[{100 * r.eer_vs_dense_lo:+.2f}, {100 * r.eer_vs_dense_hi:+.2f}] vs dense: {verdict}")


def write_sweep_report(table: pd.DataFrame, out: Path, notes: list[str] | None = None,
                       source: str = "`dvc exp show --json`") -> list[Path]:
    """sweep.md, sweep.html (self-contained), sweep.csv and figures/pareto.png under `out`; the paths written.
    The fronts are those of the rows given (a subset of collect's table has its own)."""
    out = Path(out)
    table = _mark_fronts(table.reset_index(drop=True))
    figure = out / "figures" / "pareto.png"
    pareto_figure(table, figure)
    with atomic_path(out / "sweep.csv") as tmp:
        table.to_csv(tmp, index=False)

    doc = Document("hp sparsity sweep")
    experiments = table["experiment"].nunique()
    commits = sorted({str(r)[:7] for r, k in zip(table["rev"], table["kind"]) if k == "commit" and r})
    built = f" (commit {', '.join(f'`{c}`' for c in commits)} and its experiments)" if commits else ""
    doc.paragraph(f"{experiments} experiment(s) from {source}{built}: one row per experiment and task, sorted by "
                  "target sparsity. A point is on the **Pareto front** when no other point of its task has both "
                  "lower-or-equal cost and lower-or-equal EER, one of them strictly lower.")
    plotted = []
    for task in TASKS:
        scored = list(dict.fromkeys(table.loc[table["task"] == task, "scored"]))
        if scored:
            plotted.append(f"{task.upper()}: " + " / ".join(f"{s} EER" for s in scored))
    doc.paragraph("EER plotted: " + "; ".join(plotted) + ". SV: the first trial list scored, final scoring (QMF if "
                  "scored, else AS-norm, else cosine), minDCF at p = 0.01; CM: eval split, minDCF as ASVspoof5 "
                  "defines it. Latency: the compact model under torch on CPU, batch 1 (metrics/<task>/export.json).")
    tiny = sorted({t for t, p in zip(table["task"], table["pretrained"]) if p == "tiny"})
    if tiny:
        doc.note(f"**Smoke run** ({', '.join(tiny)}): the `tiny` front end has random weights; the errors say "
                 "nothing about WavLM's accuracy.")
    for task in TASKS:
        rows = table[table["task"] == task]
        doc.heading(TASK_NAMES[task])
        if rows.empty:
            doc.paragraph(f"No {task.upper()} results in these experiments.")
            continue
        timed = int(np.isfinite(rows["latency_ms"].astype(float)).sum())
        if len(rows) < 2:
            doc.note("Fewer than 2 experiments: no Pareto front.")
        elif timed < 2:
            doc.note(f"Fewer than 2 experiments with a measured latency (`metrics/{task}/export.json`): no front "
                     "vs latency.")
        if timed < len(rows):  # experiments run before the export stage existed
            doc.paragraph(f"`–`: not measured (no `metrics/{task}/export.json` in that experiment).")
        header = ["experiment", "target sparsity", "params sparsity", "MAC sparsity", "params compact",
                  "MACs compact", "CPU latency (ms)", "EER (%) [95 %]", "EER vs dense (points) [95 %]", "minDCF",
                  "front (params)", "front (MACs)", "front (latency)"]
        doc.paragraph("The target is in its run's target_measure (params or macs); the two sparsities are of the front "
                      "end, MACs at the run's macs_reference_seconds (`–`: not recorded by runs before the MAC "
                      "target). MACs compact: the whole inference model on the export's utterance.")
        if rows["off_target"].any():
            doc.paragraph(f"*: the achieved sparsity misses the target by more than the run's sparsity_tolerance "
                          f"({REPORT_TOLERANCE:g} for a run whose check was off).")

        def achieved(r, measure: str) -> str:
            value = r.params_sparsity if measure == "params" else r.macs_sparsity
            return _cell(value, ".4f") + ("*" * r.off_target if r.target_measure == measure else "")

        doc.table(header, [[r.experiment, f"{r.target_sparsity:.3f} {r.target_measure}", achieved(r, "params"),
                            achieved(r, "macs"), f"{r.params_compact:,}", _cell(r.macs_compact, ",.0f"),
                            _cell(r.latency_ms, ".1f"), _eer_cell(r), _vs_dense_cell(r), f"{r.min_dcf:.4f}",
                            _yes(r.front_params),
                            _yes(r.front_macs), _yes(r.front_latency)] for r in rows.itertuples()])
        paired = rows[(rows["target_sparsity"] > 0) & np.isfinite(rows["eer_vs_dense"].astype(float))]
        if len(paired):
            doc.paragraph("Against the dense fine-tune (target 0), on the same trials and the same resamples of the "
                          "test speakers (the difference's own 95 % interval, `hp/evaluation/bootstrap.py`): "
                          + "; ".join(vs_dense_sentence(r) for r in paired.itertuples()) + ".")
        for cost, column in FRONTS.items():
            on = rows[rows[column].fillna(False).astype(bool)]
            if len(on):
                doc.paragraph(f"Front vs {COSTS[cost].split(' (')[0]}: " + ", ".join(
                    f"`{r.experiment}` ({r.target_sparsity:g}: EER {100 * r.eer:.2f} %)" for r in on.itertuples())
                    + ".")
    doc.heading("Figure")
    doc.figure(figure, "EER against parameters, MACs and CPU latency; the front as a staircase")
    if notes:
        doc.heading("Skipped")
        doc.bullets(notes)
    doc.write(out / "sweep.md", out / "sweep.html")
    return [out / "sweep.md", out / "sweep.html", out / "sweep.csv", figure]


# ---- command line ---------------------------------------------------------------------------------------
def _read_shown(path: Path) -> list:
    return read_json(path, SweepError, list, "the list `dvc exp show --json` prints")


def _dvc() -> list[str]:
    """The dvc on PATH, else the one installed beside this Python."""
    return [shutil.which("dvc")] if shutil.which("dvc") else [sys.executable, "-m", "dvc"]


def cached_trials(repo: Path, cache: Path | None = None) -> TrialsLoader:
    """Reads an experiment's scored trials from `repo`'s DVC cache (`cache`: its directory; None: as `dvc cache dir`
    says): the scores/<task> directory `dvc exp show` lists by hash (DVC 3's layout: files/md5/<2 hex>/<rest>, a
    directory as a JSON listing of its files), its scores.parquet, the task's headline trials. None for an experiment
    whose scores are not in the cache or predate trials with speakers."""
    if cache is None:
        try:
            found = subprocess.run(_dvc() + ["cache", "dir"], cwd=repo, capture_output=True, text=True)
        except OSError:
            found = None
        cache = Path(found.stdout.strip()) if found is not None and found.returncode == 0 else None
    cache = None if cache is None else Path(cache) / "files" / "md5"

    def load(entry: dict, task: str) -> Trials | None:
        out = ((entry.get("data") or {}).get("outs") or {}).get(f"scores/{task}") or {}
        digest = str(out.get("hash") or "")
        if cache is None or not digest.endswith(".dir"):
            return None
        try:
            files = {f["relpath"]: f["md5"] for f in json.loads((cache / digest[:2] / digest[2:]).read_text())}
            digest = files["scores.parquet"]
            return HEADLINE_TRIALS[task](pd.read_parquet(cache / digest[:2] / digest[2:]))
        except (OSError, KeyError, ValueError, TypeError):
            return None

    return load


def _run_dvc(repo: Path, all_commits: bool) -> list:
    """`dvc exp show --json` in `repo`."""
    args = _dvc() + ["exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    try:
        result = subprocess.run(args, cwd=repo, capture_output=True, text=True)
    except OSError as e:
        raise SweepError(f"cannot run dvc in {repo}: {e}") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise SweepError(f"`dvc exp show --json` failed in {repo}: {last}")
    try:
        shown = json.loads(result.stdout)
    except json.JSONDecodeError as e:
        raise SweepError(f"`dvc exp show --json` in {repo} printed no JSON ({e})") from None
    if not isinstance(shown, list):
        raise SweepError(f"`dvc exp show --json` in {repo} printed no list")
    return shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {NAME}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC repository (default: .)")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="read this saved `dvc exp show --json` output instead of running dvc")
    parser.add_argument("--all-commits", action="store_true",
                        help="experiments of every commit, not only of HEAD (dvc exp show -A)")
    parser.add_argument("--out", type=Path, default=Path("reports/sweep"), help="default: reports/sweep")
    args = parser.parse_args(argv)
    try:
        shown = _read_shown(args.json) if args.json else _run_dvc(args.repo, args.all_commits)
        source = f"`{args.json}`" if args.json else "`dvc exp show --json" + (" -A`" if args.all_commits else "`")
        notes: list[str] = []
        table = collect(shown, notes, cached_trials(args.repo))
        if table.empty:
            raise SweepError("no usable experiment (none has metrics/sv.json or metrics/cm.json)"
                             + ("" if args.json or args.all_commits else "; experiments of older commits need "
                                "--all-commits"))
        written = write_sweep_report(table, args.out, notes, source)
        if not args.json:  # what the report was drawn from, so that `--json` redraws it
            with atomic_path(args.out / "experiments.json") as tmp:
                tmp.write_text(json.dumps(shown, indent=1) + "\n")
            written.append(args.out / "experiments.json")
    except HPError as e:
        print(f"{NAME}: {e}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{t} {n}" for t, n in table["task"].value_counts(sort=False).items())
    print(f"{NAME}: wrote {', '.join(p.relative_to(args.out).as_posix() for p in written)} in {args.out} "
          f"({table['experiment'].nunique()} experiments; rows: {counts})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
