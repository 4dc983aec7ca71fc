"""The speaker-verification section of the report: EER and minDCF per trial list and scoring, the LTAS baseline,
the authors' published EER beside hp's, and the score histograms."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from hp.data.voxceleb import TRIAL_NAMES
from hp.reporting import published
from hp.reporting.cells import CORPUS_NAMES, ci, dcf, interval_note, pct
from hp.reporting.document import Document
from hp.reporting.figures import sv_histograms

BASELINE_LTAS = "baseline: LTAS cosine (no training)"


def _authors_sv(doc: Document, r: dict, frontend: dict) -> None:
    """The authors' EER per list at their pruning ratio nearest our target (Base+ or Large front ends only)."""
    anchor = published.sv_anchor(frontend, r["target_sparsity"], list(r["lists"]))
    if anchor is None:
        return
    kinds = [k for k in ("cosine", "asnorm") if all(k in m for m in r["lists"].values())]
    doc.table(["trial list", *(f"hp {k} EER (%)" for k in kinds), f"theirs at {anchor.ratio:.0%} EER (%)"],
              [[TRIAL_NAMES[name], *(ci(m[k], "eer") for k in kinds), f"{anchor.eer[name]:.3f}"]
               for name, m in r["lists"].items() if name in anchor.eer],
              caption=f"The authors' published {anchor.front_end} result at the pruning ratio nearest this run's "
                      f"target {r['target_sparsity']:g} ({anchor.ratio:.0%} removed, {anchor.params_m:.2f}M parameters "
                      f"with MHFA; theirs, not hp's: {anchor.source}):")


def sv_section(doc: Document, r: dict, corpus: str, figures: Path, scores: pd.DataFrame, frontend: dict) -> None:
    names = {"cosine": "cosine", "asnorm": f"AS-norm (top {r.get('asnorm_top_n')})",
             "qmf": f"QMF ({r.get('qmf_trials')} training trials)"}
    doc.heading("Speaker verification")
    rows = []
    for name, m in r["lists"].items():
        shown = TRIAL_NAMES[name] if corpus == "voxceleb" else f"{name} ({CORPUS_NAMES.get(corpus, corpus)})"
        rows += [[shown, names[kind], f"{m['trials']:,}", ci(m[kind], "eer"), ci(m[kind], "min_dcf_0.01", dcf),
                  ci(m[kind], "min_dcf_0.05", dcf)] for kind in names if kind in m]
        b = r.get("baseline_ltas", {}).get(name)
        if b is not None:
            rows.append([shown, BASELINE_LTAS, f"{m['trials']:,}", pct(b["eer"]), f"{b['min_dcf_0.01']:.4f}",
                         f"{b['min_dcf_0.05']:.4f}"])
    doc.table(["trial list", "scoring", "trials", "EER (%)", "minDCF (p=0.01)", "minDCF (p=0.05)"], rows)
    interval_note(doc, r)
    doc.paragraph("minDCF is the detection cost at its best threshold, normalised so that 1 is what rejecting every "
                  "trial costs; at p=0.01 a false alarm weighs 99 times a miss, so a system whose non-target scores "
                  "overlap the targets' (an EER above a few %) can do no better than that and scores near 1.")
    if r.get("baseline_ltas"):
        doc.paragraph(f"*{BASELINE_LTAS}*: a reference row, not this model: cosine of each utterance's long-term "
                      "average log power spectrum (25 ms Hann frames, 512-point FFT) minus the mean over (at most "
                      "2,000) training utterances, on the same trials (`hp.evaluation.baselines`).")
    if corpus == "voxceleb":
        _authors_sv(doc, r, frontend)
    sv_histograms(scores, figures / "sv_scores.png")
    doc.figure(figures / "sv_scores.png", "SV score histograms (first trial list)")
