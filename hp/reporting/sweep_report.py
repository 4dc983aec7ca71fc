"""The sweep report: sweep.md, the self-contained sweep.html, sweep.csv and the Pareto figure from the table of
experiments, each task's rows with their fronts and their comparison with the dense run."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from hp.measure import prunes
from hp.params import REPORT_TOLERANCE
from hp.reporting.document import Document
from hp.reporting.headlines import TASKS
from hp.reporting.pareto import COSTS, FRONTS, mark_fronts, pareto_figure
from hp.utils.files import atomic_path

TASK_NAMES = {"sv": "Speaker verification (SV)", "cm": "Anti-spoofing (CM)"}


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
    table = mark_fronts(table.reset_index(drop=True))
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
        paired = rows[rows["target_sparsity"].map(prunes) & np.isfinite(rows["eer_vs_dense"].astype(float))]
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
