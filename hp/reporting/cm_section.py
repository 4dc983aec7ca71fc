"""The anti-spoofing section of the report: EER, minDCF, actDCF and Cllr per split, attack (unseen ones pooled) and
codec, the authors' published results beside hp's, and the score histograms."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from hp.evaluation import metrics
from hp.evaluation.bootstrap import MIN_SPOOFS_FOR_INTERVAL
from hp.evaluation.metrics import CM_C_FA, CM_C_MISS, CM_P_TARGET
from hp.reporting import published
from hp.reporting.cells import CORPUS_NAMES, ci, dcf, interval_note
from hp.reporting.document import Document
from hp.reporting.figures import cm_histograms


def _cm_row(m: dict) -> list[str]:
    """EER (%), minDCF, actDCF, Cllr of one CM group; '–' where the group holds one class."""
    if "eer" not in m:
        return ["–"] * 4
    return [ci(m, "eer"), ci(m, "min_dcf", dcf), f"{m['act_dcf']:.4f}", f"{m['cllr']:.4f}"]


def _authors_cm(doc: Document, r: dict, splits: list[str]) -> None:
    """The authors' ASVspoof5 EER per split at their ratio nearest our target, and their single system."""
    anchor = published.cm_anchor(r["target_sparsity"], splits)
    rows = [[s, ci(r[s], "eer"), ci(r[s], "min_dcf", dcf),
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
    interval_note(doc, r, f" An attack with fewer than {MIN_SPOOFS_FOR_INTERVAL} spoofs, and a codec, get none.")
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
